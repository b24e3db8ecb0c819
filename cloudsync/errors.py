"""The errors of the edge-cloud link, rooted at :class:`CloudSyncError`."""

from __future__ import annotations

from device_models import EdgetwinError


class CloudSyncError(EdgetwinError):
    """Base class of every error of the edge-cloud link."""


class MessageFormatError(CloudSyncError):
    """A frame is not a valid beehive message; ``reason`` says which part is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid message: {reason}")
        self.reason = reason


class TokenError(CloudSyncError):
    """A join token cannot be used; the message says why and what to do."""


class TokenExpiredError(TokenError):
    """The token's ``exp`` has passed (``expired_at``, Unix seconds, when known)."""

    def __init__(self, expired_at: int | None = None) -> None:
        super().__init__("the token has expired: get a new one with `edgetwin gettoken`")
        self.expired_at = expired_at


class TokenInvalidError(TokenError):
    """The token is malformed, forged (wrong key) or names another CA; ``reason`` says which."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid token: {reason}")
        self.reason = reason


class CertificateError(CloudSyncError):
    """Base class of the errors about certificates, keys and certificate requests."""


class CertificateFormatError(CertificateError):
    """``what`` (a certificate, key or CSR, or the file holding one) cannot be read: ``reason``."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: {reason}")
        self.what = what
        self.reason = reason


class NodeIdentityError(CertificateError):
    """``subject`` is not a valid node identity (``CN=system:node:<node>``, ``O=system:nodes``)."""

    def __init__(self, subject: str, reason: str) -> None:
        super().__init__(f"{subject!r} is not a node identity: {reason}")
        self.subject = subject
        self.reason = reason


class CaHashMismatchError(CertificateError):
    """The CA served at ``server`` does not hash to what the token names: pinning failed."""

    def __init__(self, server: str, expected: str, actual: str) -> None:
        super().__init__(
            f"the CA at {server} is not the one the token names: token for another cluster or a man "
            f"in the middle (token sha256 {expected}, served CA sha256 {actual})"
        )
        self.server = server
        self.expected = expected
        self.actual = actual


class CsrRejectedError(CertificateError):
    """The certificate signing request for ``node`` is refused: ``reason``."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"certificate request for node {node!r} refused: {reason}")
        self.node = node
        self.reason = reason


class CertificateRequestError(CertificateError):
    """The certificate service answered ``status`` (``None``: it could not be reached) with ``reason``."""

    def __init__(self, status: int | None, reason: str, url: str = "") -> None:
        where = f" {url}" if url else ""
        what = f"answered {status}" if status is not None else "could not be reached"
        super().__init__(f"certificate service{where} {what}: {reason}")
        self.status = status
        self.reason = reason
        self.url = url


class CertServerError(CloudSyncError):
    """The certificate service cannot serve on ``address``: ``reason``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"cannot serve certificates on {address}: {reason}")
        self.address = address
        self.reason = reason

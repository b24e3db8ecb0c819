"""The errors of the edge-cloud link, rooted at :class:`CloudSyncError`."""

from __future__ import annotations

import datetime

from device_models import EdgetwinError, ServeError


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
        when = ""
        if expired_at is not None:
            when = " at " + datetime.datetime.fromtimestamp(expired_at, datetime.UTC).isoformat()
        super().__init__(f"the token expired{when}: get a new one with `edgetwin gettoken`")
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


class CertServerError(CloudSyncError, ServeError):
    """The certificate service cannot serve on ``address``: ``reason``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("the certificate service", address, reason)


class LinkError(CloudSyncError):
    """Base class of the errors of the CloudHub / EdgeHub link and its reliable delivery."""


class LinkRefusedError(LinkError):
    """cloudcore at ``url`` (CloudHub or the stream tunnel) refused the edge's handshake with HTTP ``status``
    and ``reason``.

    A refused certificate may be cured by a rotated one, so the edge keeps retrying with backoff.
    """

    def __init__(self, url: str, status: int, reason: str) -> None:
        super().__init__(f"cloudcore {url} refused the connection ({status}): {reason}")
        self.url = url
        self.status = status
        self.reason = reason


class LinkConnectionError(LinkError):
    """cloudcore at ``url`` could not be reached, the TLS handshake failed, or the session was lost."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cloudcore {url}: {reason}")
        self.url = url
        self.reason = reason


class LinkClosedError(LinkError):
    """The link is not running (not started, or stopped): ``operation`` cannot be carried out."""

    def __init__(self, operation: str) -> None:
        super().__init__(f"the cloud link is not running: cannot {operation}")
        self.operation = operation


class OutboxError(LinkError):
    """The edge's SQLite outbox at ``path`` failed: ``reason``."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"cloud link outbox {path}: {reason}")
        self.path = path
        self.reason = reason


class HubServeError(LinkError, ServeError):
    """The CloudHub cannot serve on ``address``: ``reason`` (a port taken, an address not local)."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("CloudHub", address, reason)


class TunnelError(LinkError):
    """Base class of the errors of the stream tunnel (``kubectl logs`` / ``exec`` to edge nodes)."""


class TunnelFrameError(TunnelError):
    """A tunnel frame or the request it carries cannot be read: ``reason`` (the frame is dropped)."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid tunnel frame: {reason}")
        self.reason = reason


class TunnelUnavailableError(TunnelError):
    """Node ``node`` has no stream tunnel to the cloud (not connected, ``edgeStream`` off): ``reason``."""

    def __init__(self, node: str, reason: str) -> None:
        super().__init__(f"no stream tunnel to node {node}: {reason}")
        self.node = node
        self.reason = reason


class StreamRejectedError(TunnelError):
    """The edge refused a logs / exec session with HTTP ``code`` (404: no such container): ``reason``."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"stream refused ({code}): {reason}")
        self.code = code
        self.reason = reason


class TunnelServeError(TunnelError, ServeError):
    """The stream tunnel server cannot serve on ``address``: ``reason``."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__("the stream tunnel", address, reason)

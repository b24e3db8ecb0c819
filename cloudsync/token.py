"""Join tokens, as KubeEdge's ``keadm gettoken`` prints them: ``<hex sha256 of the CA DER>.<JWT>``.

The JWT is HS256 with an ``exp`` claim, keyed with a secret only cloudcore holds. The first part lets the
joining edge pin the CA it downloads without trusting the network; the JWT proves the edge may get a
certificate. A token is a credential: it is never logged.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta

import jwt

from cloudsync.errors import TokenExpiredError, TokenInvalidError

__all__ = ["MIN_KEY_BYTES", "TokenAuthority", "split_token"]

#: HS256 wants a key at least as long as its hash (RFC 7518 §3.2).
MIN_KEY_BYTES = 32

_ALGORITHM = "HS256"
_CA_HASH = re.compile(r"^[0-9a-f]{64}$")
_JWT_SHAPE = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$")


def split_token(token: str) -> tuple[str, str]:
    """Split a join token into ``(ca_hash, jwt)``; raises :class:`TokenInvalidError` saying what is wrong."""
    ca_hash, sep, jwt_part = token.strip().partition(".")
    if not sep or not jwt_part:
        raise TokenInvalidError(
            "expected <CA hash>.<JWT> as printed by `edgetwin gettoken` (or KubeEdge's `keadm gettoken`)"
        )
    ca_hash = ca_hash.lower()
    if not _CA_HASH.match(ca_hash):
        raise TokenInvalidError("its first part must be the CA certificate's SHA-256, 64 hex digits")
    if not _JWT_SHAPE.match(jwt_part):
        raise TokenInvalidError("its second part is not a JWT (three base64url parts joined by dots)")
    return ca_hash, jwt_part


class TokenAuthority:
    """cloudcore's side of tokens: issues them and checks the JWTs edges present.

    ``key`` is the HMAC key (at least :data:`MIN_KEY_BYTES` bytes, see
    ``cloudcore.load_or_create_token_key``); ``ca_hash`` the hex SHA-256 of the CA certificate's DER.
    """

    def __init__(self, key: bytes, ca_hash: str) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise ValueError(f"the token key must hold at least {MIN_KEY_BYTES} bytes, got {len(key)}")
        if not _CA_HASH.match(ca_hash):
            raise ValueError("ca_hash must be a hex SHA-256 (64 lower-case hex digits)")
        self._key = key
        self.ca_hash = ca_hash

    def issue(self, ttl: timedelta = timedelta(hours=24)) -> str:
        """A full join token ``<ca_hash>.<jwt>``, valid for ``ttl``."""
        if ttl <= timedelta(0):
            raise ValueError(f"a token's lifetime must be positive, got {ttl}")
        now = time.time()
        claims = {"iat": int(now), "exp": int(now + ttl.total_seconds())}
        return f"{self.ca_hash}.{jwt.encode(claims, self._key, algorithm=_ALGORITHM)}"

    def verify(self, token_jwt: str) -> None:
        """Accept a valid, unexpired JWT signed with this authority's key; raise otherwise.

        A full token (``<hash>.<jwt>``) is accepted too, and then its hash must be this CA's. Raises
        :class:`TokenExpiredError` or :class:`TokenInvalidError` (forged, malformed, another CA's).
        """
        if token_jwt.count(".") == 3:
            ca_hash, token_jwt = split_token(token_jwt)
            if ca_hash != self.ca_hash:
                raise TokenInvalidError("it names another CA: a token of another cluster")
        try:
            jwt.decode(token_jwt, self._key, algorithms=[_ALGORITHM], options={"require": ["exp"]})
        except jwt.ExpiredSignatureError as exc:
            raise TokenExpiredError(_expiry(token_jwt)) from exc
        except jwt.InvalidSignatureError as exc:
            raise TokenInvalidError(
                "its signature does not match: forged, or issued by another cluster's cloudcore"
            ) from exc
        except jwt.MissingRequiredClaimError as exc:
            raise TokenInvalidError("it has no expiry (exp claim)") from exc
        except jwt.InvalidTokenError as exc:
            raise TokenInvalidError(f"malformed JWT: {exc}") from exc


def _expiry(token_jwt: str) -> int | None:
    """The ``exp`` of a JWT whose signature was already checked (only the expiry failed)."""
    claims = jwt.decode(token_jwt, options={"verify_signature": False})
    exp = claims.get("exp")
    return exp if isinstance(exp, int) else None

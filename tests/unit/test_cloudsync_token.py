"""Join tokens: ``<CA hash>.<JWT>``, issued and verified by cloudcore; expired, forged, malformed refused."""

from __future__ import annotations

import secrets
import time
from datetime import timedelta

import jwt
import pytest

from cloudsync import TokenAuthority, TokenExpiredError, TokenInvalidError, split_token

CA_HASH = "ab" * 32
KEY = secrets.token_bytes(32)


@pytest.fixture
def tokens() -> TokenAuthority:
    return TokenAuthority(KEY, CA_HASH)


def test_issued_token_carries_the_ca_hash_and_a_jwt_that_verifies(tokens: TokenAuthority) -> None:
    token = tokens.issue(timedelta(hours=2))
    ca_hash, token_jwt = split_token(token)
    assert ca_hash == CA_HASH
    tokens.verify(token_jwt)
    claims = jwt.decode(token_jwt, options={"verify_signature": False})
    assert jwt.get_unverified_header(token_jwt)["alg"] == "HS256"
    assert 2 * 3600 - 5 <= claims["exp"] - time.time() <= 2 * 3600


def test_default_lifetime_is_a_day(tokens: TokenAuthority) -> None:
    _, token_jwt = split_token(tokens.issue())
    exp = jwt.decode(token_jwt, options={"verify_signature": False})["exp"]
    assert 24 * 3600 - 5 <= exp - time.time() <= 24 * 3600


def test_full_token_is_accepted_by_verify_when_it_names_this_ca(tokens: TokenAuthority) -> None:
    tokens.verify(tokens.issue())
    other_ca = TokenAuthority(KEY, "cd" * 32)
    with pytest.raises(TokenInvalidError, match="another CA"):
        tokens.verify(other_ca.issue())


def test_expired_token_is_refused_with_its_expiry(tokens: TokenAuthority) -> None:
    expired_at = int(time.time()) - 60
    token_jwt = jwt.encode({"exp": expired_at}, KEY, algorithm="HS256")
    with pytest.raises(TokenExpiredError) as caught:
        tokens.verify(token_jwt)
    assert caught.value.expired_at == expired_at
    assert "edgetwin gettoken" in str(caught.value)


def test_forged_token_is_refused(tokens: TokenAuthority) -> None:
    forger = TokenAuthority(secrets.token_bytes(32), CA_HASH)
    _, forged = split_token(forger.issue())
    with pytest.raises(TokenInvalidError, match="signature does not match"):
        tokens.verify(forged)


def test_token_without_expiry_or_with_another_algorithm_is_refused(tokens: TokenAuthority) -> None:
    with pytest.raises(TokenInvalidError, match="no expiry"):
        tokens.verify(jwt.encode({"sub": "x"}, KEY, algorithm="HS256"))
    with pytest.raises(TokenInvalidError, match="malformed"):
        tokens.verify(jwt.encode({"exp": int(time.time()) + 60}, KEY + b"0" * 32, algorithm="HS512"))
    with pytest.raises(TokenInvalidError, match="malformed"):
        tokens.verify("not-a-jwt")


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        ("", "expected <CA hash>.<JWT>"),
        ("abc", "expected <CA hash>.<JWT>"),
        ("xyz.a.b.c", "64 hex digits"),
        (f"{CA_HASH}.not a jwt", "not a JWT"),
    ],
)
def test_malformed_token_is_refused_with_a_clear_reason(token: str, reason: str) -> None:
    with pytest.raises(TokenInvalidError, match=reason):
        split_token(token)


def test_split_token_accepts_upper_case_hash_and_surrounding_space() -> None:
    assert split_token(f"  {CA_HASH.upper()}.a.b.c\n") == (CA_HASH, "a.b.c")


def test_short_key_or_bad_hash_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        TokenAuthority(b"short", CA_HASH)
    with pytest.raises(ValueError, match="SHA-256"):
        TokenAuthority(KEY, "nothex")

"""The certificate service over real HTTPS on loopback: CA download, join with a token, rotation, refusals."""

from __future__ import annotations

import contextlib
import secrets
import ssl
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import aiohttp
import jwt
import pytest
from cryptography import x509
from prometheus_client import CollectorRegistry

from cloudsync import (
    CertificateAuthority,
    CertificateRequestError,
    CertificateRotator,
    CertServer,
    TokenAuthority,
    client_ssl_context,
    fetch_ca,
    join,
    make_node_csr,
    node_name_of,
    request_node_certificate,
    split_token,
    write_credentials,
)
from cloudsync.pki import load_certificate
from edgetwin.testing import free_port, wait_for

NODE = "edge-1"


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


@pytest.fixture
def token_key() -> bytes:
    return secrets.token_bytes(32)


@pytest.fixture
def tokens(ca: CertificateAuthority, token_key: bytes) -> TokenAuthority:
    return TokenAuthority(token_key, ca.hash())


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@contextlib.asynccontextmanager
async def _running(
    ca: CertificateAuthority, tokens: TokenAuthority, registry: CollectorRegistry, cert_days: float
) -> AsyncIterator[CertServer]:
    cert_pem, key_pem = ca.issue_server_cert(["127.0.0.1"])
    server = CertServer(
        ca,
        tokens,
        host="127.0.0.1",
        port=free_port(),
        server_cert_pem=cert_pem,
        server_key_pem=key_pem,
        registry=registry,
        cert_days=cert_days,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def server(
    ca: CertificateAuthority, tokens: TokenAuthority, registry: CollectorRegistry
) -> AsyncIterator[CertServer]:
    async with _running(ca, tokens, registry, cert_days=30) as running:
        yield running


def _metric(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def _edge_cert(
    server: CertServer, ca: CertificateAuthority, headers: dict[str, str]
) -> tuple[int, str]:
    """A raw request to /edge.crt with a fresh CSR: (status, body text)."""
    _, csr_pem = make_node_csr(NODE)
    context = client_ssl_context(ca.cert_pem(), None, None)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/edge.crt", data=csr_pem, ssl=context, headers=headers) as response,
    ):
        return response.status, await response.text(errors="replace")


async def test_ca_is_served_as_der_and_pinned_by_hash(server: CertServer, ca: CertificateAuthority) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/ca.crt", ssl=False) as response,
    ):
        assert response.status == 200
        assert response.content_type == "application/pkix-cert"
        assert await response.read() == ca.cert_der()
    assert await fetch_ca(server.url, ca.hash()) == ca.cert_pem()


async def test_token_gets_a_node_certificate_signed_by_the_ca(
    server: CertServer, ca: CertificateAuthority, tokens: TokenAuthority, registry: CollectorRegistry
) -> None:
    credentials = await join("127.0.0.1", tokens.issue(), NODE, cert_port=server.port)
    cert = credentials.certificate
    cert.verify_directly_issued_by(ca.cert)
    assert node_name_of(cert) == NODE
    assert cert.subject.rfc4514_string() == f"CN=system:node:{NODE},O=system:nodes"
    assert credentials.ca_pem == ca.cert_pem()
    assert _metric(registry, "edgetwin_certserver_certificates_issued_total", auth="token") == 1


async def test_expired_token_is_refused_with_401(
    server: CertServer, ca: CertificateAuthority, token_key: bytes, registry: CollectorRegistry
) -> None:
    # Signed with the server's own key: only the expiry is wrong.
    expired = jwt.encode({"exp": int(time.time()) - 10}, token_key, algorithm="HS256")
    with pytest.raises(CertificateRequestError) as caught:
        await request_node_certificate(server.url, ca.cert_pem(), NODE, token_jwt=expired)
    assert caught.value.status == 401
    assert "token expired" in caught.value.reason
    assert "edgetwin gettoken" in caught.value.reason
    assert _metric(registry, "edgetwin_certserver_refusals_total", reason="expired_token") == 1


async def test_forged_token_is_refused_with_401(
    server: CertServer, ca: CertificateAuthority, registry: CollectorRegistry
) -> None:
    forger = TokenAuthority(secrets.token_bytes(32), ca.hash())
    with pytest.raises(CertificateRequestError) as caught:
        await join("127.0.0.1", forger.issue(), NODE, cert_port=server.port)
    assert caught.value.status == 401
    assert "signature does not match" in caught.value.reason
    assert _metric(registry, "edgetwin_certserver_refusals_total", reason="invalid_token") == 1


async def test_missing_token_is_refused_with_401(
    server: CertServer, ca: CertificateAuthority, registry: CollectorRegistry
) -> None:
    status, body = await _edge_cert(server, ca, {"NodeName": NODE})
    assert status == 401
    assert "Authorization: Bearer" in body
    assert _metric(registry, "edgetwin_certserver_refusals_total", reason="missing_token") == 1


async def test_missing_node_name_and_csr_of_another_node_are_refused(
    server: CertServer, ca: CertificateAuthority, tokens: TokenAuthority
) -> None:
    bearer = {"Authorization": f"Bearer {split_token(tokens.issue())[1]}"}
    status, body = await _edge_cert(server, ca, bearer)
    assert (status, body) == (400, "the NodeName header is missing")
    status, body = await _edge_cert(server, ca, {**bearer, "NodeName": "edge-2"})
    assert status == 400
    assert "'edge-1'" in body
    assert "'edge-2'" in body


def _write_node_cert(ca: CertificateAuthority, node: str, directory: Path) -> tuple[Path, Path]:
    cert_pem, key_pem = ca.issue_node_cert(node)
    cert_file, key_file = directory / f"{node}.crt", directory / f"{node}.key"
    write_credentials(cert_file, key_file, cert_pem, key_pem)
    return cert_file, key_file


async def test_rotation_with_the_current_certificate(
    server: CertServer, ca: CertificateAuthority, registry: CollectorRegistry, tmp_path: Path
) -> None:
    current = _write_node_cert(ca, NODE, tmp_path)
    cert_pem, _ = await request_node_certificate(server.url, ca.cert_pem(), NODE, current_cert=current)
    renewed = load_certificate(cert_pem)
    assert node_name_of(renewed) == NODE
    assert renewed.serial_number != load_certificate(current[0].read_bytes()).serial_number
    assert _metric(registry, "edgetwin_certserver_certificates_issued_total", auth="certificate") == 1


async def test_certificate_of_node_a_cannot_renew_node_b(
    server: CertServer, ca: CertificateAuthority, registry: CollectorRegistry, tmp_path: Path
) -> None:
    node_a = _write_node_cert(ca, "edge-a", tmp_path)
    with pytest.raises(CertificateRequestError) as caught:
        await request_node_certificate(server.url, ca.cert_pem(), "edge-b", current_cert=node_a)
    assert caught.value.status == 403
    assert "node 'edge-a'" in caught.value.reason
    assert _metric(registry, "edgetwin_certserver_refusals_total", reason="node_mismatch") == 1


async def test_certificate_of_another_ca_fails_the_handshake(
    server: CertServer, ca: CertificateAuthority, tmp_path: Path
) -> None:
    foreign = _write_node_cert(CertificateAuthority.create(), NODE, tmp_path)
    with pytest.raises(CertificateRequestError) as caught:
        await request_node_certificate(server.url, ca.cert_pem(), NODE, current_cert=foreign)
    assert caught.value.status is None


async def test_client_refuses_a_server_it_cannot_verify(server: CertServer, tokens: TokenAuthority) -> None:
    stranger = CertificateAuthority.create()
    with pytest.raises(CertificateRequestError, match="does not verify against the pinned CA") as caught:
        await request_node_certificate(
            server.url, stranger.cert_pem(), NODE, token_jwt=split_token(tokens.issue())[1]
        )
    assert isinstance(caught.value.__cause__, aiohttp.ClientConnectorCertificateError)
    assert isinstance(caught.value.__cause__.certificate_error, ssl.SSLCertVerificationError)


async def test_rotator_renews_before_expiry_and_reports(
    ca: CertificateAuthority, tokens: TokenAuthority, registry: CollectorRegistry, tmp_path: Path
) -> None:
    lifetime = timedelta(seconds=4)
    async with _running(ca, tokens, registry, cert_days=lifetime / timedelta(days=1)) as server:
        credentials = await join("127.0.0.1", tokens.issue(), NODE, cert_port=server.port)
        ca_file, cert_file, key_file = tmp_path / "ca.crt", tmp_path / "server.crt", tmp_path / "server.key"
        write_credentials(
            cert_file,
            key_file,
            credentials.cert_pem,
            credentials.key_pem,
            ca_file=ca_file,
            ca_pem=credentials.ca_pem,
        )
        first = credentials.certificate
        rotations: list[x509.Certificate] = []

        async def rotated() -> None:
            rotations.append(load_certificate(cert_file.read_bytes()))

        edge_registry = CollectorRegistry()
        rotator = CertificateRotator(
            server.url,
            ca_file,
            cert_file,
            key_file,
            NODE,
            on_rotated=rotated,
            renew_fraction=0.5,
            jitter=0.0,
            registry=edge_registry,
        )
        await rotator.start()
        try:
            assert rotator.next_rotation is not None
            assert rotator.next_rotation < first.not_valid_after_utc
            await wait_for(lambda: rotations, timeout=15, what="a certificate rotation")
        finally:
            await rotator.stop()

        renewed = rotations[0]
        assert renewed.serial_number != first.serial_number
        assert renewed.not_valid_after_utc > first.not_valid_after_utc
        renewed.verify_directly_issued_by(ca.cert)
        # The new key on disk belongs to the new certificate: TLS client auth with the pair works.
        client_ssl_context(ca.cert_pem(), cert_file.read_bytes(), key_file.read_bytes())
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert _metric(registry, "edgetwin_certserver_certificates_issued_total", auth="certificate") >= 1
        assert _metric(edge_registry, "edgetwin_certificate_rotations_total", result="success") >= 1
        assert _metric(edge_registry, "edgetwin_certificate_expiry_timestamp_seconds") == (
            renewed.not_valid_after_utc.timestamp()
        )

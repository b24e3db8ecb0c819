"""cloudcore's CA: creation and loading, node CSRs signed or refused, serving certificates, TLS contexts."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import ipaddress
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudsync import (
    CertificateAuthority,
    CertificateFormatError,
    CsrRejectedError,
    NodeIdentityError,
    client_ssl_context,
    make_node_csr,
    node_name_of,
    server_ssl_context,
)
from cloudsync.pki import load_certificate, load_private_key


@pytest.fixture(scope="module")
def ca() -> CertificateAuthority:
    return CertificateAuthority.create()


def test_new_ca_is_a_p256_ca_and_its_hash_is_the_sha256_of_its_der(ca: CertificateAuthority) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "KubeEdge"
    assert ca.hash() == hashlib.sha256(ca.cert_der()).hexdigest()
    assert ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc > datetime.timedelta(days=3649)


def test_ca_loads_back_from_pem_and_from_der(ca: CertificateAuthority) -> None:
    assert CertificateAuthority.from_pem(ca.cert_pem(), ca.key_pem()).hash() == ca.hash()
    # KubeEdge's casecret holds DER: certificate and SEC1 key.
    from_der = CertificateAuthority.from_pem(ca.cert_der(), ca.key_der())
    assert from_der.hash() == ca.hash()
    assert from_der.key_pem() == ca.key_pem()


def test_ca_refuses_a_key_of_another_certificate_and_a_non_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create()
    with pytest.raises(CertificateFormatError, match="not the key of the CA certificate"):
        CertificateAuthority.from_pem(ca.cert_pem(), other.key_pem())
    leaf_pem, leaf_key = ca.issue_node_cert("edge-1")
    with pytest.raises(CertificateFormatError, match="not a CA"):
        CertificateAuthority.from_pem(leaf_pem, leaf_key)
    with pytest.raises(CertificateFormatError, match=r"not an X\.509 certificate"):
        CertificateAuthority.from_pem(b"garbage", ca.key_pem())


def test_node_csr_is_signed_for_the_node(ca: CertificateAuthority) -> None:
    key_pem, csr_pem = make_node_csr("edge-1")
    cert = ca.sign_node_csr(csr_pem, "edge-1", days=30)

    cert.verify_directly_issued_by(ca.cert)
    assert cert.subject.rfc4514_string() == "CN=system:node:edge-1,O=system:nodes"
    assert node_name_of(cert) == "edge-1"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(usages) == {ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH}
    assert not cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    lifetime = cert.not_valid_after_utc - datetime.datetime.now(datetime.UTC)
    assert datetime.timedelta(days=29) < lifetime <= datetime.timedelta(days=30)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert cert.public_key().public_bytes(serialization.Encoding.DER, spki) == load_private_key(
        key_pem
    ).public_key().public_bytes(serialization.Encoding.DER, spki)


def test_csr_in_der_is_signed_too(ca: CertificateAuthority) -> None:
    _, csr_pem = make_node_csr("edge-1")
    der = x509.load_pem_x509_csr(csr_pem).public_bytes(serialization.Encoding.DER)
    assert node_name_of(ca.sign_node_csr(der, "edge-1")) == "edge-1"


def test_csr_of_another_node_is_refused(ca: CertificateAuthority) -> None:
    _, csr_pem = make_node_csr("edge-a")
    with pytest.raises(CsrRejectedError) as caught:
        ca.sign_node_csr(csr_pem, "edge-b")
    assert caught.value.node == "edge-b"
    assert "'edge-a'" in caught.value.reason


def _csr(subject: x509.Name) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM)


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        (x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubeedge.io")]), "system:node:<node>"),
        (
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "system:masters"),
                    x509.NameAttribute(NameOID.COMMON_NAME, "system:node:edge-1"),
                ]
            ),
            "organization must be system:nodes",
        ),
    ],
)
def test_csr_without_a_node_identity_is_refused(
    ca: CertificateAuthority, subject: x509.Name, reason: str
) -> None:
    with pytest.raises(CsrRejectedError, match=reason):
        ca.sign_node_csr(_csr(subject), "edge-1")


def test_garbage_csr_is_refused(ca: CertificateAuthority) -> None:
    with pytest.raises(CsrRejectedError, match="not a certificate signing request"):
        ca.sign_node_csr(b"\x30\x03\x02\x01\x00", "edge-1")


def test_node_name_of_refuses_other_certificates(ca: CertificateAuthority) -> None:
    server_pem, _ = ca.issue_server_cert(["127.0.0.1"])
    with pytest.raises(NodeIdentityError, match="system:node:<node>"):
        node_name_of(load_certificate(server_pem))
    with pytest.raises(NodeIdentityError, match="lower-case DNS subdomain"):
        make_node_csr("Edge_1")


def test_server_certificate_names_ips_and_dns_names(ca: CertificateAuthority) -> None:
    cert_pem, key_pem = ca.issue_server_cert(["127.0.0.1", "::1", "cloudcore.example"], days=10)
    cert = load_certificate(cert_pem)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    assert names.get_values_for_type(x509.DNSName) == ["cloudcore.example"]
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    load_private_key(key_pem)


def test_lifetime_is_capped_by_the_ca() -> None:
    short_ca = CertificateAuthority.create(days=2)
    cert_pem, _ = short_ca.issue_node_cert("edge-1", days=365)
    assert load_certificate(cert_pem).not_valid_after_utc <= short_ca.cert.not_valid_after_utc


async def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str | None:
    """Connect over loopback with mutual TLS; the node name the server saw, or None without a certificate."""
    seen: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        seen.set_result(node_name_of(x509.load_der_x509_certificate(der)) if der else None)
        writer.close()

    listener = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=server)
    try:
        port = listener.sockets[0].getsockname()[1]
        _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
        result = await asyncio.wait_for(seen, 5)
        writer.close()
        return result
    finally:
        listener.close()
        await listener.wait_closed()


async def test_mutual_tls_contexts_authenticate_the_node(ca: CertificateAuthority) -> None:
    server_cert, server_key = ca.issue_server_cert(["127.0.0.1"])
    node_cert, node_key = ca.issue_node_cert("edge-1")
    # A DER CA is accepted as well as PEM.
    server = server_ssl_context(ca.cert_der(), server_cert, server_key, require_client_cert=False)
    assert await _handshake(server, client_ssl_context(ca.cert_pem(), node_cert, node_key)) == "edge-1"
    assert await _handshake(server, client_ssl_context(ca.cert_pem(), None, None)) is None


async def test_client_refuses_a_server_of_another_ca(ca: CertificateAuthority) -> None:
    other = CertificateAuthority.create()
    server_cert, server_key = other.issue_server_cert(["127.0.0.1"])
    server = server_ssl_context(other.cert_pem(), server_cert, server_key, require_client_cert=False)
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server, client_ssl_context(ca.cert_pem(), None, None))

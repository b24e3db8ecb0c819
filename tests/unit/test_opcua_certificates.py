"""The mapper's own OPC-UA client certificate: made on first use, then kept; usable by OPC-UA servers."""

from __future__ import annotations

import datetime
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from mappers.opcua import (
    CertificateError,
    certificate_application_uri,
    default_cert_dir,
    ensure_client_certificate,
    generate_certificate,
    load_certificate,
)
from mappers.opcua.certificates import CERTIFICATE_FILE, PRIVATE_KEY_FILE, user_certificate


def test_made_on_first_use_with_what_opcua_servers_check(tmp_path: Path) -> None:
    made = ensure_client_certificate(tmp_path / "certs", "urn:gateway-7:edgetwin:opcua-mapper")

    assert made.certificate == tmp_path / "certs" / CERTIFICATE_FILE
    assert made.private_key == tmp_path / "certs" / PRIVATE_KEY_FILE
    assert made.application_uri == "urn:gateway-7:edgetwin:opcua-mapper"
    assert stat.S_IMODE(made.private_key.stat().st_mode) == 0o600
    cert = x509.load_der_x509_certificate(made.certificate.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.UniformResourceIdentifier) == [made.application_uri]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert (
        usage.digital_signature,
        usage.content_commitment,
        usage.key_encipherment,
        usage.data_encipherment,
    ) == (
        True,
        True,
        True,
        True,
    )
    assert (
        ExtendedKeyUsageOID.CLIENT_AUTH
        in cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    )
    assert cert.public_key().key_size == 2048  # type: ignore[union-attr]  # an RSA key, as OPC-UA's policies need
    key = serialization.load_pem_private_key(made.private_key.read_bytes(), password=None)
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()  # type: ignore[union-attr]


def test_kept_on_later_runs(tmp_path: Path) -> None:
    first = ensure_client_certificate(tmp_path, "urn:first")
    content = first.certificate.read_bytes()

    again = ensure_client_certificate(tmp_path, "urn:other")

    assert again == first  # same files, and the URI of the certificate, not the one asked for
    assert again.certificate.read_bytes() == content


def test_an_expired_certificate_is_replaced(tmp_path: Path) -> None:
    made = ensure_client_certificate(tmp_path, "urn:x")
    key = serialization.load_pem_private_key(made.private_key.read_bytes(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    expired = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime.datetime(2000, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2001, 1, 1, tzinfo=datetime.UTC))
        .sign(key, hashes.SHA256())
    )
    made.certificate.write_bytes(expired.public_bytes(serialization.Encoding.DER))

    renewed = ensure_client_certificate(tmp_path, "urn:x")

    assert load_certificate(renewed.certificate).not_valid_after_utc > datetime.datetime.now(datetime.UTC)


def test_a_pem_certificate_of_the_device_config_is_read(tmp_path: Path) -> None:
    made = generate_certificate(
        tmp_path / "c.der", tmp_path / "k.pem", application_uri="urn:site:x", common_name="x"
    )
    pem = tmp_path / "c.pem"
    pem.write_bytes(load_certificate(made.certificate).public_bytes(serialization.Encoding.PEM))

    assert user_certificate(pem, made.private_key).application_uri == "urn:site:x"


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        (b"not a certificate", "is not a DER or PEM certificate"),
    ],
)
def test_unusable_certificate_files_say_why(tmp_path: Path, content: bytes | None, reason: str) -> None:
    path = tmp_path / "client.der"
    if content is not None:
        path.write_bytes(content)

    with pytest.raises(CertificateError) as caught:
        certificate_application_uri(path)

    assert caught.value.path == path
    assert caught.value.reason.startswith(reason)


def test_a_missing_private_key_is_named(tmp_path: Path) -> None:
    made = generate_certificate(
        tmp_path / "c.der", tmp_path / "k.pem", application_uri="urn:x", common_name="x"
    )

    with pytest.raises(CertificateError) as caught:
        user_certificate(made.certificate, tmp_path / "missing.pem")

    assert str(caught.value) == f"{tmp_path / 'missing.pem'}: does not exist"


def test_the_default_directory_is_the_users_state_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    assert default_cert_dir() == tmp_path / "edgetwin" / "opcua"
    monkeypatch.delenv("XDG_STATE_HOME")
    assert default_cert_dir() == Path.home() / ".local" / "state" / "edgetwin" / "opcua"

"""Application instance certificates for OPC-UA security: the mapper's own one is made on first use.

OPC-UA servers check that the application URI a client announces is the URI in its certificate's
subjectAltName, so the URI travels with the certificate: :func:`certificate_application_uri` reads it back and
the driver announces exactly that. A certificate holds the key usages OPC-UA requires (digital signature,
non-repudiation, key and data encipherment) and the client or server extended key usage.
"""

from __future__ import annotations

import datetime
import os
import secrets
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mappers.opcua.errors import CertificateError

CERTIFICATE_FILE = "edgetwin-opcua-client.der"
PRIVATE_KEY_FILE = "edgetwin-opcua-client.key.pem"
_KEY_SIZE = 2048  # the size every RSA security policy of OPC-UA accepts (Basic256Sha256: 2048..4096)
_VALID_DAYS = 3650


@dataclass(frozen=True)
class ClientCertificate:
    """A certificate (DER or PEM file), its private key (PEM) and the application URI it was issued for."""

    certificate: Path
    private_key: Path
    application_uri: str


def default_cert_dir() -> Path:
    """Where the mapper keeps its own certificate: ``$XDG_STATE_HOME/edgetwin/opcua`` (~/.local/state/...)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "edgetwin" / "opcua"


def default_application_uri() -> str:
    """The application URI the mapper announces (and puts in the certificate it makes)."""
    return f"urn:{socket.gethostname()}:edgetwin:opcua-mapper"


def generate_certificate(
    certificate: Path,
    private_key: Path,
    *,
    application_uri: str,
    common_name: str,
    server: bool = False,
    hostname: str | None = None,
) -> ClientCertificate:
    """Make a self-signed application instance certificate (DER) and its RSA key (PEM, mode 0600)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_SIZE)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgetwin"),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(secrets.token_bytes(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier(application_uri),
                    x509.DNSName(hostname or socket.gethostname()),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    for path in (certificate, private_key):
        path.parent.mkdir(parents=True, exist_ok=True)
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(private_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key_bytes)
    certificate.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    return ClientCertificate(certificate, private_key, application_uri)


def load_certificate(path: Path) -> x509.Certificate:
    """A certificate from a DER or PEM file; :class:`CertificateError` says why it cannot be used."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertificateError(path, f"cannot be read: {exc.strerror or exc}") from exc
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateError(path, f"is not a DER or PEM certificate: {exc}") from exc


def certificate_application_uri(path: Path) -> str:
    """The application URI in a certificate's subjectAltName (what a client must announce with it)."""
    cert = load_certificate(path)
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        names = x509.SubjectAlternativeName([])
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise CertificateError(
            path, "has no application URI (a URI in subjectAltName), which OPC-UA requires"
        )
    return uris[0]


def user_certificate(certificate: Path, private_key: Path) -> ClientCertificate:
    """A certificate and key the Device names (``certificate`` / ``privateKey``), checked for use."""
    if not private_key.is_file():
        raise CertificateError(private_key, "does not exist")
    return ClientCertificate(certificate, private_key, certificate_application_uri(certificate))


def ensure_client_certificate(cert_dir: Path, application_uri: str | None = None) -> ClientCertificate:
    """The mapper's own certificate in ``cert_dir``, made there first if it is missing or expired.

    Blocking (file I/O, RSA key generation): call it in an executor from async code.
    """
    certificate, private_key = cert_dir / CERTIFICATE_FILE, cert_dir / PRIVATE_KEY_FILE
    if certificate.is_file() and private_key.is_file():
        cert = load_certificate(certificate)
        if cert.not_valid_after_utc > datetime.datetime.now(datetime.UTC):
            return ClientCertificate(certificate, private_key, certificate_application_uri(certificate))
    uri = application_uri or default_application_uri()
    return generate_certificate(
        certificate, private_key, application_uri=uri, common_name="edgetwin OPC-UA mapper"
    )

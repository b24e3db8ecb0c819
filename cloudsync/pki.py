"""The cloud-edge link's X.509: cloudcore's CA, node certificates from CSRs, TLS contexts.

Wire and storage choices follow KubeEdge: an ECDSA P-256 CA (``CN=KubeEdge``), node identities
``CN=system:node:<node>, O=system:nodes`` (as the kubelet's), node certificates usable for client and server
auth (the edge's MetaServer serves with the same files), certificates and CSRs exchanged as DER. Every reader
here also accepts PEM. Nothing does I/O except the TLS context builders, which must hand PEM to OpenSSL.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import re
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloudsync.errors import CertificateFormatError, CsrRejectedError, NodeIdentityError

__all__ = [
    "NODE_CN_PREFIX",
    "NODE_ORGANIZATION",
    "CertificateAuthority",
    "PrivateKey",
    "check_node_name",
    "client_ssl_context",
    "client_ssl_context_from_files",
    "load_cert_chain_files",
    "load_certificate",
    "load_csr",
    "load_private_key",
    "make_node_csr",
    "node_name_of",
    "private_key_pem",
    "server_ssl_context",
]

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

NODE_CN_PREFIX = "system:node:"
NODE_ORGANIZATION = "system:nodes"

_MIN_RSA_BITS = 2048
_MAX_BACKDATE = datetime.timedelta(minutes=1)
# A Kubernetes node name: a lower-case DNS subdomain.
_NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def check_node_name(name: str) -> str:
    """Return ``name`` if it is a node name (a lower-case DNS subdomain); raise NodeIdentityError if not."""
    if len(name) > 253 or not _NODE_NAME.match(name):
        raise NodeIdentityError(name, "a node name is a lower-case DNS subdomain, e.g. edge-node-1")
    return name


def _is_pem(data: bytes) -> bool:
    return data.lstrip().startswith(b"-----BEGIN")


def load_certificate(data: bytes, what: str = "certificate") -> x509.Certificate:
    """Parse one certificate, PEM or DER; raises :class:`CertificateFormatError` naming ``what``."""
    try:
        if _is_pem(data):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError as exc:
        raise CertificateFormatError(what, f"not an X.509 certificate (PEM or DER): {exc}") from exc


def load_private_key(data: bytes, what: str = "private key") -> PrivateKey:
    """Parse an unencrypted EC or RSA private key (PEM, or DER as SEC1 / PKCS#1 / PKCS#8)."""
    try:
        if _is_pem(data):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = serialization.load_der_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateFormatError(what, f"not an unencrypted private key (PEM or DER): {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CertificateFormatError(what, f"a {type(key).__name__} key; only EC and RSA keys are supported")
    return key


def load_csr(data: bytes, what: str = "certificate signing request") -> x509.CertificateSigningRequest:
    """Parse a PKCS#10 certificate signing request, PEM or DER."""
    try:
        if _is_pem(data):
            return x509.load_pem_x509_csr(data)
        return x509.load_der_x509_csr(data)
    except ValueError as exc:
        raise CertificateFormatError(what, f"not a certificate signing request (PEM or DER): {exc}") from exc


def private_key_pem(key: PrivateKey) -> bytes:
    """``key`` as unencrypted PKCS#8 PEM."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _node_subject(node_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, NODE_ORGANIZATION),
            x509.NameAttribute(NameOID.COMMON_NAME, NODE_CN_PREFIX + node_name),
        ]
    )


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> list[str]:
    return [str(attribute.value) for attribute in name.get_attributes_for_oid(oid)]


def node_name_of(cert: x509.Certificate) -> str:
    """The node a certificate identifies (``CN=system:node:<node>``, ``O=system:nodes``).

    Raises :class:`NodeIdentityError` for any other subject.
    """
    return _node_name_of_subject(cert.subject)


def _node_name_of_subject(subject: x509.Name) -> str:
    text = subject.rfc4514_string()
    names = _attribute(subject, NameOID.COMMON_NAME)
    if len(names) != 1 or not names[0].startswith(NODE_CN_PREFIX):
        raise NodeIdentityError(text, f"the common name must be {NODE_CN_PREFIX}<node>")
    if _attribute(subject, NameOID.ORGANIZATION_NAME) != [NODE_ORGANIZATION]:
        raise NodeIdentityError(text, f"the organization must be {NODE_ORGANIZATION}")
    node = names[0].removeprefix(NODE_CN_PREFIX)
    check_node_name(node)
    return node


def make_node_csr(node_name: str) -> tuple[bytes, bytes]:
    """A fresh P-256 key and a CSR for ``node_name``'s identity: ``(key_pem, csr_pem)``."""
    key = _new_key()
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(_node_subject(check_node_name(node_name)))
        .sign(key, hashes.SHA256())
    )
    return private_key_pem(key), csr.public_bytes(serialization.Encoding.PEM)


def _validity(days: float, ca_cert: x509.Certificate) -> tuple[datetime.datetime, datetime.datetime]:
    """(not_before, not_after) for a certificate valid ``days`` from now, within the CA's own validity.

    Back-dated a little (at most a minute, at most a tenth of the lifetime) so that a cloudcore replica
    whose clock lags the issuer's accepts it at once; short lifetimes (tests) stay short.
    """
    if days <= 0:
        raise ValueError(f"a certificate lifetime must be positive, got {days} days")
    lifetime = datetime.timedelta(days=days)
    now = datetime.datetime.now(datetime.UTC)
    not_after = min(now + lifetime, ca_cert.not_valid_after_utc)
    return now - min(_MAX_BACKDATE, lifetime / 10), not_after


def _leaf_key_usage(public_key: object) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        # RSA key exchange (TLS 1.2 RSA suites) encrypts with the key; an EC key never does.
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """cloudcore's CA: it signs node certificates (from CSRs) and cloudcore's serving certificates."""

    cert: x509.Certificate
    key: PrivateKey

    @classmethod
    def create(cls, common_name: str = "KubeEdge", *, days: int = 3650) -> Self:
        """A new self-signed ECDSA P-256 CA, valid ``days`` (KubeEdge's CA is P-256 too, CN ``KubeEdge``)."""
        key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _MAX_BACKDATE)
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(cert, key)

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> Self:
        """An existing CA (a user-supplied one, or the one in the Secret). DER is accepted too.

        Raises :class:`CertificateFormatError` when either does not parse, the certificate is not a CA or
        the key is not the certificate's.
        """
        cert = load_certificate(cert_pem, "CA certificate")
        key = load_private_key(key_pem, "CA key")
        try:
            is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CertificateFormatError("CA certificate", "not a CA (basicConstraints CA:TRUE missing)")
        if _public_der(key.public_key()) != _public_der(cert.public_key()):
            raise CertificateFormatError("CA key", "it is not the key of the CA certificate")
        return cls(cert, key)

    def cert_pem(self) -> bytes:
        """The CA certificate, PEM."""
        return _cert_pem(self.cert)

    def cert_der(self) -> bytes:
        """The CA certificate, DER (what ``/ca.crt`` serves and the token hashes)."""
        return self.cert.public_bytes(serialization.Encoding.DER)

    def key_pem(self) -> bytes:
        """The CA key, unencrypted PKCS#8 PEM."""
        return private_key_pem(self.key)

    def key_der(self) -> bytes:
        """The CA key, DER: SEC1 for an EC key (KubeEdge's ``casecret`` format), PKCS#8 for RSA."""
        key_format = (
            serialization.PrivateFormat.TraditionalOpenSSL
            if isinstance(self.key, ec.EllipticCurvePrivateKey)
            else serialization.PrivateFormat.PKCS8
        )
        return self.key.private_bytes(serialization.Encoding.DER, key_format, serialization.NoEncryption())

    def hash(self) -> str:
        """Hex SHA-256 of the CA certificate's DER: the first part of a join token."""
        return hashlib.sha256(self.cert_der()).hexdigest()

    def sign_node_csr(self, csr: bytes, node_name: str, *, days: float = 365) -> x509.Certificate:
        """Sign a node's CSR (PEM or DER) with a certificate valid ``days`` for ``node_name``.

        The CSR must be self-signed correctly and name exactly ``CN=system:node:<node_name>``,
        ``O=system:nodes``; its key must be EC or RSA of at least 2048 bits. Nothing else of the CSR is
        copied (no SANs, no requested extensions). Raises :class:`CsrRejectedError` with the reason.
        """
        try:
            request = load_csr(csr)
        except CertificateFormatError as exc:
            raise CsrRejectedError(node_name, exc.reason) from exc
        if not request.is_signature_valid:
            raise CsrRejectedError(node_name, "the CSR's signature does not verify")
        try:
            requested = _node_name_of_subject(request.subject)
        except NodeIdentityError as exc:
            raise CsrRejectedError(node_name, str(exc)) from exc
        if requested != node_name:
            raise CsrRejectedError(
                node_name, f"the CSR is for node {requested!r}, the request is for node {node_name!r}"
            )
        public_key = request.public_key()
        if isinstance(public_key, rsa.RSAPublicKey):
            if public_key.key_size < _MIN_RSA_BITS:
                raise CsrRejectedError(node_name, f"an RSA key needs at least {_MIN_RSA_BITS} bits")
        elif not isinstance(public_key, ec.EllipticCurvePublicKey):
            raise CsrRejectedError(node_name, f"a {type(public_key).__name__}; use an EC or RSA key")
        return self._issue_node(public_key, node_name, days)

    def issue_node_cert(self, node_name: str, *, days: float = 365) -> tuple[bytes, bytes]:
        """A node key and certificate, no CSR round trip (tests, benchmarks): ``(cert_pem, key_pem)``."""
        key = _new_key()
        cert = self._issue_node(key.public_key(), check_node_name(node_name), days)
        return _cert_pem(cert), private_key_pem(key)

    def issue_server_cert(self, hosts: Sequence[str], *, days: float = 365) -> tuple[bytes, bytes]:
        """cloudcore's serving certificate for ``hosts`` (IPs, DNS names): ``(cert_pem, key_pem)``."""
        if not hosts:
            raise ValueError("a serving certificate needs at least one host name or address")
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
            except ValueError:
                names.append(x509.DNSName(host))
        key = _new_key()
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "KubeEdge"),
                x509.NameAttribute(NameOID.COMMON_NAME, "KubeEdge"),
            ]
        )
        builder = self._leaf_builder(subject, key.public_key(), days).add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        cert = builder.add_extension(x509.SubjectAlternativeName(names), critical=False).sign(
            self.key, hashes.SHA256()
        )
        return _cert_pem(cert), private_key_pem(key)

    def _issue_node(
        self, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, node_name: str, days: float
    ) -> x509.Certificate:
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH]
        return (
            self._leaf_builder(_node_subject(node_name), public_key, days)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .sign(self.key, hashes.SHA256())
        )

    def _leaf_builder(
        self, subject: x509.Name, public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, days: float
    ) -> x509.CertificateBuilder:
        not_before, not_after = _validity(days, self.cert)
        return (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.cert.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_leaf_key_usage(public_key), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False
            )
        )


def _public_der(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        return b""
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def _load_chain(context: ssl.SSLContext, cert_pem: bytes, key_pem: bytes) -> None:
    """Load a certificate and key held in memory: OpenSSL reads them from files only.

    They go to a private directory (mode 0700, removed at once) and never leave this process otherwise.
    """
    with tempfile.TemporaryDirectory(prefix="edgetwin-tls-") as directory:
        cert_file, key_file = Path(directory, "tls.crt"), Path(directory, "tls.key")
        cert_file.write_bytes(cert_pem)
        key_file.touch(mode=0o600)
        key_file.write_bytes(key_pem)
        try:
            context.load_cert_chain(cert_file, key_file)
        except ssl.SSLError as exc:
            raise CertificateFormatError("certificate and key", f"unusable for TLS: {exc}") from exc


def _ca_data(ca_pem: bytes) -> str:
    # cadata takes PEM text or DER bytes; a DER CA is turned into PEM so that one code path serves both.
    return _cert_pem(load_certificate(ca_pem, "CA certificate")).decode("ascii")


def server_ssl_context(
    ca_pem: bytes, cert_pem: bytes, key_pem: bytes, *, require_client_cert: bool
) -> ssl.SSLContext:
    """A TLS server context presenting ``cert_pem`` and verifying client certificates against the CA.

    Without ``require_client_cert`` a client may connect without a certificate (the certificate service:
    token holders have none yet); a certificate it does present must verify, or the handshake fails.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cadata=_ca_data(ca_pem))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED if require_client_cert else ssl.CERT_OPTIONAL
    _load_chain(context, cert_pem, key_pem)
    return context


def client_ssl_context(ca_pem: bytes, cert_pem: bytes | None, key_pem: bytes | None) -> ssl.SSLContext:
    """A TLS client context trusting only the CA, presenting a client certificate when one is given."""
    context = _client_context(ca_pem)
    if cert_pem is not None and key_pem is not None:
        _load_chain(context, cert_pem, key_pem)
    return context


def client_ssl_context_from_files(
    ca_file: Path, cert_file: Path | None, key_file: Path | None
) -> ssl.SSLContext:
    """:func:`client_ssl_context` from files (``edgecore.yaml``'s ``tlsCaFile`` / ``tlsCertFile`` / ...)."""
    try:
        ca_pem = ca_file.read_bytes()
    except OSError as exc:
        raise CertificateFormatError(str(ca_file), f"cannot read it: {exc.strerror or exc}") from exc
    context = _client_context(ca_pem)
    if cert_file is not None and key_file is not None:
        load_cert_chain_files(context, cert_file, key_file)
    return context


def load_cert_chain_files(context: ssl.SSLContext, cert_file: Path, key_file: Path) -> None:
    """Load a certificate and key from files into ``context``; raises :class:`CertificateFormatError`."""
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise CertificateFormatError(f"{cert_file} / {key_file}", f"unusable for TLS: {exc}") from exc


def _client_context(ca_pem: bytes) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=_ca_data(ca_pem))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context

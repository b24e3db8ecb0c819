"""Key material for a throw-away kube-apiserver: a CA, a serving certificate, a service-account key pair."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from edgetwin.testing.pki import issue, private_pem

# Names the apiserver answers to from this machine; the in-cluster names cost nothing and avoid surprises.
_DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc")


@dataclass(frozen=True)
class ApiServerCertificates:
    """Paths of the PEM files a kube-apiserver needs."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    service_account_key: Path
    service_account_public_key: Path


def write_certificates(directory: Path) -> ApiServerCertificates:
    """Generate fresh keys and certificates into ``directory`` (created if needed) and return their paths."""
    ca = issue(directory, "edgetwin-test-ca", stem="ca")
    server = issue(directory, "kube-apiserver", issuer=ca, server_names=_DNS_NAMES, stem="apiserver")

    # Service-account tokens are signed with RSA, the algorithm every Kubernetes client verifies.
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    paths = ApiServerCertificates(
        ca_file=ca.cert_file,
        cert_file=server.cert_file,
        key_file=server.key_file,
        service_account_key=directory / "sa.key",
        service_account_public_key=directory / "sa.pub",
    )
    paths.service_account_key.write_bytes(private_pem(sa_key))
    paths.service_account_key.chmod(0o600)
    paths.service_account_public_key.write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return paths

"""MqttClient over TLS to a mosquitto TLS listener, with certificates made here with ``cryptography``."""

from __future__ import annotations

import datetime
import ipaddress
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from eventbus import BrokerSettings, BrokerTls, EventBusConnectionError, MqttClient
from tests.fixtures.mqtt import BrokerFactory


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return path


def _issue(
    directory: Path,
    name: str,
    ca_key: ec.EllipticCurvePrivateKey | None,
    ca_cert: x509.Certificate | None,
    *,
    server: bool = False,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject if ca_cert else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca_cert is None, path_length=None), critical=True)
    )
    if ca_cert is None:
        builder = builder.add_extension(
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
    if server:
        names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    cert = builder.sign(ca_key or key, hashes.SHA256())
    (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(key, directory / f"{name}.key")
    return key, cert


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca_key, ca_cert = _issue(tmp_path, "ca", None, None)
    _issue(tmp_path, "server", ca_key, ca_cert, server=True)
    _issue(tmp_path, "client", ca_key, ca_cert)
    return Pki(
        ca=tmp_path / "ca.crt",
        server=Issued(tmp_path / "server.crt", tmp_path / "server.key"),
        client=Issued(tmp_path / "client.crt", tmp_path / "client.key"),
    )


async def _round_trip(client: MqttClient) -> bytes:
    await client.subscribe("tls/#")
    await client.publish("tls/x", "secret payload")
    async for message in client.messages():
        return message.payload
    raise AssertionError("messages() ended")


async def test_tls_round_trip_with_the_ca(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    broker = await mosquitto_factory(tls=BrokerTls(cert_file=pki.server.cert, key_file=pki.server.key))
    assert broker.url.startswith("ssl://")
    async with MqttClient(BrokerSettings(url=broker.url, ca_file=pki.ca)) as client:
        assert await _round_trip(client) == b"secret payload"


async def test_untrusted_broker_certificate_fails_at_once(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    broker = await mosquitto_factory(tls=BrokerTls(cert_file=pki.server.cert, key_file=pki.server.key))
    # No ca_file: the system CAs do not know our CA.
    client = MqttClient(BrokerSettings(url=broker.url))
    started = time.monotonic()
    with pytest.raises(EventBusConnectionError) as info:
        await client.start(connect_timeout=10)
    assert "certificate verification failed" in info.value.reason
    assert time.monotonic() - started < 5


async def test_mutual_tls(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    tls = BrokerTls(
        cert_file=pki.server.cert, key_file=pki.server.key, ca_file=pki.ca, require_certificate=True
    )
    broker = await mosquitto_factory(tls=tls)
    settings = BrokerSettings(
        url=broker.url, ca_file=pki.ca, cert_file=pki.client.cert, key_file=pki.client.key
    )
    async with MqttClient(settings) as client:
        assert await _round_trip(client) == b"secret payload"

    without_certificate = MqttClient(
        BrokerSettings(url=broker.url, ca_file=pki.ca, reconnect_min=0.1, reconnect_max=0.2)
    )
    with pytest.raises(EventBusConnectionError):
        await without_certificate.start(connect_timeout=1)

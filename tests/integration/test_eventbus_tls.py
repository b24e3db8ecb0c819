"""MqttClient over TLS to a mosquitto TLS listener, with certificates made here with ``cryptography``."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from edgetwin.testing.pki import Issued, issue
from eventbus import BrokerSettings, BrokerTls, EventBusConnectionError, MqttClient
from tests.fixtures.mqtt import BrokerFactory


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: Issued
    client: Issued


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca = issue(tmp_path, "ca")
    return Pki(
        ca=ca.cert_file,
        server=issue(tmp_path, "server", issuer=ca, server_names=["localhost"]),
        client=issue(tmp_path, "client", issuer=ca),
    )


def server_tls(pki: Pki) -> BrokerTls:
    return BrokerTls(cert_file=pki.server.cert_file, key_file=pki.server.key_file)


async def _round_trip(client: MqttClient) -> bytes:
    await client.subscribe("tls/#")
    await client.publish("tls/x", "secret payload")
    async for message in client.messages():
        return message.payload
    raise AssertionError("messages() ended")


async def test_tls_round_trip_with_the_ca(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    broker = await mosquitto_factory(
        tls=BrokerTls(cert_file=pki.server.cert_file, key_file=pki.server.key_file)
    )
    assert broker.url.startswith("ssl://")
    async with MqttClient(BrokerSettings(url=broker.url, ca_file=pki.ca)) as client:
        assert await _round_trip(client) == b"secret payload"


async def test_untrusted_broker_certificate_fails_at_once(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    broker = await mosquitto_factory(
        tls=BrokerTls(cert_file=pki.server.cert_file, key_file=pki.server.key_file)
    )
    # No ca_file: the system CAs do not know our CA.
    client = MqttClient(BrokerSettings(url=broker.url))
    started = time.monotonic()
    with pytest.raises(EventBusConnectionError) as info:
        await client.start(connect_timeout=10)
    assert "certificate verification failed" in info.value.reason
    assert time.monotonic() - started < 5


async def test_mutual_tls(mosquitto_factory: BrokerFactory, pki: Pki) -> None:
    tls = BrokerTls(
        cert_file=pki.server.cert_file, key_file=pki.server.key_file, ca_file=pki.ca, require_certificate=True
    )
    broker = await mosquitto_factory(tls=tls)
    settings = BrokerSettings(
        url=broker.url, ca_file=pki.ca, cert_file=pki.client.cert_file, key_file=pki.client.key_file
    )
    async with MqttClient(settings) as client:
        assert await _round_trip(client) == b"secret payload"

    without_certificate = MqttClient(
        BrokerSettings(url=broker.url, ca_file=pki.ca, reconnect_min=0.1, reconnect_max=0.2)
    )
    with pytest.raises(EventBusConnectionError):
        await without_certificate.start(connect_timeout=1)

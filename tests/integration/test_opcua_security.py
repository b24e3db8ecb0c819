"""OPC-UA security end to end: Basic256Sha256 SignAndEncrypt with a user login, against a real asyncua server
whose certificate is made here and which trusts the mapper's own client certificate; and what a user sees when
the password, the certificate or the security settings are wrong: a reason naming what to fix, and the device
``unhealthy``, retried slowly.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from asyncua import ua
from prometheus_client import CollectorRegistry

from edgetwin.testing import wait_for
from edgetwin.testing.opcua import OpcUaSimulator, Security, Variable
from eventbus import MosquittoBroker
from mappers.opcua import OpcUaProtocol, OpcUaSettings, generate_certificate
from tests.fixtures.mqtt import ProbeFactory
from tests.fixtures.opcua import Certificates
from tests.integration.test_modbus_mapper import running_edge, set_expected, unique, wait_actual, wait_state
from tests.integration.test_opcua_mapper import RECONNECT, Prop, documents, running_mapper

pytestmark = pytest.mark.asyncio(loop_scope="module")

USER, PASSWORD = "operator", "s3cret"
SECURE = {"securityPolicy": "Basic256Sha256", "securityMode": "SignAndEncrypt"}


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def secure_device(opcua_certs: Certificates) -> AsyncIterator[OpcUaSimulator]:
    """Only Basic256Sha256 SignAndEncrypt, a login required; the mapper's certificate is trusted."""
    security = Security(opcua_certs.server, trusted=[opcua_certs.client.certificate])
    variables = [
        Variable("pressure", ua.VariantType.Double, 1.5),
        Variable("setpoint", ua.VariantType.Double, 60.0),
    ]
    async with OpcUaSimulator(variables, security=security, users={USER: PASSWORD}) as simulator:
        yield simulator


def device_docs(device: OpcUaSimulator, namespace: str, **config: Any) -> list[dict[str, Any]]:
    """The boiler's DeviceModel and Device on ``device``, with ``config`` added to its configData."""
    props = [
        Prop("pressure", "DOUBLE", device.node_id("pressure")),
        Prop("setpoint", "DOUBLE", device.node_id("setpoint")),
    ]
    return documents(namespace, "boiler", {"url": device.url, **config}, props)


async def test_a_secure_session_with_the_right_settings(
    secure_device: OpcUaSimulator,
    opcua_certs: Certificates,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = device_docs(secure_device, namespace, **SECURE, userName=USER, password=PASSWORD)
    plugin = OpcUaProtocol(OpcUaSettings(cert_dir=opcua_certs.cert_dir, timeout=2.0))
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin),
    ):
        await wait_actual(probe, namespace, "boiler", "pressure", "1.5")
        set_expected(probe, namespace, "boiler", "setpoint", "65.5")

        async def written() -> bool:
            return bool(await secure_device.get("setpoint") == 65.5)

        await wait_for(written, what="setpoint 65.5 on the device")
        await wait_state(probe, namespace, "boiler", "online")


def _rejections(registry: CollectorRegistry, device: str) -> float:
    labels = {"device": device, "kind": "DeviceRejectedError"}
    return registry.get_sample_value("edgetwin_mapper_errors_total", labels) or 0.0


async def test_a_wrong_password_makes_the_device_unhealthy_and_says_so(
    secure_device: OpcUaSimulator,
    opcua_certs: Certificates,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = device_docs(secure_device, namespace, **SECURE, userName=USER, password="wrong")
    plugin = OpcUaProtocol(OpcUaSettings(cert_dir=opcua_certs.cert_dir, timeout=2.0))
    registry = CollectorRegistry()
    device = f"{namespace}/boiler"
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin, registry=registry),
    ):
        await wait_state(probe, namespace, "boiler", "unhealthy")
        first = time.monotonic()
        await wait_for(lambda: _rejections(registry, device) >= 3, what="two more attempts")
        # Retried at the backoff's longest delay, not in a burst of fast retries.
        assert time.monotonic() - first >= 2 * RECONNECT.maximum * 0.9
    reasons = [
        record.getMessage() for record in caplog.records if "refused the connection" in record.getMessage()
    ]
    assert reasons == [
        f"device {device} refused the connection: {secure_device.url} refused user 'operator' "
        "(BadUserAccessDenied): check userName and password "
        "(field spec.protocol.configData.userName/password)"
    ]  # logged once, however often it was retried


async def _rejected_reason(
    docs: list[dict[str, Any]],
    cert_dir: Path,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> str:
    namespace = docs[1]["metadata"]["namespace"]
    node = unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    plugin = OpcUaProtocol(OpcUaSettings(cert_dir=cert_dir, timeout=2.0))
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin),
    ):
        await wait_state(probe, namespace, "boiler", "unhealthy")
    (reason,) = {
        record.getMessage() for record in caplog.records if "refused the connection" in record.getMessage()
    }
    return reason


async def test_an_untrusted_client_certificate_is_named_with_the_fix(
    secure_device: OpcUaSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    stranger = generate_certificate(
        tmp_path / "stranger.der",
        tmp_path / "stranger.pem",
        application_uri="urn:stranger",
        common_name="stranger",
    )
    docs = device_docs(
        secure_device,
        unique("ns"),
        **SECURE,
        userName=USER,
        password=PASSWORD,
        certificate=str(stranger.certificate),
        privateKey=str(stranger.private_key),
    )
    reason = await _rejected_reason(docs, tmp_path / "unused", mosquitto, mqtt_probe, tmp_path, caplog)
    assert f"refused the client certificate {stranger.certificate} (urn:stranger)" in reason
    assert "(BadCertificateUntrusted): the server does not trust it" in reason
    assert "(field spec.protocol.configData.certificate)" in reason


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {
                "securityPolicy": "Basic256Sha256",
                "securityMode": "Sign",
                "userName": USER,
                "password": PASSWORD,
            },
            "offers no endpoint with securityPolicy Basic256Sha256 and securityMode Sign; "
            "it offers (policy/mode) Basic256Sha256/SignAndEncrypt "
            "(field spec.protocol.configData.securityPolicy/securityMode)",
        ),
        (
            SECURE,
            "refuses anonymous sessions: set userName and password (field spec.protocol.configData.userName)",
        ),
    ],
    ids=["policy-mismatch", "anonymous"],
)
async def test_security_settings_the_server_does_not_offer_are_named(
    config: dict[str, str],
    expected: str,
    secure_device: OpcUaSimulator,
    opcua_certs: Certificates,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    docs = device_docs(secure_device, unique("ns"), **config)
    reason = await _rejected_reason(docs, opcua_certs.cert_dir, mosquitto, mqtt_probe, tmp_path, caplog)
    assert reason.endswith(expected)

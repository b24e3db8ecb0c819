"""The OPC-UA mapper end to end: real asyncua servers, real mosquitto, the real DeviceTwin, and an outside app
(the probe) that sees only what a KubeEdge app would see over MQTT.

Most tests share one server (``opcua_device``); those that stop it or change its settings start their own.
"""

from __future__ import annotations

import contextlib
import datetime
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from asyncua import ua
from prometheus_client import CollectorRegistry

from edgetwin.testing import wait_for
from edgetwin.testing.mosquitto import ProbeMessage
from edgetwin.testing.opcua import OpcUaSimulator, Variable
from eventbus import BrokerSettings, MosquittoBroker, TopicKind
from mappers.opcua import OpcUaProtocol, OpcUaSettings
from mappers.sdk import BackoffPolicy, DeviceConfig, Mapper
from tests.fixtures.mqtt import ProbeFactory
from tests.fixtures.opcua import OpcUaFactory
from tests.integration.test_modbus_mapper import (
    device_topic,
    running_edge,
    set_expected,
    unique,
    wait_actual,
    wait_state,
)

pytestmark = pytest.mark.asyncio(loop_scope="module")

API = "devices.kubeedge.io/v1beta1"
RECONNECT = BackoffPolicy(minimum=0.05, maximum=0.5)


@dataclass(frozen=True)
class Prop:
    """A property of a test device: model side (type, access) and visitor side (node id or browse path)."""

    name: str
    type: str
    node: str
    access: str = "ReadWrite"
    by_path: bool = False
    """``node`` is a browse path (``browseName``), not a ``nodeID``."""
    collect_ms: int = 100


def documents(
    namespace: str, name: str, config_data: dict[str, Any], props: Sequence[Prop]
) -> list[dict[str, Any]]:
    """A v1beta1 DeviceModel and Device (YAML-shaped dicts) of an OPC-UA device."""
    model = {
        "apiVersion": API,
        "kind": "DeviceModel",
        "metadata": {"name": f"{name}-model", "namespace": namespace},
        "spec": {
            "protocol": "opcua",
            "properties": [{"name": p.name, "type": p.type, "accessMode": p.access} for p in props],
        },
    }
    device = {
        "apiVersion": API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deviceModelRef": {"name": f"{name}-model"},
            "protocol": {"protocolName": "opcua", "configData": config_data},
            "properties": [
                {
                    "name": p.name,
                    "collectCycle": p.collect_ms,
                    "visitors": {
                        "protocolName": "opcua",
                        "configData": {"browseName": p.node} if p.by_path else {"nodeID": p.node},
                    },
                }
                for p in props
            ],
        },
    }
    return [model, device]


def settings(tmp_path: Path) -> OpcUaSettings:
    """Short timeouts; no keepalive read during a test (so every Read counted is a poll)."""
    return OpcUaSettings(cert_dir=tmp_path / "certs", timeout=2.0, keepalive=60.0)


@contextlib.asynccontextmanager
async def running_mapper(
    broker: MosquittoBroker,
    node: str,
    plugin: OpcUaProtocol,
    *,
    registry: CollectorRegistry | None = None,
    devices: Sequence[DeviceConfig] | None = None,
) -> AsyncIterator[Mapper]:
    """The OPC-UA mapper, in this process, reconnecting fast."""
    mapper = Mapper(
        plugin,
        BrokerSettings(url=broker.url),
        node=node,
        registry=registry,
        devices=devices,
        reconnect=RECONNECT,
    )
    await mapper.start()
    try:
        yield mapper
    finally:
        await mapper.stop()


def samples(registry: CollectorRegistry, name: str, device: str) -> float:
    """A per-device counter of the mapper's metrics."""
    return registry.get_sample_value(name, {"device": device}) or 0.0


async def test_a_subscribed_change_reaches_the_twin_within_one_publishing_interval(
    opcua_device: OpcUaSimulator, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "boiler", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    interval = 0.5
    props = [
        Prop("temperature", "DOUBLE", opcua_device.node_id("temperature"), collect_ms=int(interval * 1000)),
        Prop("limit", "DOUBLE", opcua_device.browse_path("limited"), by_path=True, collect_ms=1000),
    ]
    await opcua_device.set("temperature", 21.5)
    docs = documents(namespace, name, {"url": opcua_device.url}, props)
    registry = CollectorRegistry()
    document_topic = device_topic(TopicKind.TWIN_UPDATE_DOCUMENT, namespace, name)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, OpcUaProtocol(settings(tmp_path)), registry=registry),
    ):
        await wait_actual(probe, namespace, name, "temperature", "21.5")
        await wait_actual(probe, namespace, name, "limit", "50.0")  # found by its browse path

        changed = time.monotonic()
        await opcua_device.set("temperature", 42.25)
        await probe.wait_message_async(
            document_topic,
            lambda m: (
                (m.json()["twin"].get("temperature") or {}).get("current", {}).get("actual", {}).get("value")
                == "42.25"
            ),
            timeout=5.0,
        )
        # The server publishes at most one interval after the change; MQTT and the twin add milliseconds.
        assert time.monotonic() - changed < interval + 0.3
        # Pushed, never polled.
        assert samples(registry, "edgetwin_mapper_polls_total", f"{namespace}/{name}") == 0
        await wait_state(probe, namespace, name, "online")


@dataclass(frozen=True)
class WriteCase:
    vtype: ua.VariantType
    model_type: str
    desired: str
    stored: Any


WRITE_CASES = [
    WriteCase(ua.VariantType.Boolean, "BOOLEAN", "true", True),
    WriteCase(ua.VariantType.SByte, "INT", "-128", -128),
    WriteCase(ua.VariantType.Byte, "INT", "255", 255),
    WriteCase(ua.VariantType.Int16, "INT", "-32768", -32768),
    WriteCase(ua.VariantType.UInt16, "INT", "65535", 65535),
    WriteCase(ua.VariantType.Int32, "INT", "-2147483648", -2147483648),
    WriteCase(ua.VariantType.UInt32, "INT", "4294967295", 4294967295),
    WriteCase(ua.VariantType.Int64, "INT", "-9223372036854775808", -9223372036854775808),
    # A twin int is an int64 (as KubeEdge's): the largest UInt64 a twin can hold.
    WriteCase(ua.VariantType.UInt64, "INT", "9223372036854775807", 9223372036854775807),
    WriteCase(ua.VariantType.Float, "FLOAT", "0.1", pytest.approx(0.1, rel=1e-7)),
    WriteCase(ua.VariantType.Double, "DOUBLE", "21.55", 21.55),
    WriteCase(ua.VariantType.String, "STRING", "hello-world", "hello-world"),
    WriteCase(
        ua.VariantType.DateTime,
        "STRING",
        "2024-05-06T07:08:09.123456Z",
        datetime.datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=datetime.UTC),
    ),
]


@pytest.mark.parametrize("case", WRITE_CASES, ids=[case.vtype.name for case in WRITE_CASES])
async def test_a_desired_value_reaches_the_node_as_its_declared_type(
    case: WriteCase,
    opcua_device: OpcUaSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name, node = unique("ns"), "actuator", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    variable = case.vtype.name
    docs = documents(
        namespace,
        name,
        {"url": opcua_device.url},
        [Prop("p", case.model_type, opcua_device.node_id(variable))],
    )
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, OpcUaProtocol(settings(tmp_path))),
    ):
        await wait_state(probe, namespace, name, "online")
        set_expected(probe, namespace, name, "p", case.desired)

        async def written() -> bool:
            return bool(await opcua_device.get(variable) == case.stored)

        await wait_for(written, what=f"{variable} holding {case.stored!r}")
        assert (await opcua_device.get_variant(variable)).VariantType == case.vtype
        # Notified back: the twin's actual value is the desired one, in the twin's spelling.
        await wait_actual(probe, namespace, name, "p", case.desired)


async def test_writes_the_server_refuses_are_answered_on_the_result_topic(
    opcua_device: OpcUaSimulator, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "refuser", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    cases = {
        "readonly": ("INT", "8", "BadNotWritable"),
        "denied": ("INT", "8", "BadUserAccessDenied"),
        "limited": ("DOUBLE", "150", "BadOutOfRange"),
        "mismatched": ("DOUBLE", "2.5", "BadTypeMismatch"),
        "array": ("INT", "1", "holds an array"),
    }
    props = [Prop(variable, kind, opcua_device.node_id(variable)) for variable, (kind, _, _) in cases.items()]
    docs = documents(namespace, name, {"url": opcua_device.url}, props)
    result_topic = device_topic(TopicKind.TWIN_UPDATE_RESULT, namespace, name)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, OpcUaProtocol(settings(tmp_path))),
    ):
        await wait_actual(probe, namespace, name, "readonly", "7")
        for variable, (_kind, desired, reason) in cases.items():
            set_expected(probe, namespace, name, variable, desired)
            answer = await probe.wait_message_async(result_topic, partial(_refusal_of, variable))
            body = answer.json()
            assert (body["property"], body["code"]) == (variable, 400)
            assert reason in body["reason"]
    assert await opcua_device.get("readonly") == 7
    assert await opcua_device.get("limited") == 50.0


def _refusal_of(prop: str, message: ProbeMessage) -> bool:
    body = message.json()
    return bool(body.get("property") == prop and "code" in body)


async def test_a_server_without_subscriptions_is_polled_with_one_read_for_all_properties(
    opcua_factory: OpcUaFactory, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    variables = [Variable(f"v{i}", ua.VariantType.Int32, i) for i in range(5)]
    server = await opcua_factory(variables, subscriptions=False)
    namespace, name, node = unique("ns"), "legacy", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    props = [Prop(f"v{i}", "INT", server.node_id(f"v{i}"), collect_ms=50) for i in range(5)]
    docs = documents(namespace, name, {"url": server.url}, props)
    registry = CollectorRegistry()
    plugin = OpcUaProtocol(settings(tmp_path))
    device = f"{namespace}/{name}"
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin, registry=registry),
    ):
        await wait_actual(probe, namespace, name, "v4", "4")
        await server.set("v2", 20)
        await wait_actual(probe, namespace, name, "v2", "20")

        polls, reads = (
            samples(registry, "edgetwin_mapper_polls_total", device),
            plugin.service_calls["ReadRequest"],
        )
        await wait_for(
            lambda: samples(registry, "edgetwin_mapper_polls_total", device) >= polls + 10, what="polls"
        )
        polled = samples(registry, "edgetwin_mapper_polls_total", device) - polls
        # One Read request per poll of five properties (give or take the poll in flight).
        assert abs((plugin.service_calls["ReadRequest"] - reads) - polled) <= 1
        assert plugin.service_calls["CreateSubscriptionRequest"] == 1  # tried once, refused


async def test_a_restarted_server_is_resubscribed_and_no_stale_value_is_reported(
    opcua_factory: OpcUaFactory, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    server = await opcua_factory([Variable("level", ua.VariantType.Double, 1.0)])
    namespace, name, node = unique("ns"), "tank", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = documents(namespace, name, {"url": server.url}, [Prop("level", "DOUBLE", server.node_id("level"))])
    update_topic = device_topic(TopicKind.TWIN_UPDATE, namespace, name)
    state_topic = device_topic(TopicKind.STATE_UPDATE, namespace, name)
    plugin = OpcUaProtocol(settings(tmp_path))
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin),
    ):
        await wait_actual(probe, namespace, name, "level", "1.0")
        await server.set("level", 2.0)
        await wait_actual(probe, namespace, name, "level", "2.0")

        await server.stop()
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "offline")
        offline_at = len(probe.messages)
        await server.set("level", 3.0)  # changed while the mapper cannot see it
        await server.start()
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "online")
        await wait_actual(probe, namespace, name, "level", "3.0")
        await server.set("level", 4.0)  # notified through the new subscription
        await wait_actual(probe, namespace, name, "level", "4.0")

        reported = [
            message.json()["twin"]["level"]["actual"]["value"]
            for message in probe.messages[offline_at:]
            if message.topic == update_topic
        ]
        # Only values read on the new session: nothing from before the loss came back as news.
        assert reported == ["3.0", "4.0"]
    assert plugin.service_calls["CreateSubscriptionRequest"] == 2

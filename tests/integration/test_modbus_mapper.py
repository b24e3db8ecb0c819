"""The Modbus mapper end to end: real pymodbus devices (TCP, RTU over a pty pair), real mosquitto, the real
DeviceTwin, and an outside app (the probe) that sees only what a KubeEdge app would see over MQTT.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from devicetwin import DeviceTwin, TwinDevice, TwinProperty, TwinStore
from edgetwin.testing import wait_for
from edgetwin.testing.modbus import ModbusRtuSimulator, ModbusSimulator, ModbusTcpSimulator
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import BrokerSettings, MosquittoBroker, MqttClient, TopicKind, topics
from mappers.modbus import LinkSettings, ModbusProtocol
from mappers.sdk import BackoffPolicy, DeviceConfig, Mapper, load_device_configs
from tests.fixtures.mqtt import ProbeFactory

# Short timeouts and backoff keep dead-device tests fast; the defaults are for real lines.
LINK = LinkSettings(timeout=0.3, retries=0)
RECONNECT = BackoffPolicy(minimum=0.05, maximum=0.5)
API = "devices.kubeedge.io/v1beta1"


@dataclass(frozen=True)
class Prop:
    """One property of a test device: model side (type, access, range) and visitor side (register...)."""

    name: str
    type: str
    register: str
    offset: int
    access: str = "ReadWrite"
    data_type: str | None = None
    limit: int | None = None
    scale: float | None = None
    is_swap: bool = False
    is_register_swap: bool = False
    minimum: str | None = None
    maximum: str | None = None
    collect_ms: int = 100
    report_ms: int | None = None


def documents(
    namespace: str, name: str, config_data: dict[str, Any], props: Sequence[Prop]
) -> list[dict[str, Any]]:
    """A v1beta1 DeviceModel and Device (YAML-shaped dicts), as a KubeEdge user writes them."""
    model_props = []
    device_props = []
    for prop in props:
        model_prop: dict[str, Any] = {"name": prop.name, "type": prop.type, "accessMode": prop.access}
        if prop.minimum is not None:
            model_prop["minimum"] = prop.minimum
        if prop.maximum is not None:
            model_prop["maximum"] = prop.maximum
        model_props.append(model_prop)
        visitor: dict[str, Any] = {"register": prop.register, "offset": prop.offset}
        optional = {
            "dataType": prop.data_type,
            "limit": prop.limit,
            "scale": prop.scale,
            "isSwap": prop.is_swap or None,
            "isRegisterSwap": prop.is_register_swap or None,
        }
        visitor.update({key: value for key, value in optional.items() if value is not None})
        device_prop: dict[str, Any] = {
            "name": prop.name,
            "collectCycle": prop.collect_ms,
            "visitors": {"protocolName": "modbus", "configData": visitor},
        }
        if prop.report_ms is not None:
            device_prop["reportCycle"] = prop.report_ms
        device_props.append(device_prop)
    model = {
        "apiVersion": API,
        "kind": "DeviceModel",
        "metadata": {"name": f"{name}-model", "namespace": namespace},
        "spec": {"protocol": "modbus", "properties": model_props},
    }
    device = {
        "apiVersion": API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deviceModelRef": {"name": f"{name}-model"},
            "protocol": {"protocolName": "modbus", "configData": config_data},
            "properties": device_props,
        },
    }
    return [model, device]


def twin_device(docs: list[dict[str, Any]]) -> TwinDevice:
    """How edgecore declares a Device to the twin (type from the model, spec and model for membership)."""
    model, device = docs
    return TwinDevice(
        namespace=device["metadata"]["namespace"],
        name=device["metadata"]["name"],
        properties=[TwinProperty(prop["name"], type=prop["type"]) for prop in model["spec"]["properties"]],
        spec=device["spec"],
        model=model["spec"],
    )


def unique(prefix: str) -> str:
    """A name no other test on the session broker uses."""
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@contextlib.asynccontextmanager
async def running_edge(
    broker: MosquittoBroker, node: str, db: Path, *devices: list[dict[str, Any]]
) -> AsyncIterator[DeviceTwin]:
    """The real DeviceTwin on the broker, knowing ``devices`` before any mapper starts."""
    store = await TwinStore.open(db)
    client = MqttClient(BrokerSettings(url=broker.url))
    twin = DeviceTwin(store, client, node)
    try:
        await client.start()
        await twin.start()
        for docs in devices:
            await twin.upsert_device(twin_device(docs))
        yield twin
    finally:
        await twin.stop()
        await client.stop()
        await store.close()


@contextlib.asynccontextmanager
async def running_mapper(
    broker: MosquittoBroker,
    node: str,
    *,
    registry: CollectorRegistry | None = None,
    devices: Sequence[DeviceConfig] | None = None,
    push_data: bool = False,
) -> AsyncIterator[Mapper]:
    """The Modbus mapper, in this process, with short timeouts."""
    mapper = Mapper(
        ModbusProtocol(LINK),
        BrokerSettings(url=broker.url),
        node=node,
        registry=registry,
        devices=devices,
        reconnect=RECONNECT,
        push_data=push_data,
    )
    await mapper.start()
    try:
        yield mapper
    finally:
        await mapper.stop()


def device_topic(kind: TopicKind, namespace: str, name: str) -> str:
    """A device topic, as an app addresses it."""
    return topics.device_topic(kind, namespace, name)


async def eventually(condition: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Wait until an async condition holds."""
    check: Callable[[], object] = condition  # wait_for's T cannot be inferred from a coroutine function
    await wait_for(check, timeout=timeout, what=what)


async def twin_actual(probe: MqttProbe, namespace: str, name: str, prop: str) -> str | None:
    """The property's reported value, asked with ``twin/get`` as an app would."""
    event_id = str(uuid.uuid4())
    probe.publish(device_topic(TopicKind.TWIN_GET, namespace, name), {"event_id": event_id, "timestamp": 0})
    result = await probe.wait_message_async(
        device_topic(TopicKind.TWIN_GET_RESULT, namespace, name), lambda m: m.json()["event_id"] == event_id
    )
    actual = result.json()["twin"].get(prop, {}).get("actual") or {}
    value: str | None = actual.get("value")
    return value


async def wait_actual(probe: MqttProbe, namespace: str, name: str, prop: str, value: str) -> None:
    """Wait until the twin reports ``value`` for ``prop``."""

    async def reached() -> bool:
        return await twin_actual(probe, namespace, name, prop) == value

    await eventually(reached, f"{namespace}/{name} {prop} actual == {value!r}")


def set_expected(probe: MqttProbe, namespace: str, name: str, prop: str, value: str) -> str:
    """Set a desired value through the twin, as an app (or the cloud) does; returns the event id."""
    event_id = str(uuid.uuid4())
    body = {"event_id": event_id, "timestamp": 0, "twin": {prop: {"expected": {"value": value}}}}
    probe.publish(device_topic(TopicKind.TWIN_UPDATE, namespace, name), body)
    return event_id


async def wait_state(probe: MqttProbe, namespace: str, name: str, state: str, timeout: float = 10.0) -> None:
    """Wait for the edge to confirm the device's ``state`` on ``state/update/result``."""
    await probe.wait_message_async(
        device_topic(TopicKind.STATE_UPDATE_RESULT, namespace, name),
        lambda m: m.json()["device"]["state"] == state,
        timeout=timeout,
    )


def thermostat(namespace: str, name: str, config_data: dict[str, Any]) -> list[dict[str, Any]]:
    """KubeEdge's thermostat: temperature as float / limit 1 / scale 0.1, a set point, a heating coil."""
    return documents(
        namespace,
        name,
        config_data,
        [
            Prop(
                "temperature",
                "FLOAT",
                "InputRegister",
                0,
                access="ReadOnly",
                data_type="float",
                limit=1,
                scale=0.1,
            ),
            Prop(
                "setpoint",
                "FLOAT",
                "HoldingRegister",
                0,
                data_type="float",
                limit=1,
                scale=0.1,
                minimum="5",
                maximum="35",
            ),
            Prop("heating", "BOOLEAN", "CoilRegister", 0),
        ],
    )


async def test_register_change_reaches_the_twin(
    modbus_server: ModbusSimulator, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "thermostat", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    await modbus_server.set_inputs(1, 0, [215])
    docs = thermostat(namespace, name, modbus_server.config_data(1))
    async with running_edge(mosquitto, node, tmp_path / "twin.db", docs), running_mapper(mosquitto, node):
        await wait_actual(probe, namespace, name, "temperature", "21.5")
        await modbus_server.set_inputs(1, 0, [0xFFCE])  # -50 x 0.1
        await wait_actual(probe, namespace, name, "temperature", "-5.0")
        await modbus_server.set_coils(1, 0, [True])
        await wait_actual(probe, namespace, name, "heating", "true")
        await wait_state(probe, namespace, name, "online")


@dataclass(frozen=True)
class WriteCase:
    prop: Prop
    desired: str
    words: list[int] | list[bool]


WRITE_CASES = {
    "float-limit1-scale0.1": WriteCase(
        Prop("p", "FLOAT", "HoldingRegister", 4, data_type="float", limit=1, scale=0.1), "21.5", [215]
    ),
    "int32-registerswap": WriteCase(
        Prop("p", "INT", "HoldingRegister", 4, data_type="int", limit=2, is_register_swap=True),
        "70000",
        [0x1170, 0x0001],
    ),
    "float32-byteswap": WriteCase(
        Prop("p", "FLOAT", "HoldingRegister", 4, data_type="float", limit=2, is_swap=True),
        "21.5",
        [0xAC41, 0x0000],
    ),
    "float64-bothswaps": WriteCase(
        Prop("p", "DOUBLE", "HoldingRegister", 4, data_type="float64", is_swap=True, is_register_swap=True),
        "1.5",
        [0, 0, 0, 0xF83F],
    ),
    "uint16-scale10": WriteCase(
        Prop("p", "INT", "HoldingRegister", 4, data_type="uint16", scale=10), "120", [12]
    ),
    "int16-negative": WriteCase(Prop("p", "INT", "HoldingRegister", 4, data_type="int16"), "-2", [0xFFFE]),
    "boolean-register": WriteCase(Prop("p", "BOOLEAN", "HoldingRegister", 4), "true", [1]),
    "string": WriteCase(
        Prop("p", "STRING", "HoldingRegister", 4, data_type="string", limit=2), "ab", [0x6162, 0]
    ),
    "coil": WriteCase(Prop("p", "BOOLEAN", "CoilRegister", 4), "true", [True]),
}


@pytest.mark.parametrize("case", WRITE_CASES.values(), ids=WRITE_CASES.keys())
async def test_desired_value_reaches_the_register(
    case: WriteCase,
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name, node = unique("ns"), "actuator", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), [case.prop])
    count = len(case.words)
    is_coil = case.prop.register == "CoilRegister"

    async def register() -> list[int] | list[bool]:
        if is_coil:
            return await modbus_tcp_server.get_coils(1, 4, count)
        return await modbus_tcp_server.get_holding(1, 4, count)

    async with running_edge(mosquitto, node, tmp_path / "twin.db", docs), running_mapper(mosquitto, node):
        await wait_state(probe, namespace, name, "online")
        set_expected(probe, namespace, name, "p", case.desired)

        async def written() -> bool:
            return await register() == case.words

        await eventually(written, f"register holding {case.words}")
        # Read back and reported: the twin's actual value now equals the desired one.
        await wait_actual(probe, namespace, name, "p", case.desired)


async def test_refused_desired_values_leave_the_register_untouched(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name, node = unique("ns"), "thermostat", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = thermostat(namespace, name, modbus_tcp_server.config_data(1))
    docs[0]["spec"]["properties"].append({"name": "raw", "type": "INT", "accessMode": "ReadWrite"})
    docs[1]["spec"]["properties"].append(
        {
            "name": "raw",
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": "HoldingRegister", "offset": 9, "dataType": "int16"},
            },
        }
    )
    await modbus_tcp_server.set_holding(1, 0, [200])
    result_topic = device_topic(TopicKind.TWIN_UPDATE_RESULT, namespace, name)
    async with running_edge(mosquitto, node, tmp_path / "twin.db", docs), running_mapper(mosquitto, node):
        await wait_actual(probe, namespace, name, "setpoint", "20.0")

        # Above the model's maximum: the edge stores it, the mapper refuses to write it.
        set_expected(probe, namespace, name, "setpoint", "40")
        refusal = await probe.wait_message_async(result_topic, lambda m: m.json().get("code") == 400)
        body = refusal.json()
        assert body["property"] == "setpoint"
        assert "above the maximum 35" in body["reason"]

        # Does not fit an int16 register.
        set_expected(probe, namespace, name, "raw", "40000")
        refusal = await probe.wait_message_async(result_topic, lambda m: m.json().get("property") == "raw")
        assert refusal.json()["code"] == 400
        assert "out of range -32768..32767" in refusal.json()["reason"]

        # Wrong type: an edge would refuse "warm" for a float twin, so send the delta as an edge would.
        delta = {"event_id": "delta-1", "timestamp": 0, "twin": {}, "delta": {"setpoint": "warm"}}
        probe.publish(device_topic(TopicKind.TWIN_UPDATE_DELTA, namespace, name), delta)
        refusal = await probe.wait_message_async(
            result_topic, lambda m: m.json().get("event_id") == "delta-1"
        )
        assert refusal.json()["code"] == 400
        assert refusal.json()["property"] == "setpoint"
        assert "not a number" in refusal.json()["reason"]

        # ReadOnly in the model.
        set_expected(probe, namespace, name, "temperature", "30")
        refusal = await probe.wait_message_async(
            result_topic, lambda m: m.json().get("property") == "temperature"
        )
        assert "ReadOnly" in refusal.json()["reason"]

        assert await modbus_tcp_server.get_holding(1, 0) == [200]
        assert await modbus_tcp_server.get_holding(1, 9) == [0]


def _samples(registry: CollectorRegistry, name: str, device: str) -> float:
    return registry.get_sample_value(name, {"device": device}) or 0.0


async def test_two_rtu_devices_keep_their_cycles_while_a_tcp_device_is_dead(
    modbus_rtu_server: ModbusRtuSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    dead = ModbusTcpSimulator((1,))
    meter = [Prop("energy", "INT", "HoldingRegister", 0, data_type="uint32", is_register_swap=True)]
    line_a = documents(namespace, "meter-a", modbus_rtu_server.config_data(1), meter)
    line_b = documents(namespace, "meter-b", modbus_rtu_server.config_data(2), meter)
    remote = documents(namespace, "remote", dead.config_data(1), meter)
    await modbus_rtu_server.set_holding(1, 0, [0x0001, 0x0000])  # 1 (word order swapped)
    await modbus_rtu_server.set_holding(2, 0, [0x0002, 0x0000])
    registry = CollectorRegistry()
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", line_a, line_b, remote),
        running_mapper(mosquitto, node, registry=registry),
    ):
        await wait_state(probe, namespace, "remote", "offline")
        await wait_actual(probe, namespace, "meter-a", "energy", "1")
        await wait_actual(probe, namespace, "meter-b", "energy", "2")

        # While the TCP device is dead (and retried), both devices of the RTU line keep their 100 ms cycle.
        devices = [f"{namespace}/meter-a", f"{namespace}/meter-b"]
        before = {device: _samples(registry, "edgetwin_mapper_polls_total", device) for device in devices}
        retries = _errors(registry, f"{namespace}/remote")
        started = time.monotonic()
        await wait_for(
            lambda: all(
                _samples(registry, "edgetwin_mapper_polls_total", d) >= before[d] + 5 for d in devices
            ),
            timeout=5.0,
            what="5 more polls of each RTU device",
        )
        assert time.monotonic() - started < 1.5  # 5 cycles of 100 ms, not stalled behind the dead device
        assert _errors(registry, f"{namespace}/remote") > retries
        await modbus_rtu_server.set_holding(2, 0, [0x0003, 0x0001])  # 65539
        await wait_actual(probe, namespace, "meter-b", "energy", "65539")

        # The dead device comes back: online again, and its value reaches the twin.
        async with dead:
            await dead.set_holding(1, 0, [0x0007, 0x0000])
            await wait_state(probe, namespace, "remote", "online")
            await wait_actual(probe, namespace, "remote", "energy", "7")


def _errors(registry: CollectorRegistry, device: str) -> float:
    return (
        registry.get_sample_value(
            "edgetwin_mapper_errors_total", {"device": device, "kind": "DeviceUnreachableError"}
        )
        or 0.0
    )


async def test_rtu_device_goes_offline_when_the_line_is_silent_and_back_online(
    modbus_rtu_server: ModbusRtuSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name = unique("ns"), "meter"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = documents(
        namespace, name, modbus_rtu_server.config_data(1), [Prop("energy", "INT", "InputRegister", 0)]
    )
    path = tmp_path / "devices.yaml"
    path.write_text(json.dumps(docs[0]) + "\n---\n" + json.dumps(docs[1]))
    configs, _ = load_device_configs(path, node=None, protocol="modbus")
    state_topic = device_topic(TopicKind.STATE_UPDATE, namespace, name)
    async with running_mapper(mosquitto, unique("node"), devices=configs):
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "online")
        await modbus_rtu_server.stop()  # requests on the line go unanswered: timeouts
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "offline")
        await modbus_rtu_server.start()
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "online")


async def test_devices_come_and_go_with_membership(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    first = thermostat(namespace, "first", modbus_tcp_server.config_data(1))
    second = thermostat(namespace, "second", modbus_tcp_server.config_data(2))
    await modbus_tcp_server.set_inputs(1, 0, [100])
    await modbus_tcp_server.set_inputs(2, 0, [200])
    # KubeEdge #5021: a device the edge knew before the mapper started is driven.
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", first) as twin,
        running_mapper(mosquitto, node) as mapper,
    ):
        await wait_actual(probe, namespace, "first", "temperature", "10.0")

        await twin.upsert_device(twin_device(second))
        await wait_actual(probe, namespace, "second", "temperature", "20.0")

        # KubeEdge #6269: state changes and membership news about other devices never recreate a device
        # (each (re)creation asks the twin for desired values once).
        await modbus_tcp_server.stop()
        await wait_state(probe, namespace, "first", "offline")
        await modbus_tcp_server.start()
        await wait_state(probe, namespace, "first", "online")
        await twin.remove_device(f"{namespace}/second")
        await wait_for(lambda: f"{namespace}/second" not in mapper.devices, what="second removed")
        twin_gets = probe.received(device_topic(TopicKind.TWIN_GET, namespace, "first"))
        # The test's own twin/get requests carry timestamp 0; the mapper's carry the time.
        assert len([get for get in twin_gets if get.json()["timestamp"] > 0]) == 1


async def test_exception_responses_make_the_device_unhealthy_not_dead(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name, node = unique("ns"), "sparse", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    # The simulator has 128 registers: 126 exists, 130 does not. Close enough to be read in one request.
    props = [
        Prop("inside", "INT", "HoldingRegister", 126, data_type="uint16"),
        Prop("outside", "INT", "HoldingRegister", 130, data_type="uint16"),
    ]
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    await modbus_tcp_server.set_holding(1, 126, [42])
    registry = CollectorRegistry()
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, registry=registry),
    ):
        await wait_state(probe, namespace, name, "unhealthy")
        await wait_actual(probe, namespace, name, "inside", "42")
        assert await twin_actual(probe, namespace, name, "outside") is None
        errors = registry.get_sample_value(
            "edgetwin_mapper_errors_total", {"device": f"{namespace}/{name}", "kind": "ModbusExceptionError"}
        )
        assert errors is not None
        assert errors >= 1


async def test_coalesced_reads_one_request_per_block(
    modbus_tcp_server: ModbusTcpSimulator, mosquitto: MosquittoBroker, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "many", unique("node")
    # 50 properties in three clusters: 0-19, 40-59 (gap 20 > 10), 80-89 (gap 20): three requests per poll.
    offsets = [*range(20), *range(40, 60), *range(80, 90)]
    props = [
        Prop(f"r{offset}", "INT", "HoldingRegister", offset, data_type="uint16", collect_ms=50)
        for offset in offsets
    ]
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    path = tmp_path / "devices.yaml"
    path.write_text(json.dumps(docs[0]) + "\n---\n" + json.dumps(docs[1]))
    configs, refused = load_device_configs(path, node=None, protocol="modbus")
    assert not refused
    registry = CollectorRegistry()
    device = f"{namespace}/{name}"
    async with running_mapper(mosquitto, node, registry=registry, devices=configs):
        await wait_for(
            lambda: _samples(registry, "edgetwin_mapper_polls_total", device) >= 10, what="10 polls"
        )
    polls = _samples(registry, "edgetwin_mapper_polls_total", device)
    requests = registry.get_sample_value("edgetwin_mapper_request_seconds_count", {"device": device}) or 0.0
    assert 3 * polls <= requests < 3 * (polls + 1)


async def test_membership_device_with_a_bad_spec_is_refused_with_the_field(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    bad = thermostat(namespace, "bad", modbus_tcp_server.config_data(1))
    bad[1]["spec"]["properties"][1]["visitors"]["configData"]["register"] = "HoldRegister"
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", bad),
        running_mapper(mosquitto, node) as mapper,
    ):
        await wait_state(probe, namespace, "bad", "unhealthy")
        reason = mapper.refused[f"{namespace}/bad"]
        assert "spec.properties[name=setpoint].visitors.configData.register" in reason
        assert "HoldRegister" in reason

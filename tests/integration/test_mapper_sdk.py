"""The mapper SDK's behaviour over MQTT, with the Modbus plugin on a real device and a real broker: report
on change and on ``reportCycle``, data push, write-once of a repeated desired value, refused devices, and
no rate limit between devices and the broker (KubeEdge #5892).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from edgetwin.testing import wait_for
from edgetwin.testing.modbus import ModbusTcpSimulator
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import MosquittoBroker, TopicKind
from mappers.sdk import DeviceConfig, load_device_configs
from tests.fixtures.mqtt import ProbeFactory
from tests.integration.test_modbus_mapper import Prop, device_topic, documents, running_mapper, unique


def configs(tmp_path: Path, *devices: list[dict[str, Any]]) -> list[DeviceConfig]:
    """Devices as the mapper's ``--devices`` would load them."""
    path = tmp_path / "devices.yaml"
    path.write_text("\n---\n".join(json.dumps(doc) for docs in devices for doc in docs))
    loaded, refused = load_device_configs(path, node=None, protocol="modbus")
    assert not refused
    return loaded


def reports(probe: MqttProbe, namespace: str, name: str, prop: str) -> list[str]:
    """The values of ``prop`` the mapper reported on ``twin/update``, in order."""
    topic = device_topic(TopicKind.TWIN_UPDATE, namespace, name)
    return [
        message.json()["twin"][prop]["actual"]["value"]
        for message in probe.received(topic)
        if prop in message.json()["twin"]
    ]


def polls(registry: CollectorRegistry, device: str) -> float:
    return registry.get_sample_value("edgetwin_mapper_polls_total", {"device": device}) or 0.0


async def test_values_are_reported_on_change_and_on_report_cycle(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name = unique("ns"), "meter"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    props = [
        Prop("changes", "INT", "HoldingRegister", 0, data_type="uint16", collect_ms=20),
        Prop("heartbeat", "INT", "HoldingRegister", 1, data_type="uint16", collect_ms=20, report_ms=100),
    ]
    registry = CollectorRegistry()
    device = f"{namespace}/{name}"
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    async with running_mapper(mosquitto, unique("node"), registry=registry, devices=configs(tmp_path, docs)):
        await wait_for(
            lambda: len(reports(probe, namespace, name, "heartbeat")) >= 4, what="4 heartbeat reports"
        )
        # Meanwhile: many polls, yet the unchanged value without reportCycle was reported once.
        assert polls(registry, device) >= 10
        assert reports(probe, namespace, name, "changes") == ["0"]
        assert set(reports(probe, namespace, name, "heartbeat")) == {"0"}

        await modbus_tcp_server.set_holding(1, 0, [7])
        await wait_for(
            lambda: reports(probe, namespace, name, "changes") == ["0", "7"], what="the change reported"
        )


async def test_readings_pushed_on_the_data_topic(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name = unique("ns"), "pusher"
    probe = mqtt_probe(f"$ke/events/device/{namespace}/#")
    await modbus_tcp_server.set_holding(1, 0, [215])
    props = [Prop("temperature", "FLOAT", "HoldingRegister", 0, data_type="float", limit=1, scale=0.1)]
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    async with running_mapper(mosquitto, unique("node"), devices=configs(tmp_path, docs), push_data=True):
        message = await probe.wait_message_async(device_topic(TopicKind.DATA_UPDATE, namespace, name))
    body = message.json()
    assert body["event_id"]
    assert body["timestamp"] > 0
    data = body["data"]["temperature"]
    assert data["value"] == "21.5"
    assert data["metadata"]["type"] == "float"
    assert data["metadata"]["timestamp"] > 0


async def test_a_repeated_desired_value_is_written_once(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name = unique("ns"), "valve"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    # 21.55 with scale 0.1 becomes 216 and reads back as 21.6: the edge keeps sending its delta.
    props = [Prop("setpoint", "FLOAT", "HoldingRegister", 0, data_type="float", limit=1, scale=0.1)]
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    registry = CollectorRegistry()
    device = f"{namespace}/{name}"
    delta_topic = device_topic(TopicKind.TWIN_UPDATE_DELTA, namespace, name)
    async with running_mapper(mosquitto, unique("node"), registry=registry, devices=configs(tmp_path, docs)):
        await probe.wait_message_async(device_topic(TopicKind.STATE_UPDATE, namespace, name))
        for event in ("d1", "d2", "d3"):
            probe.publish(
                delta_topic, {"event_id": event, "timestamp": 0, "twin": {}, "delta": {"setpoint": "21.55"}}
            )
        await wait_for(lambda: "21.6" in reports(probe, namespace, name, "setpoint"), what="read back")
        await modbus_tcp_server.set_holding(1, 0, [0])  # someone changes it at the device...
        probe.publish(
            delta_topic, {"event_id": "d4", "timestamp": 0, "twin": {}, "delta": {"setpoint": "21.55"}}
        )
        await wait_for(
            lambda: reports(probe, namespace, name, "setpoint")[-1] == "0.0", what="the change reported"
        )
        # ...the same desired value is not forced again; a new one is written.
        assert registry.get_sample_value("edgetwin_mapper_writes_total", {"device": device}) == 1
        probe.publish(
            delta_topic, {"event_id": "d5", "timestamp": 0, "twin": {}, "delta": {"setpoint": "19"}}
        )
        await wait_for(
            lambda: registry.get_sample_value("edgetwin_mapper_writes_total", {"device": device}) == 2,
            what="second write",
        )
        assert await modbus_tcp_server.get_holding(1, 0) == [190]


async def test_a_device_that_cannot_be_driven_is_refused_with_the_field(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace = unique("ns")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    good = documents(
        namespace, "good", modbus_tcp_server.config_data(1), [Prop("v", "INT", "InputRegister", 0)]
    )
    bad = documents(
        namespace, "bad", modbus_tcp_server.config_data(2), [Prop("v", "INT", "InputRegister", 0, limit=3)]
    )
    async with running_mapper(mosquitto, unique("node"), devices=configs(tmp_path, good, bad)) as mapper:
        state = await probe.wait_message_async(device_topic(TopicKind.STATE_UPDATE, namespace, "bad"))
        assert state.json()["state"] == "unhealthy"
        reason = mapper.refused[f"{namespace}/bad"]
        assert "spec.properties[name=v].visitors.configData.limit" in reason
        assert "int takes 1 or 2 or 4 register(s)" in reason
        await probe.wait_message_async(
            device_topic(TopicKind.STATE_UPDATE, namespace, "good"), lambda m: m.json()["state"] == "online"
        )


async def test_no_rate_limit_between_devices_and_broker(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    """KubeEdge #5892: a 1 request/s limiter made fast cycles fail. Here 20 devices x 10 ms cycles all run."""
    namespace = unique("ns")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    slaves = (1, 2)
    devices = [
        documents(
            namespace,
            f"d{i}",
            modbus_tcp_server.config_data(slaves[i % 2]),
            [Prop("v", "INT", "HoldingRegister", i, collect_ms=10)],
        )
        for i in range(20)
    ]
    for i in range(20):
        await modbus_tcp_server.set_holding(slaves[i % 2], i, [i])
    registry = CollectorRegistry()
    async with running_mapper(
        mosquitto, unique("node"), registry=registry, devices=configs(tmp_path, *devices)
    ):
        await wait_for(
            lambda: all(polls(registry, f"{namespace}/d{i}") >= 20 for i in range(20)),
            timeout=5.0,
            what="20 polls of every device",
        )
        for i in (0, 19):
            await modbus_tcp_server.set_holding(slaves[i % 2], i, [100 + i])
        await wait_for(
            lambda: (
                reports(probe, namespace, "d19", "v")[-1:] == ["119"]
                and reports(probe, namespace, "d0", "v")[-1:] == ["100"]
            ),
            what="changes of two devices reported",
        )


async def test_properties_sharing_a_register_on_different_cycles(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, name = unique("ns"), "twins"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    await modbus_tcp_server.set_holding(1, 3, [0xFFFF])
    props = [
        Prop("signed", "INT", "HoldingRegister", 3, data_type="int16", collect_ms=20),
        Prop("unsigned", "INT", "HoldingRegister", 3, data_type="uint16", collect_ms=30),
    ]
    docs = documents(namespace, name, modbus_tcp_server.config_data(1), props)
    async with running_mapper(mosquitto, unique("node"), devices=configs(tmp_path, docs)):
        await wait_for(lambda: reports(probe, namespace, name, "signed") == ["-1"], what="signed reported")
        await wait_for(
            lambda: reports(probe, namespace, name, "unsigned") == ["65535"], what="unsigned reported"
        )

"""The BLE mapper end to end: bleak against an emulated BlueZ (bluezoo on a private dbus-daemon) with a
thermometer peripheral, real mosquitto, the real DeviceTwin, and an outside app (the probe) that sees only
what a KubeEdge app would see over MQTT.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from device_models import Device, DeviceModel, parse_document
from edgetwin.testing import wait_for
from edgetwin.testing.ble import LED_UUID, TEMPERATURE_UUID, BleStack, Thermometer
from eventbus import BrokerSettings, MosquittoBroker, TopicKind
from mappers.ble import BleProtocol, BleSettings
from mappers.sdk import BackoffPolicy, DeviceConfig, Mapper, device_config, read_once
from tests.fixtures.mqtt import ProbeFactory
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
RECONNECT = BackoffPolicy(minimum=0.1, maximum=0.8)
SETTINGS = BleSettings(scan_timeout=3.0, connect_timeout=3.0, timeout=2.0)
HUNDREDTHS = {
    "startIndex": 1,
    "endIndex": 0,
    "orderOfOperations": [{"operationType": "Multiply", "operationValue": 0.01}],
}
ON_OFF = {"ON": "01", "OFF": "00"}


@dataclass(frozen=True)
class Prop:
    """A property of a test device: model side (type, access), visitor side (characteristic, conversion)."""

    name: str
    type: str
    uuid: str
    access: str = "ReadWrite"
    converter: dict[str, Any] | None = None
    data_write: dict[str, str] = field(default_factory=dict)
    collect_ms: int = 100


def documents(namespace: str, name: str, mac: str, props: Sequence[Prop]) -> list[dict[str, Any]]:
    """A v1beta1 DeviceModel and Device (YAML-shaped dicts) of a BLE device."""
    visitors = []
    for prop in props:
        config: dict[str, Any] = {"characteristicUUID": prop.uuid}
        if prop.converter is not None:
            config["dataConverter"] = prop.converter
        if prop.data_write:
            config["dataWrite"] = prop.data_write
        visitors.append(
            {
                "name": prop.name,
                "collectCycle": prop.collect_ms,
                "visitors": {"protocolName": "ble", "configData": config},
            }
        )
    model = {
        "apiVersion": API,
        "kind": "DeviceModel",
        "metadata": {"name": f"{name}-model", "namespace": namespace},
        "spec": {
            "protocol": "ble",
            "properties": [{"name": p.name, "type": p.type, "accessMode": p.access} for p in props],
        },
    }
    device = {
        "apiVersion": API,
        "kind": "Device",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "deviceModelRef": {"name": f"{name}-model"},
            "protocol": {"protocolName": "ble", "configData": {"macAddress": mac}},
            "properties": visitors,
        },
    }
    return [model, device]


def thermometer_docs(namespace: str, name: str, mac: str) -> list[dict[str, Any]]:
    """The example thermometer: temperature (hundredths, little-endian) and an ON/OFF LED."""
    return documents(
        namespace,
        name,
        mac,
        [
            Prop("temperature", "FLOAT", "2a6e", access="ReadOnly", converter=HUNDREDTHS),
            Prop("led", "STRING", LED_UUID, data_write=ON_OFF),
        ],
    )


@contextlib.asynccontextmanager
async def running_mapper(
    broker: MosquittoBroker, node: str, plugin: BleProtocol, devices: Sequence[DeviceConfig] | None = None
) -> AsyncIterator[Mapper]:
    """The BLE mapper, in this process, reconnecting fast."""
    mapper = Mapper(plugin, BrokerSettings(url=broker.url), node=node, devices=devices, reconnect=RECONNECT)
    await mapper.start()
    try:
        yield mapper
    finally:
        await mapper.stop()


async def test_notified_and_polled_values_reach_the_twin_after_the_converter(
    thermometer: Thermometer, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "thermometer", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = thermometer_docs(namespace, name, thermometer.address)
    plugin = BleProtocol(SETTINGS)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin),
    ):
        # Read once when subscribed: 21.5 degrees are 2150 hundredths, 66 08 on the air.
        await wait_actual(probe, namespace, name, "temperature", "21.5")
        await wait_state(probe, namespace, name, "online")
        reads = thermometer.temperature_reads

        changed = time.monotonic()
        await thermometer.set_temperature(23.5)
        await wait_actual(probe, namespace, name, "temperature", "23.5")
        # Notified, not polled: the characteristic was not read again.
        assert thermometer.temperature_reads == reads
        assert time.monotonic() - changed < 2.0

        await thermometer.set_led(b"\x01")  # the LED does not notify: its collect cycle reads it
        await wait_actual(probe, namespace, name, "led", "ON")
    assert plugin.finder.scans == 1


async def test_a_desired_value_is_written_as_its_mapped_bytes(
    thermometer: Thermometer, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "thermometer", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = thermometer_docs(namespace, name, thermometer.address)
    result_topic = device_topic(TopicKind.TWIN_UPDATE_RESULT, namespace, name)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, BleProtocol(SETTINGS)),
    ):
        await wait_actual(probe, namespace, name, "led", "OFF")
        set_expected(probe, namespace, name, "led", "ON")
        await thermometer.wait_led_write(b"\x01")
        await wait_actual(probe, namespace, name, "led", "ON")

        set_expected(probe, namespace, name, "led", "BLINK")
        # Answered with the delta's event id (the edge gives each delta its own).
        answer = await probe.wait_message_async(
            result_topic, lambda m: m.json().get("property") == "led" and "code" in m.json()
        )
        body = answer.json()
        assert (body["code"], body["property"]) == (400, "led")
        assert "is not one of the values of dataWrite (ON, OFF)" in body["reason"]
    assert thermometer.led_writes == [b"\x01"]


async def test_a_device_that_disappears_goes_offline_without_a_busy_loop_and_comes_back(
    thermometer: Thermometer, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "thermometer", unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    docs = thermometer_docs(namespace, name, thermometer.address)
    plugin = BleProtocol(SETTINGS)
    device = f"{namespace}/{name}"
    state_topic = device_topic(TopicKind.STATE_UPDATE, namespace, name)
    async with (
        running_edge(mosquitto, node, tmp_path / "twin.db", docs),
        running_mapper(mosquitto, node, plugin),
    ):
        await wait_actual(probe, namespace, name, "temperature", "21.5")
        await wait_state(probe, namespace, name, "online")

        await thermometer.disappear()
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "offline")
        gone, attempts = time.monotonic(), plugin.attempts[device]
        await wait_for(lambda: plugin.attempts[device] >= attempts + 5, what="five reconnection attempts")
        # Delays of at least half of 0.1, 0.2, 0.4, 0.8, 0.8 s (backoff with jitter) lie between them.
        assert time.monotonic() - gone >= 0.05 + 0.1 + 0.2 + 0.4 + 0.4 - 0.05

        await thermometer.set_temperature(19.25)  # changed while away: read again on reconnection
        await thermometer.reappear()
        await probe.wait_message_async(state_topic, lambda m: m.json()["state"] == "online")
        await wait_actual(probe, namespace, name, "temperature", "19.25")
        await thermometer.set_temperature(18.0)  # notified on the new connection
        await wait_actual(probe, namespace, name, "temperature", "18.0")
    assert plugin.finder.scans == 1  # the device was remembered, not searched for again


async def test_bad_configuration_names_the_property(thermometer: Thermometer) -> None:
    props = [
        Prop("temperature", "FLOAT", TEMPERATURE_UUID, access="ReadOnly", converter=HUNDREDTHS),
        Prop("humidity", "FLOAT", "2a6f", access="ReadOnly"),
        Prop("wide", "INT", TEMPERATURE_UUID, access="ReadOnly", converter={"startIndex": 3, "endIndex": 0}),
    ]
    model, device = (parse_document(doc) for doc in documents("default", "bad", thermometer.address, props))
    assert isinstance(model, DeviceModel)
    assert isinstance(device, Device)
    rows = await read_once(BleProtocol(SETTINGS), [device_config(device, model)])

    errors = {row.property: row.error for row in rows}
    assert errors["temperature"] is None
    assert errors["humidity"] == (
        "the device has no characteristic 00002a6f-0000-1000-8000-00805f9b34fb "
        "(visitors.configData.characteristicUUID); `edgetwin mapper ble gatt ADDRESS` lists the ones it has"
    )
    assert errors["wide"] == (
        f"characteristic {TEMPERATURE_UUID}: 6608: dataConverter indices 3..0 are outside the 2-byte value "
        "(valid indices 0..1)"
    )


async def test_a_device_named_instead_of_addressed_is_found_by_its_advertised_name(
    ble_stack: BleStack, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, name, node = unique("ns"), "thermometer", unique("node")
    advertised = unique("thermo")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    async with Thermometer(ble_stack, name=advertised, celsius=19.25) as device:
        docs = thermometer_docs(namespace, name, device.address)
        del docs[1]["spec"]["protocol"]["configData"]["macAddress"]
        docs[1]["spec"]["protocol"]["configData"]["deviceName"] = advertised
        plugin = BleProtocol(SETTINGS)
        async with (
            running_edge(mosquitto, node, tmp_path / "twin.db", docs),
            running_mapper(mosquitto, node, plugin),
        ):
            await wait_actual(probe, namespace, name, "temperature", "19.25")
            await wait_state(probe, namespace, name, "online")

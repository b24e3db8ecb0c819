"""``edgetwin mapper ble`` (``scan``, ``gatt``, ``--once``, the mapper process) as a user runs them: separate
processes on the emulated BlueZ, against a thermometer that keeps serving on the test's event loop."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from edgetwin.testing.ble import ENVIRONMENT_SERVICE, LED_UUID, TEMPERATURE_UUID, BleStack, Thermometer
from eventbus import MosquittoBroker, TopicKind
from tests.fixtures.mqtt import ProbeFactory
from tests.integration.test_ble_mapper import Prop, documents, thermometer_docs
from tests.integration.test_modbus_mapper import device_topic, unique
from tests.integration.test_modbus_mapper_cli import EDGETWIN, run, write_devices

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_scan_lists_address_name_rssi_and_services(
    thermometer: Thermometer, ble_stack: BleStack
) -> None:
    assert os.environ["DBUS_SYSTEM_BUS_ADDRESS"] == ble_stack.address  # the CLI inherits the emulated bus
    code, out, err = await run("mapper", "ble", "scan", "--timeout", "1.5")

    assert code == 0, err
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["ADDRESS", "NAME", "RSSI", "SERVICES"]
    assert [thermometer.address, thermometer.name, "0", ENVIRONMENT_SERVICE] in rows


async def test_gatt_lists_characteristics_with_their_properties(thermometer: Thermometer) -> None:
    code, out, err = await run("mapper", "ble", "gatt", thermometer.address.lower(), "--timeout", "3")

    assert code == 0, err
    header, *rows = [line.split(maxsplit=4) for line in out.splitlines()]
    assert header == ["SERVICE", "CHARACTERISTIC", "HANDLE", "PROPERTIES", "DESCRIPTION"]
    table = {row[1]: (row[0], row[3]) for row in rows}
    assert table[TEMPERATURE_UUID] == (ENVIRONMENT_SERVICE, "read,notify")
    assert table[LED_UUID] == (ENVIRONMENT_SERVICE, "read,write")


async def test_gatt_of_a_device_not_around_says_so() -> None:
    code, _out, err = await run("mapper", "ble", "gatt", "00:00:00:00:EE:EE", "--timeout", "0.5")
    assert code == 1
    assert "00:00:00:00:EE:EE" in err
    assert "not found by a 0.5s scan on hci0" in err


async def test_once_prints_every_property_or_its_error(thermometer: Thermometer, tmp_path: Path) -> None:
    docs = documents(
        "default",
        "thermometer",
        thermometer.address,
        [
            Prop(
                "temperature", "FLOAT", "2a6e", access="ReadOnly", converter={"startIndex": 1, "endIndex": 0}
            ),
            Prop("humidity", "FLOAT", "2a6f", access="ReadOnly"),
        ],
    )
    path = write_devices(tmp_path / "devices.yaml", docs)
    code, out, err = await run("mapper", "ble", "--once", "--devices", str(path), "--scan-timeout", "3")

    rows = {prop: value for _device, prop, value in (line.split(maxsplit=2) for line in out.splitlines()[1:])}
    assert rows["temperature"] == "2150"  # 66 08 on the air, bytes 1 then 0: 0x0866, no operations
    assert rows["humidity"].startswith("ERROR: the device has no characteristic 00002a6f-")
    assert code == 1, err


async def test_malformed_mac_address_names_the_field(tmp_path: Path) -> None:
    path = write_devices(tmp_path / "devices.yaml", thermometer_docs("default", "t", "A4:C1:38:0D:7E"))
    code, _out, err = await run("mapper", "ble", "--once", "--devices", str(path))
    assert "spec.protocol.configData.macAddress" in err
    assert "is not a MAC address" in err
    assert code != 0


async def test_mapper_process_reports_and_stops_on_sigterm(
    thermometer: Thermometer, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    path = write_devices(tmp_path / "devices.yaml", thermometer_docs(namespace, "t", thermometer.address))
    process = await asyncio.create_subprocess_exec(
        EDGETWIN,
        "mapper",
        "ble",
        "--broker",
        mosquitto.url,
        "--node",
        node,
        "--devices",
        str(path),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    update = device_topic(TopicKind.TWIN_UPDATE, namespace, "t")
    try:
        await probe.wait_message_async(
            update, lambda m: m.json()["twin"].get("temperature", {}).get("actual", {}).get("value") == "21.5"
        )
        await thermometer.set_temperature(22.75)  # notified
        await probe.wait_message_async(
            update,
            lambda m: m.json()["twin"].get("temperature", {}).get("actual", {}).get("value") == "22.75",
        )
        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert code == 0
    assert process.stderr is not None
    assert "ble mapper stopped" in (await process.stderr.read()).decode()

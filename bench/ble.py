"""BLE mapper figures through the emulated stack (bluezoo's BlueZ on a private dbus-daemon); prints JSON.

Setup: one :class:`~edgetwin.testing.ble.Thermometer` peripheral (dbus-fast, in this process) on bluezoo.

* ``raw``: a plain bleak client reading the temperature characteristic in a loop (reads/s, sequential round
  trips through bleak → D-Bus → bluezoo → the peripheral and back), the ceiling of what one connection can
  poll here;
* ``driver``: the mapper's own driver (``mappers.ble.BleDriver.read_many``) doing the same, with the
  converter applied: what the SDK's collect cycles can get;
* ``notify``: the mapper as a user runs it (``edgetwin mapper ble``, its own process) with the real
  DeviceTwin and mosquitto: the peripheral changes its temperature every 20 ms, each time to a new value;
  the latency of a change is the time from the peripheral setting it to the twin's ``twin/update/document``
  carrying it (received by a plain paho client), p50 / p99 / max; and the mapper process's RSS.

Figures are of the emulation (every hop is a D-Bus message between local processes), not of a radio: a real
adapter's connection interval (7.5 ms and up) bounds reads and notifications instead.
Run: ``.venv/bin/python bench/ble.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from bleak import BleakClient
from paho.mqtt.enums import CallbackAPIVersion

from devicetwin import DeviceTwin, TwinDevice, TwinProperty, TwinStore
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.ble import CENTRAL_ADAPTER, TEMPERATURE_UUID, BleStack, Thermometer
from eventbus import BrokerSettings, MosquittoBroker, MqttClient
from mappers.ble import BleProtocol, BleSettings
from mappers.sdk import load_device_configs

READ_SECONDS = 3.0
CHANGES = 150
CHANGE_PERIOD = 0.02
NAMESPACE, NAME, NODE = "bench", "thermometer", "bench-node"
EDGETWIN = str(Path(sys.executable).with_name("edgetwin"))


def documents(address: str) -> list[dict[str, Any]]:
    """The thermometer's DeviceModel and Device: temperature in hundredths, little-endian, x 0.01."""
    api = "devices.kubeedge.io/v1beta1"
    converter = {
        "startIndex": 1,
        "endIndex": 0,
        "orderOfOperations": [{"operationType": "Multiply", "operationValue": 0.01}],
    }
    return [
        {
            "apiVersion": api,
            "kind": "DeviceModel",
            "metadata": {"name": "thermometer-model", "namespace": NAMESPACE},
            "spec": {"protocol": "ble", "properties": [{"name": "temperature", "type": "FLOAT"}]},
        },
        {
            "apiVersion": api,
            "kind": "Device",
            "metadata": {"name": NAME, "namespace": NAMESPACE},
            "spec": {
                "deviceModelRef": {"name": "thermometer-model"},
                "protocol": {"protocolName": "ble", "configData": {"macAddress": address}},
                "properties": [
                    {
                        "name": "temperature",
                        "collectCycle": 1000,
                        "visitors": {
                            "protocolName": "ble",
                            "configData": {"characteristicUUID": "2a6e", "dataConverter": converter},
                        },
                    }
                ],
            },
        },
    ]


async def raw_reads_per_second(thermometer: Thermometer) -> float:
    """Sequential bleak reads of one characteristic."""
    client = BleakClient(thermometer.address, bluez={"adapter": CENTRAL_ADAPTER})
    await client.connect()
    try:
        count, end = 0, time.perf_counter() + READ_SECONDS
        while time.perf_counter() < end:
            await client.read_gatt_char(TEMPERATURE_UUID)
            count += 1
    finally:
        await client.disconnect()
    return count / READ_SECONDS


async def driver_reads_per_second(path: Path) -> float:
    """Sequential ``read_many`` calls of the mapper's driver (read, then the converter)."""
    configs, _refused = load_device_configs(path, node=None, protocol="ble")
    device = configs[0]
    driver = BleProtocol(BleSettings()).create_driver(device, lambda _seconds: None)
    await driver.connect()
    try:
        count, end = 0, time.perf_counter() + READ_SECONDS
        while time.perf_counter() < end:
            await driver.read_many(device.properties)
            count += 1
    finally:
        await driver.close()
    return count / READ_SECONDS


class Documents:
    """A paho subscriber (its own thread) stamping each reported temperature with its arrival time."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.arrivals: dict[str, float] = {}
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe(f"$hw/events/device/{NAMESPACE}/{NAME}/twin/update/document", qos=1)
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        arrived = time.perf_counter()
        entry = json.loads(message.payload)["twin"].get("temperature") or {}
        value = ((entry.get("current") or {}).get("actual") or {}).get("value")
        if value is not None:
            with self._lock:
                self.arrivals.setdefault(f"{float(value):.2f}", arrived)

    def seen(self, value: str) -> bool:
        with self._lock:
            return value in self.arrivals

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def rss_mb(pid: int) -> float:
    """Resident memory of a process, MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def notify_run(stack: BleStack, thermometer: Thermometer, path: Path, workdir: Path) -> dict[str, Any]:
    """Changes on the peripheral, measured at the twin, through a mapper process."""
    async with MosquittoBroker(free_port(), workdir=workdir / "mosquitto") as broker:
        store = await TwinStore.open(workdir / "twin.db")
        client = MqttClient(BrokerSettings(url=broker.url))
        twin = DeviceTwin(store, client, NODE)
        listener = Documents(broker)
        process = None
        try:
            await client.start()
            await twin.start()
            await twin.upsert_device(
                TwinDevice(NAMESPACE, NAME, properties=[TwinProperty("temperature", type="float")])
            )
            process = await asyncio.create_subprocess_exec(
                EDGETWIN,
                "mapper",
                "ble",
                "--broker",
                broker.url,
                "--node",
                NODE,
                "--devices",
                str(path),
                "--log-level",
                "warning",
                env={**os.environ, **stack.env},
            )
            await wait_for(lambda: listener.seen("21.50"), timeout=30, what="the first reported value")
            changed: dict[str, float] = {}
            for index in range(1, CHANGES + 1):
                value = index / 100
                changed[f"{value:.2f}"] = time.perf_counter()
                await thermometer.set_temperature(value)
                await asyncio.sleep(CHANGE_PERIOD)
            last = f"{CHANGES / 100:.2f}"
            await wait_for(lambda: listener.seen(last), timeout=10, what="the last change at the twin")
            rss = rss_mb(process.pid)
        finally:
            listener.close()
            if process is not None and process.returncode is None:
                process.terminate()
                await process.wait()
            await twin.stop()
            await client.stop()
            await store.close()
    latencies = sorted(
        (listener.arrivals[value] - at) * 1000 for value, at in changed.items() if value in listener.arrivals
    )
    return {
        "changes": CHANGES,
        "changes_at_twin": len(latencies),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
            "max": round(latencies[-1], 1),
        },
        "mapper_rss_mb": round(rss, 1),
    }


async def run(stack: BleStack, workdir: Path) -> dict[str, Any]:
    """All the figures, with one thermometer."""
    async with Thermometer(stack) as thermometer:
        path = workdir / "devices.yaml"
        path.write_text(yaml.safe_dump_all(documents(thermometer.address)))
        raw = await raw_reads_per_second(thermometer)
        driver = await driver_reads_per_second(path)
        notify = await notify_run(stack, thermometer, path, workdir)
    return {
        "raw_bleak_reads_per_s": round(raw, 1),
        "mapper_driver_reads_per_s": round(driver, 1),
        "driver_vs_raw": round(driver / raw, 2),
        "notification_to_twin": notify,
        "goals": {
            "driver reads": ">= 0.8 x raw bleak reads (the converter and the SDK's bookkeeping are cheap)",
            "notification latency": "p99 well under a collect cycle: notifications are reported at once",
        },
    }


def main() -> None:
    """Run the whole bench and print the figures as JSON."""
    with tempfile.TemporaryDirectory(prefix="ble-bench-") as tmp, BleStack() as stack:
        os.environ.update(stack.env)  # bleak in this process (raw and driver reads) uses the emulated bus
        print(json.dumps(asyncio.run(run(stack, Path(tmp))), indent=2))


if __name__ == "__main__":
    main()

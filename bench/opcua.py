"""OPC-UA mapper figures against raw asyncua reads; prints one JSON document.

Setup: a simulated OPC-UA server (asyncua, in its own process) with 100 Double variables; one Device maps
them to 100 properties with ``collectCycle: 100`` ms. One run measures:

* ``raw``: a plain asyncua client reading one node in a loop (reads/s, sequential round trips), the ceiling
  of what one session can poll;
* ``subscribed`` and ``polled``: the mapper (in this process, with the real DeviceTwin and mosquitto) while
  the server changes one random variable every 20 ms, each time to the wall-clock time of the change. The
  latency of a change is the time from that value being set to the twin's ``twin/update/document`` carrying
  it (received by a plain paho client), p50 / p99 / max. A variable changed twice within one cycle reaches
  the twin once, with its later value (OPC-UA queues one value per monitored item; a poll reads one).
  Service calls per cycle count the requests the mapper sent during the changes, by type, per collect
  cycle (100 ms): subscribed, one Publish answer carries every change of a cycle and nothing is read;
  polled (the server refuses subscriptions), one Read request covers all 100 properties, never one per
  property.

Both the mapper and the twin share this process's event loop (as they do not in production, where edgecore
runs apart): the latencies include the twin's SQLite write. Run: ``.venv/bin/python bench/opcua.py``.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from asyncua import Client
from paho.mqtt.enums import CallbackAPIVersion

from devicetwin import DeviceTwin, TwinDevice, TwinProperty, TwinStore
from edgetwin.testing import free_port, wait_for
from eventbus import BrokerSettings, MosquittoBroker, MqttClient
from mappers.opcua import OpcUaProtocol, OpcUaSettings, quiet_asyncua
from mappers.sdk import Mapper, load_device_configs

PROPERTIES = 100
COLLECT_MS = 100
CHANGES = 150
CHANGE_PERIOD = 0.02
RAW_SECONDS = 3.0
NAMESPACE, NAME, NODE = "bench", "plant", "bench-node"

# The server runs in its own process, so neither the raw client nor the mapper shares a CPU with it. On
# "changes <n> <period>" it sets n random variables to the time of the change, then answers "done <last>".
SERVER = """
import asyncio, random, sys, time
from asyncua import ua
from edgetwin.testing.opcua import OpcUaSimulator, Variable
from mappers.opcua import quiet_asyncua

async def main() -> None:
    quiet_asyncua()
    variables = [Variable(f"p{{i}}", ua.VariantType.Double, 0.0) for i in range({count})]
    async with OpcUaSimulator(variables, port={port}, subscriptions={subscriptions}) as sim:
        print("ready", sim.url, flush=True)
        loop = asyncio.get_running_loop()
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            _, count, period = line.split()
            for _ in range(int(count)):
                last = time.time()
                await sim.set(f"p{{random.randrange({count})}}", last)
                await asyncio.sleep(float(period))
            print("done", repr(last), flush=True)

asyncio.run(main())
"""


@asynccontextmanager
async def server(subscriptions: bool) -> AsyncIterator[tuple[str, asyncio.subprocess.Process]]:
    """The simulated server process and its endpoint."""
    script = SERVER.format(count=PROPERTIES, port=free_port(), subscriptions=subscriptions)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        ready = (await process.stdout.readline()).decode().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError("the OPC-UA server did not start")
        yield ready[1], process
    finally:
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 10)
        except TimeoutError:
            process.kill()
            await process.wait()


async def raw_reads_per_second(url: str) -> float:
    """Sequential reads of one node by a plain asyncua client."""
    client = Client(url)
    await client.connect()
    try:
        node = client.get_node("ns=2;s=Device.p0")
        reads, started = 0, time.perf_counter()
        while time.perf_counter() - started < RAW_SECONDS:
            await node.read_value()
            reads += 1
        return reads / (time.perf_counter() - started)
    finally:
        await client.disconnect()


def documents(url: str) -> list[dict[str, Any]]:
    """A DeviceModel and Device with 100 DOUBLE properties on the server's variables."""
    model = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "DeviceModel",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "protocol": "opcua",
            "properties": [
                {"name": f"p{i}", "type": "DOUBLE", "accessMode": "ReadOnly"} for i in range(PROPERTIES)
            ],
        },
    }
    device = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": NAME, "namespace": NAMESPACE},
        "spec": {
            "deviceModelRef": {"name": NAME},
            "protocol": {"protocolName": "opcua", "configData": {"url": url}},
            "properties": [
                {
                    "name": f"p{i}",
                    "collectCycle": COLLECT_MS,
                    "visitors": {"protocolName": "opcua", "configData": {"nodeID": f"ns=2;s=Device.p{i}"}},
                }
                for i in range(PROPERTIES)
            ],
        },
    }
    return [model, device]


class Documents:
    """A paho subscriber (its own thread) stamping each twin document with its arrival time."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.arrivals: list[tuple[float, float]] = []  # (value = time of the change, arrival)
        self._lock = threading.Lock()
        self._client = paho.Client(CallbackAPIVersion.VERSION2)
        self._client.on_message = self._on_message
        self._client.connect("127.0.0.1", broker.port)
        self._client.subscribe(f"$hw/events/device/{NAMESPACE}/{NAME}/twin/update/document", qos=1)
        self._client.loop_start()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        arrived = time.time()
        twin = json.loads(message.payload)["twin"]
        with self._lock:
            for entry in twin.values():
                value = ((entry or {}).get("current") or {}).get("actual", {}).get("value")
                if value is not None and float(value) > 0:
                    self.arrivals.append((float(value), arrived))

    def latest(self) -> float:
        """The time of the latest change seen at the twin."""
        with self._lock:
            return max((changed for changed, _arrived in self.arrivals), default=0.0)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


async def mapper_run(broker: MosquittoBroker, workdir: Path, *, subscribe: bool) -> dict[str, Any]:
    """Changes on the server, measured at the twin, with the mapper subscribed or polling."""
    async with server(subscriptions=subscribe) as (url, process):
        docs = documents(url)
        path = workdir / f"devices-{subscribe}.yaml"
        path.write_text(yaml.safe_dump_all(docs))
        configs, _ = load_device_configs(path, node=None, protocol="opcua")
        model, _device = docs
        store = await TwinStore.open(workdir / f"twin-{subscribe}.db")
        client = MqttClient(BrokerSettings(url=broker.url))
        twin = DeviceTwin(store, client, NODE)
        plugin = OpcUaProtocol(OpcUaSettings(cert_dir=workdir / "certs", keepalive=60.0))
        mapper = Mapper(plugin, BrokerSettings(url=broker.url), node=NODE, devices=configs)
        listener = Documents(broker)
        try:
            await client.start()
            await twin.start()
            properties = [
                TwinProperty(prop["name"], type=prop["type"]) for prop in model["spec"]["properties"]
            ]
            await twin.upsert_device(TwinDevice(NAMESPACE, NAME, properties=properties))
            await mapper.start()
            await wait_for(
                lambda: mapper.devices.get(f"{NAMESPACE}/{NAME}") is not None, timeout=30, what="online"
            )
            await asyncio.sleep(0.5)  # let the initial values settle before counting
            before, started = dict(plugin.service_calls), time.perf_counter()
            assert process.stdin is not None
            assert process.stdout is not None
            process.stdin.write(f"changes {CHANGES} {CHANGE_PERIOD}\n".encode())
            await process.stdin.drain()
            last = float((await process.stdout.readline()).split()[1])  # "done <time of the last change>"
            elapsed = time.perf_counter() - started
            after = dict(plugin.service_calls)
            await wait_for(lambda: listener.latest() >= last, timeout=10, what="the last change at the twin")
        finally:
            listener.close()
            await mapper.stop()
            await twin.stop()
            await client.stop()
            await store.close()
    latencies = sorted((arrived - changed) * 1000 for changed, arrived in listener.arrivals)
    cycles = elapsed * 1000 / COLLECT_MS
    calls = {name: round((after.get(name, 0) - before.get(name, 0)) / cycles, 2) for name in after}
    return {
        "mode": "subscribed" if subscribe else "polled (server refuses subscriptions)",
        "properties": PROPERTIES,
        "collect_cycle_ms": COLLECT_MS,
        "changes": CHANGES,
        "changes_at_twin": len(latencies),
        "latency_ms": {
            "p50": round(statistics.median(latencies), 1),
            "p99": round(latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))], 1),
            "max": round(latencies[-1], 1),
        },
        "service_calls_per_cycle": {name: value for name, value in calls.items() if value},
    }


async def main() -> None:
    """Run the whole bench and print the figures as JSON."""
    quiet_asyncua()
    with tempfile.TemporaryDirectory(prefix="opcua-bench-") as tmp:
        workdir = Path(tmp)
        async with server(subscriptions=True) as (url, _process):
            raw = await raw_reads_per_second(url)
        async with MosquittoBroker(free_port(), workdir=workdir / "mosquitto") as broker:
            runs = [await mapper_run(broker, workdir, subscribe=subscribe) for subscribe in (True, False)]
    print(
        json.dumps(
            {
                "raw_asyncua_reads_per_s_one_node": round(raw, 1),
                "runs": runs,
                "goals": {
                    "subscribed latency": "p99 <= one publishing interval (collectCycle) + a few ms",
                    "service calls": "about one Publish (subscribed) or one Read (polled) per cycle, "
                    "not one per property",
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

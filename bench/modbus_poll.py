"""Modbus mapper polling throughput against raw pymodbus reads; prints one JSON document.

Setup: a simulated Modbus TCP gateway (pymodbus server, in its own process) serving slave ids 1..100, each
with 50 holding registers that the mapper's properties map one to one (offsets 0..49: one coalesced block of
50 registers per device). One run measures:

* ``raw``: a plain pymodbus client reading those 50 registers in a loop (reads/s), the ceiling; measured
  again right before each mapper run, since the machine's load drifts;
* ``mapper``: ``edgetwin mapper modbus`` (a subprocess, standalone with ``--devices``, mosquitto as its
  broker) polling 1, 10 and 100 devices of 50 properties with ``collectCycle: 1`` ms, i.e. as fast as it can.
  From its ``/metrics``: polls/s (one poll reads all 50 properties of a device), requests per poll (goal:
  the number of coalesced blocks, 1), polls/s relative to raw reads/s (goal >= 0.8), and the process RSS
  from /proc (goal <= 30 MB). One device cannot poll more than once per collectCycle (1 ms: 1000 polls/s),
  so ``polls_vs_ceiling`` also compares with min(raw, devices x 1000/s).

The registers do not change during the run: this measures the cost of polling, not of reporting changes.

All devices sit behind one gateway endpoint, so the mapper's requests share one TCP connection and its lock,
as raw reads do: the ratio compares like with like. Run: ``.venv/bin/python bench/modbus_poll.py``.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pymodbus.client import AsyncModbusTcpClient

from edgetwin.testing import free_port, wait_for
from eventbus import MosquittoBroker

PROPERTIES = 50
DEVICE_COUNTS = (1, 10, 100)
WARMUP = 1.0
MEASURE = 4.0
COLLECT_MS = 1
EDGETWIN = str(Path(sys.executable).with_name("edgetwin"))

# The gateway runs in its own process, so neither the raw client nor the mapper shares a CPU with it.
SERVER = """
import asyncio, sys
from edgetwin.testing.modbus import ModbusTcpSimulator

async def main() -> None:
    async with ModbusTcpSimulator(range(1, {devices} + 1), port={port}) as sim:
        for slave in sim.slave_ids:
            await sim.set_holding(slave, 0, list(range({properties})))
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def device_documents(port: int, slave: int) -> list[dict[str, Any]]:
    """A DeviceModel and Device with 50 INT properties on holding registers 0..49 of ``slave``."""
    name = f"meter-{slave}"
    model_props = [{"name": f"r{i}", "type": "INT", "accessMode": "ReadOnly"} for i in range(PROPERTIES)]
    device_props = [
        {
            "name": f"r{i}",
            "collectCycle": COLLECT_MS,
            "visitors": {
                "protocolName": "modbus",
                "configData": {"register": "HoldingRegister", "offset": i, "dataType": "uint16"},
            },
        }
        for i in range(PROPERTIES)
    ]
    return [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"protocol": "modbus", "properties": model_props},
        },
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "deviceModelRef": {"name": name},
                "protocol": {
                    "protocolName": "modbus",
                    "configData": {
                        "communicateMode": "TCP",
                        "ip": "127.0.0.1",
                        "port": port,
                        "slaveID": slave,
                    },
                },
                "properties": device_props,
            },
        },
    ]


async def raw_reads_per_second(port: int) -> float:
    """Sequential reads of one 50-register block by a plain pymodbus client."""
    client = AsyncModbusTcpClient("127.0.0.1", port=port)
    await client.connect()
    try:
        deadline = time.perf_counter() + WARMUP
        while time.perf_counter() < deadline:
            await client.read_holding_registers(0, count=PROPERTIES, device_id=1)
        reads, started = 0, time.perf_counter()
        while time.perf_counter() - started < MEASURE:
            response = await client.read_holding_registers(0, count=PROPERTIES, device_id=1)
            assert not response.isError()
            reads += 1
        return reads / (time.perf_counter() - started)
    finally:
        client.close()


def scrape(url: str) -> dict[str, float]:
    """Sum each mapper series over devices: polls, requests, reads."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    totals = {"polls": 0.0, "requests": 0.0, "reads": 0.0}
    names = {
        "edgetwin_mapper_polls_total": "polls",
        "edgetwin_mapper_request_seconds_count": "requests",
        "edgetwin_mapper_reads_total": "reads",
    }
    for line in text.splitlines():
        match = re.match(r"^(\w+)\{[^}]*\} ([0-9.e+]+)$", line)
        if match and match.group(1) in names:
            totals[names[match.group(1)]] += float(match.group(2))
    return totals


def rss_mb(pid: int) -> float:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


async def mapper_run(
    broker: MosquittoBroker, gateway_port: int, devices: int, workdir: Path
) -> dict[str, Any]:
    """Measure raw reads, then the mapper on ``devices`` devices (back to back: both see the same load)."""
    raw = await raw_reads_per_second(gateway_port)
    path = workdir / f"devices-{devices}.yaml"
    docs = [doc for slave in range(1, devices + 1) for doc in device_documents(gateway_port, slave)]
    path.write_text(yaml.safe_dump_all(docs))
    metrics = f"127.0.0.1:{free_port()}"
    command = [
        EDGETWIN,
        "mapper",
        "modbus",
        "--broker",
        broker.url,
        "--node",
        "bench",
        "--devices",
        str(path),
    ]
    process = await asyncio.create_subprocess_exec(
        *command,
        "--metrics",
        metrics,
        "--log-level",
        "warning",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://{metrics}/metrics"
    try:

        async def polling() -> bool:
            totals = await asyncio.to_thread(scrape, url)
            return totals["polls"] >= devices

        check: Callable[[], object] = polling  # wait_for's T cannot be inferred from a coroutine function
        await wait_for(check, timeout=30.0, what="the mapper polling every device")
        await asyncio.sleep(WARMUP)
        first, started = await asyncio.to_thread(scrape, url), time.perf_counter()
        await asyncio.sleep(MEASURE)
        last, elapsed = await asyncio.to_thread(scrape, url), time.perf_counter() - started
        rss = rss_mb(process.pid)
    finally:
        process.terminate()
        await process.wait()
    polls = last["polls"] - first["polls"]
    polls_per_second = polls / elapsed
    # One device cannot poll more often than its collectCycle allows, however fast the link.
    ceiling = min(raw, devices * 1000 / COLLECT_MS)
    return {
        "devices": devices,
        "raw_reads_per_s": round(raw, 1),
        "properties_per_device": PROPERTIES,
        "coalesced_blocks_per_device": 1,
        "polls_per_s": round(polls_per_second, 1),
        "property_reads_per_s": round((last["reads"] - first["reads"]) / elapsed, 1),
        "requests_per_poll": round((last["requests"] - first["requests"]) / polls, 3) if polls else None,
        "polls_vs_raw": round(polls_per_second / raw, 3),
        "polls_vs_ceiling": round(polls_per_second / ceiling, 3),
        "mapper_rss_mb": round(rss, 1),
        "exit_code_on_sigterm": process.returncode,
    }


async def main() -> None:
    """Run the whole bench and print the figures as JSON."""
    with tempfile.TemporaryDirectory(prefix="modbus-bench-") as tmp:
        workdir = Path(tmp)
        port = free_port()
        script = SERVER.format(devices=max(DEVICE_COUNTS), port=port, properties=PROPERTIES)
        server = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            script,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        try:
            assert server.stdout is not None
            if (await server.stdout.readline()).strip() != b"ready":
                raise RuntimeError("the Modbus gateway did not start")
            async with MosquittoBroker(free_port(), workdir=workdir / "mosquitto") as broker:
                runs = [await mapper_run(broker, port, devices, workdir) for devices in DEVICE_COUNTS]
        finally:
            await server.communicate(input=b"")
    goals = {
        "requests_per_poll": "== coalesced blocks (1)",
        "polls_vs_raw": ">= 0.8",
        "mapper_rss_mb": "<= 30",
    }
    print(
        json.dumps(
            {"registers_per_read": PROPERTIES, "collect_cycle_ms": COLLECT_MS, "runs": runs, "goals": goals},
            indent=2,
        )
    )


if __name__ == "__main__":
    asyncio.run(main())

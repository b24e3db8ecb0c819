"""Twin update throughput of ``edgetwin edgecore`` against raw mosquitto QoS 1; prints one JSON document.

One run starts a mosquitto on a free port and measures, with the same paho client code on both sides:

* ``raw``: QoS 1 publish → subscribe through mosquitto (messages/s, latency), the ceiling;
* ``twin``: ``edgetwin edgecore`` (a subprocess, external broker mode, SQLite in a temp dir) serving 1, 10
  and 1,000 devices: an app publishes ``twin/update`` (one reported value each) and waits for the
  ``twin/update/result``, which edgecore publishes only once the write is durable in SQLite. Updates go
  round-robin over the devices.

Both are pipelined with the same bounded window of messages in flight (sent, not yet answered). Reported:
throughput, p50 / p99 latency from publish to answer, the ratio twin / raw (goal >= 0.6), edgecore's RSS
from /proc, and the CPU each process spent per message (``cpu_ms_per_message``: the bench's own paho clients,
mosquitto, edgecore), which tells where the time went. edgecore runs with ``--log-level warning``: at
``info`` the twin logs one line per update. Run: ``.venv/bin/python bench/twin_throughput.py``.

Read the figures with the machine's load (``machine.loadavg``): every process of a run shares the CPUs, and
the raw figure's two paho threads contend for the GIL of one process, so it moves with the load (on a 2-core
machine, from about 5,000 to 10,000 messages/s between runs; its ``bench`` CPU per message shows it).
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgetwin.testing import free_port
from eventbus import MosquittoBroker

WINDOW = 100
RAW_MESSAGES = 20_000
TWIN_UPDATES = {1: 10_000, 10: 10_000, 1_000: 10_000}
RUN_CAP_SECONDS = 20.0
GOAL_RATIO = 0.6
EDGETWIN = str(Path(sys.executable).with_name("edgetwin"))
NODE = "bench-node"


class PipelinedRun:
    """Publish ``count`` messages with at most ``window`` unanswered; time each from publish to answer.

    ``message(seq)`` gives (topic, payload) of message ``seq``; ``answer(payload)`` reads the seq back
    from an answer received on ``answers`` (a topic filter). ``processes`` (name → pid) are the other
    processes whose CPU time is reported, with this one's as ``bench``.
    """

    def __init__(
        self,
        host: str,
        port: int,
        answers: str,
        message: Callable[[int], tuple[str, bytes]],
        answer: Callable[[bytes], int],
        processes: dict[str, int],
        window: int = WINDOW,
    ) -> None:
        self._message = message
        self._answer = answer
        self._processes = processes
        self._slots = threading.Semaphore(window)
        self._lock = threading.Lock()
        self._sent: dict[int, float] = {}
        self.latencies: list[float] = []
        self._done = threading.Event()
        self._expected = 0
        self._subscriber = _client(host, port)
        self._subscriber.on_message = self._on_answer
        self._publisher = _client(host, port)
        self._subscriber.subscribe(answers, qos=1)
        # A round trip through the broker makes sure the subscription is in place before anything is sent.
        time.sleep(0.2)

    def _on_answer(self, _client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        seq = self._answer(bytes(msg.payload))
        now = time.perf_counter()
        with self._lock:
            sent = self._sent.pop(seq, None)
            if sent is None:
                return
            self.latencies.append(now - sent)
            if len(self.latencies) == self._expected:
                self._done.set()
        self._slots.release()

    def run(self, first: int, count: int, cap: float = RUN_CAP_SECONDS) -> dict[str, Any]:
        """Send messages ``first`` .. ``first + count - 1``; returns count, seconds, per_s, p50/p99 (ms) and
        the CPU milliseconds each process spent per answered message."""
        self.latencies = []
        self._expected = count
        self._done.clear()
        cpu_before = self._cpu_seconds()
        start = time.perf_counter()
        deadline = start + cap
        sent = 0
        for seq in range(first, first + count):
            if not self._slots.acquire(timeout=max(0.0, deadline - time.perf_counter())):
                break
            topic, payload = self._message(seq)
            with self._lock:
                self._sent[seq] = time.perf_counter()
            self._publisher.publish(topic, payload, qos=1)
            sent += 1
        self._done.wait(timeout=max(0.0, deadline - time.perf_counter()))
        elapsed = time.perf_counter() - start
        cpu_spent = {name: seconds - cpu_before[name] for name, seconds in self._cpu_seconds().items()}
        with self._lock:
            answered = len(self.latencies)
            latencies = sorted(self.latencies)
            for _ in self._sent:
                self._slots.release()
            self._sent.clear()
        return {
            "sent": sent,
            "answered": answered,
            "seconds": round(elapsed, 3),
            "per_s": round(answered / elapsed, 1),
            "p50_ms": round(1000 * statistics.median(latencies), 2) if latencies else -1,
            "p99_ms": round(1000 * latencies[int(0.99 * (len(latencies) - 1))], 2) if latencies else -1,
            "cpu_ms_per_message": {
                name: round(1000 * seconds / max(answered, 1), 3) for name, seconds in cpu_spent.items()
            },
        }

    def _cpu_seconds(self) -> dict[str, float]:
        return {"bench": time.process_time()} | {
            name: cpu_seconds(pid) for name, pid in self._processes.items()
        }

    def close(self) -> None:
        for client in (self._publisher, self._subscriber):
            client.disconnect()
            client.loop_stop()


def _client(host: str, port: int) -> paho.Client:
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"bench-{uuid.uuid4().hex[:8]}",
        protocol=MQTTProtocolVersion.MQTTv311,
    )
    client.max_inflight_messages_set(WINDOW)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    deadline = time.monotonic() + 10
    while not client.is_connected():
        if time.monotonic() > deadline:
            raise SystemExit(f"bench: cannot connect to {host}:{port}")
        time.sleep(0.01)
    return client


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (from /proc)."""
    # The command name, in parentheses, may hold spaces: the fields that follow the last ")" are fixed.
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_raw(port: int, broker_pid: int) -> dict[str, Any]:
    def message(seq: int) -> tuple[str, bytes]:
        return f"bench/raw/{seq % 10}", str(seq).encode()

    run = PipelinedRun(
        "127.0.0.1", port, "bench/raw/#", message, lambda payload: int(payload), {"mosquitto": broker_pid}
    )
    try:
        run.run(0, 2_000)  # warm-up
        return run.run(2_000, RAW_MESSAGES)
    finally:
        run.close()


def write_devices(directory: Path, count: int) -> None:
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "bench-model"},
            "spec": {"properties": [{"name": "value", "type": "INT", "accessMode": "ReadOnly"}]},
        }
    ]
    documents += [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": f"bench-{index}"},
            "spec": {
                "deviceModelRef": {"name": "bench-model"},
                "nodeName": NODE,
                "properties": [{"name": "value"}],
            },
        }
        for index in range(count)
    ]
    directory.mkdir()
    (directory / "devices.yaml").write_text(yaml.safe_dump_all(documents))


def start_edgecore(workdir: Path, broker_url: str, devices: Path) -> tuple[subprocess.Popen[bytes], str]:
    healthz = f"127.0.0.1:{free_port()}"
    config = {
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
        "kind": "EdgeCore",
        "database": {"dataSource": str(workdir / "edgecore.db")},
        "modules": {
            "edged": {"hostnameOverride": NODE},
            "edgeHub": {"enable": False},
            "eventBus": {"mqttMode": 2, "mqttServerExternal": broker_url, "mqttSessionQueueSize": WINDOW},
        },
        "edgetwin": {"healthz": healthz},
    }
    path = workdir / "edgecore.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "edgecore.log").open("wb")
    command = [
        EDGETWIN,
        "edgecore",
        "--config",
        str(path),
        "--devices",
        str(devices),
        "--log-level",
        "warning",
    ]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        if process.poll() is not None:
            raise SystemExit(f"bench: edgecore exited:\n{(workdir / 'edgecore.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://{healthz}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process, healthz
        except (urllib.error.URLError, ConnectionError):
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise SystemExit("bench: edgecore did not become healthy in 120 s")
        time.sleep(0.1)


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields["VmRSS"], "peak_rss_mb": fields["VmHWM"]}


def measure_twin(port: int, broker_pid: int, workdir: Path) -> tuple[list[dict[str, Any]], dict[str, float]]:
    devices_dir = workdir / "devices"
    write_devices(devices_dir, max(TWIN_UPDATES))
    process, _healthz = start_edgecore(workdir, f"tcp://127.0.0.1:{port}", devices_dir)
    results = []
    try:
        for devices, updates in TWIN_UPDATES.items():

            def message(seq: int, devices: int = devices) -> tuple[str, bytes]:
                body = {
                    "event_id": str(seq),
                    "timestamp": 0,
                    "twin": {"value": {"actual": {"value": str(seq)}}},
                }
                return f"$hw/events/device/default/bench-{seq % devices}/twin/update", json.dumps(
                    body
                ).encode()

            run = PipelinedRun(
                "127.0.0.1",
                port,
                "$hw/events/device/default/+/twin/update/result",
                message,
                lambda payload: int(json.loads(payload)["event_id"]),
                {"mosquitto": broker_pid, "edgecore": process.pid},
            )
            try:
                run.run(0, devices)  # warm-up: each device's first report adds the value to its twin
                results.append({"devices": devices, **run.run(devices, updates)})
            finally:
                run.close()
        memory = rss_mb(process.pid)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return results, memory


async def _broker(workdir: Path) -> MosquittoBroker:
    broker = MosquittoBroker(free_port(), workdir=workdir)
    await broker.start()
    return broker


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-twin-") as tmp:
        workdir = Path(tmp)
        broker = asyncio.run(_broker(workdir / "mosquitto"))
        load = os.getloadavg()
        try:
            if broker.pid is None:
                raise SystemExit("bench: mosquitto is not running")
            raw = measure_raw(broker.port, broker.pid)
            twin, memory = measure_twin(broker.port, broker.pid, workdir)
        finally:
            asyncio.run(broker.stop())
    for row in twin:
        row["ratio_to_raw"] = round(row["per_s"] / raw["per_s"], 3)
    report = {
        "bench": "twin_throughput",
        "machine": {"cpus": os.cpu_count(), "loadavg": [round(value, 2) for value in load]},
        "window": WINDOW,
        "raw_qos1": raw,
        "twin": twin,
        "edgecore": memory,
        "goal_ratio": GOAL_RATIO,
        "goal_met": all(row["ratio_to_raw"] >= GOAL_RATIO for row in twin),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""``edgetwin edgecore`` as a process: config, devices dir, /healthz, /metrics, signals, crashes, restarts.

Each test starts the command as a subprocess with a config and a database in ``tmp_path``, talks to it over
MQTT as an outside app would (:class:`MqttProbe`), and reads its SQLite file after it is gone.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import yaml

from edgecore import EdgeCore, InvalidTopicError, load_config, parse_config
from edgetwin.testing import free_port, wait_for
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import MosquittoBroker

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
EDGETWIN = Path(sys.executable).with_name("edgetwin")
NODE = "edge-node-1"
THERMOSTAT = "$hw/events/device/default/thermostat-01"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 5.0

# What `keadm join` writes beyond what edgetwin reads: it must not stop edgetwin from starting.
KUBEEDGE_ONLY_FIELDS: dict[str, Any] = {
    "modules": {
        "dbTest": {"enable": False},
        "edgeStream": {"enable": False, "server": "127.0.0.1:10004"},
        "serviceBus": {"enable": False},
        "edged": {
            "maxContainerCount": -1,
            "tailoredKubeletConfig": {"cgroupDriver": "cgroupfs", "maxPods": 110},
        },
    }
}


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged in, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in extra.items():
        old = merged.get(key)
        merged[key] = merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
    return merged


def edgecore_config(
    tmp_path: Path, *, broker: str | None = None, internal_port: int | None = None, **extra: Any
) -> dict[str, Any]:
    """A config on a temp database and a free healthz port; external ``broker`` or an internal one."""
    bus: dict[str, Any] = {"mqttQOS": 1}
    if internal_port is not None:
        bus |= {"mqttMode": 0, "mqttServerInternal": f"tcp://127.0.0.1:{internal_port}"}
    else:
        bus |= {"mqttMode": 2, "mqttServerExternal": broker}
    config = {
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
        "kind": "EdgeCore",
        "database": {"dataSource": str(tmp_path / "edgecore.db")},
        "modules": {"edged": {"hostnameOverride": NODE}, "edgeHub": {"enable": False}, "eventBus": bus},
        "edgetwin": {
            "healthz": f"127.0.0.1:{free_port()}",
            "restartBackoff": {"initial": 0.1, "max": 1.0},
        },
    }
    return merge(config, extra)


def write_config(tmp_path: Path, config: dict[str, Any], name: str = "edgecore.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


@dataclass
class EdgecoreProcess:
    """A running ``edgetwin edgecore``; its stdout and stderr go to ``log``."""

    process: asyncio.subprocess.Process
    log: Path
    healthz: str

    @property
    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def get(self, path: str) -> tuple[int, str]:
        async with aiohttp.ClientSession() as http, http.get(f"http://{self.healthz}{path}") as response:
            return response.status, await response.text()

    async def health(self) -> dict[str, Any]:
        _status, body = await self.get("/healthz")
        return dict(json.loads(body))

    async def samples(self, name: str) -> dict[str, float]:
        """Every sample of the metric family ``name`` in ``/metrics``: labels text → value."""
        _status, text = await self.get("/metrics")
        found = {}
        for line in text.splitlines():
            sample, _, value = line.rpartition(" ")
            metric, _, labels = sample.partition("{")
            if metric == name:
                found["{" + labels if labels else ""] = float(value)
        return found

    async def metric(self, name: str, **labels: str) -> float | None:
        """The value of one sample of ``/metrics``, None when absent."""
        wanted = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
        return (await self.samples(name)).get(wanted)

    async def wait_healthy(self) -> dict[str, Any]:
        async def healthy() -> bool:
            if self.process.returncode is not None:
                pytest.fail(f"edgecore exited with {self.process.returncode}:\n{self.output}")
            status, _ = await self.get("/healthz")
            return status == 200

        await eventually(healthy, timeout=START_TIMEOUT, what="edgecore /healthz 200")
        return await self.health()

    async def exit_code(self, timeout: float = STOP_TIMEOUT) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)

    async def terminate(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        return await self.exit_code()


async def eventually(condition: Callable[[], Awaitable[object]], *, what: str, timeout: float = 10.0) -> None:
    """Wait until the coroutine ``condition`` returns something truthy."""
    checked: Callable[[], object | Awaitable[object]] = condition  # tells mypy which wait_for overload
    await wait_for(checked, timeout=timeout, what=what)


StartEdgecore = Callable[..., Awaitable[EdgecoreProcess]]


@pytest_asyncio.fixture
async def start_edgecore(tmp_path: Path) -> AsyncIterator[StartEdgecore]:
    """``await start_edgecore(config, devices=None, wait=True)``; every process is killed afterwards."""
    processes: list[asyncio.subprocess.Process] = []

    async def start(
        config: dict[str, Any], *, devices: Path | None = None, wait: bool = True
    ) -> EdgecoreProcess:
        config_path = write_config(tmp_path, config, f"edgecore-{len(processes)}.yaml")
        log = tmp_path / f"edgecore-{len(processes)}.log"
        command = ["edgecore", "--config", str(config_path), "--log-level", "debug"]
        if devices is not None:
            command += ["--devices", str(devices)]
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                EDGETWIN, *command, stdout=out, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path
            )
        processes.append(process)
        handle = EdgecoreProcess(process, log, config["edgetwin"]["healthz"])
        if wait:
            await handle.wait_healthy()
        return handle

    try:
        yield start
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
            await asyncio.wait_for(process.wait(), STOP_TIMEOUT)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def children_of(pid: int) -> dict[int, str]:
    """Child processes of ``pid``: pid → command line."""
    found = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == pid:
                found[int(entry.name)] = (
                    Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ").decode()
                )
        except (OSError, ValueError, IndexError):
            continue
    return found


def twin_get(probe: MqttProbe, device_topic: str, event_id: str) -> dict[str, Any]:
    probe.publish(f"{device_topic}/twin/get", {"event_id": event_id, "timestamp": 0})
    message = probe.wait_message(
        f"{device_topic}/twin/get/result", lambda m: m.json()["event_id"] == event_id, timeout=10
    )
    return dict(message.json())


async def test_kubeedge_file_with_devices_dir_serves_twins_health_metrics_and_stops_on_sigterm(
    tmp_path: Path, mosquitto: MosquittoBroker, start_edgecore: StartEdgecore
) -> None:
    config = edgecore_config(tmp_path, broker=mosquitto.url, **KUBEEDGE_ONLY_FIELDS)
    edgecore = await start_edgecore(config, devices=EXAMPLES)

    health = await edgecore.health()
    assert health["status"] == "ok"
    assert health["node"] == NODE
    assert {name: module["state"] for name, module in health["modules"].items()} == {
        "eventbus": "running",
        "devicetwin": "running",
        "metamanager": "running",
    }
    # ONE warning lists the KubeEdge fields edgetwin does not use.
    warnings = [line for line in edgecore.output.splitlines() if "does not use" in line]
    assert len(warnings) == 1
    for field in ("modules.dbTest", "modules.edged.tailoredKubeletConfig"):
        assert field in warnings[0]

    with MqttProbe(mosquitto.url) as probe:
        probe.subscribe(f"{THERMOSTAT}/twin/get/result")
        twin = twin_get(probe, THERMOSTAT, "get-1")["twin"]
        probe.publish("$hw/events/upload/line-1", b"raw bytes, not JSON")
        probe.publish(f"{THERMOSTAT}/twin/update", b"{not json")  # answered 400, counted
    # Known at once, before any value is reported: types from the DeviceModel, desired as expected.
    assert set(twin) == {"temperature", "setpoint", "heating"}
    assert twin["temperature"]["metadata"]["type"] == "float"
    assert twin["heating"]["metadata"]["type"] == "boolean"
    assert twin["setpoint"]["expected"]["value"] == "21.5"
    assert "actual" not in twin["temperature"]

    await eventually(
        lambda: edgecore.metric("edgetwin_edgecore_uploads_total", kind="upload", result="no_cloud"),
        what="the upload counted",
    )
    await eventually(
        lambda: edgecore.metric("edgetwin_twin_errors_total", code="400"), what="the bad update counted"
    )
    assert await edgecore.metric("edgetwin_twin_messages_in_total", kind="twin_get") == 1
    assert await edgecore.metric("edgetwin_twin_messages_out_total", kind="twin_get_result") == 1
    assert await edgecore.metric("edgetwin_module_restarts_total", module="devicetwin") == 0
    assert await edgecore.metric("edgetwin_module_up", module="eventbus") == 1
    assert (await edgecore.metric("edgetwin_twin_store_commit_seconds_count") or 0) >= 1
    assert await edgecore.metric("edgetwin_twin_queue_depth", queue="devices") is not None
    assert (await edgecore.metric("process_resident_memory_bytes") or 0) > 10_000_000

    assert await edgecore.terminate() == 0
    lines = edgecore.output.splitlines()
    assert any('msg="edgecore stopped"' in line for line in lines)
    # Structured: one line per event, key=value pairs from the time on; once the config is read, the node.
    assert all(line.startswith("ts=") for line in lines)
    assert all(f"node={NODE}" in line for line in lines if "logger=edgecore.config" not in line)
    assert any("device=default/thermostat-01" in line for line in lines)


async def test_restart_on_the_same_database_keeps_twins_versions_devices_and_topics(
    tmp_path: Path, mosquitto: MosquittoBroker, start_edgecore: StartEdgecore
) -> None:
    config_data = edgecore_config(tmp_path, broker=mosquitto.url)
    config = parse_config(config_data)
    with MqttProbe(mosquitto.url) as probe:
        probe.subscribe(f"{THERMOSTAT}/twin/update/result", f"{THERMOSTAT}/twin/get/result")
        # First life, in-process: a reported value, an edge-set desired value, an extra topic.
        async with EdgeCore(config, devices_dir=EXAMPLES) as core:
            with pytest.raises(InvalidTopicError):
                await core.add_sub_topic("factory/#/bad")
            await core.add_sub_topic("factory/alerts/#")
            update = {
                "event_id": "u-1",
                "timestamp": 0,
                "twin": {
                    "temperature": {"actual": {"value": "22.5"}},
                    "setpoint": {"expected": {"value": "23"}},
                },
            }
            probe.publish(f"{THERMOSTAT}/twin/update", update)
            await probe.wait_message_async(
                f"{THERMOSTAT}/twin/update/result", lambda m: m.json()["event_id"] == "u-1"
            )
            before = await core.twin.get_twin("default/thermostat-01")
            devices_before = [device.id for device in core.twin.list_devices()]
        assert before["temperature"].actual_version is not None

        # Second life, as a process: the twin answers from SQLite, the extra topic is subscribed again.
        edgecore = await start_edgecore(config_data)
        answer = await asyncio.to_thread(twin_get, probe, THERMOSTAT, "get-after-restart")
        assert answer["twin"]["temperature"]["actual"]["value"] == "22.5"
        assert answer["twin"]["setpoint"]["expected"]["value"] == "23"
        probe.publish("factory/alerts/line-7", {"alarm": "overheat"})
        await eventually(
            lambda: edgecore.metric("edgetwin_edgecore_uploads_total", kind="sub_topic", result="no_cloud"),
            what="the message on the extra topic counted",
        )
        assert await edgecore.terminate() == 0

    # Third life, in-process again: same devices, same versions, same topics.
    async with EdgeCore(config) as core:
        assert await core.sub_topics() == ["factory/alerts/#"]
        assert [device.id for device in core.twin.list_devices()] == devices_before
        after = await core.twin.get_twin("default/thermostat-01")
        assert {name: (t.expected_version, t.actual_version) for name, t in after.items()} == {
            name: (t.expected_version, t.actual_version) for name, t in before.items()
        }
        await core.remove_sub_topic("factory/alerts/#")
        assert await core.sub_topics() == []


BURST_DEVICES = 4
RESULTS = "$hw/events/device/default/+/twin/update/result"


def write_burst_devices(directory: Path) -> None:
    directory.mkdir()
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "DeviceModel",
            "metadata": {"name": "burst-model", "namespace": "default"},
            "spec": {"properties": [{"name": "seed", "type": "INT", "accessMode": "ReadWrite"}]},
        }
    ]
    documents += [
        {
            "apiVersion": "devices.kubeedge.io/v1beta1",
            "kind": "Device",
            "metadata": {"name": f"burst-{index}", "namespace": "default"},
            "spec": {
                "deviceModelRef": {"name": "burst-model"},
                "nodeName": NODE,
                "properties": [{"name": "seed", "desired": {"value": "0"}}],
            },
        }
        for index in range(BURST_DEVICES)
    ]
    (directory / "burst.yaml").write_text(yaml.safe_dump_all(documents))


async def test_kill_9_mid_burst_keeps_every_acknowledged_update(
    tmp_path: Path, mosquitto: MosquittoBroker, start_edgecore: StartEdgecore
) -> None:
    devices = tmp_path / "devices"
    write_burst_devices(devices)
    edgecore = await start_edgecore(edgecore_config(tmp_path, broker=mosquitto.url), devices=devices)
    total = 3000
    published = 0
    stop = threading.Event()

    def publish_burst(probe: MqttProbe) -> None:
        # Each update creates its own property p<seq> = v<seq>: every acknowledged one must be in the file.
        nonlocal published
        for seq in range(total):
            if stop.is_set():
                return
            topic = f"$hw/events/device/default/burst-{seq % BURST_DEVICES}/twin/update"
            probe.publish(
                topic,
                {
                    "event_id": f"e{seq}",
                    "timestamp": 0,
                    "twin": {f"p{seq}": {"actual": {"value": f"v{seq}"}}},
                },
            )
            published += 1

    with MqttProbe(mosquitto.url) as results, MqttProbe(mosquitto.url) as publisher:
        results.subscribe(RESULTS)
        sender = threading.Thread(target=publish_burst, args=(publisher,), name="burst-publisher")
        sender.start()
        try:
            await wait_for(lambda: len(results.received(RESULTS)) >= 300, timeout=30, what="300 results")
            edgecore.process.kill()
            assert await edgecore.exit_code() == -signal.SIGKILL
            published_at_kill = published
        finally:
            stop.set()
            await asyncio.to_thread(sender.join)
        acknowledged: dict[tuple[str, str], str] = {}
        for message in results.received(RESULTS):
            body = message.json()
            assert "code" not in body, body
            device = message.topic.split("/")[4]
            for name, twin in body["twin"].items():
                acknowledged[(f"default/{device}", name)] = twin["actual"]["value"]

    assert len(acknowledged) < published_at_kill <= total  # killed while updates were still coming in
    with sqlite3.connect(tmp_path / "edgecore.db") as db:
        stored = {
            (device, name): actual
            for device, name, actual in db.execute("SELECT deviceid, name, actual FROM device_twin")
        }
    missing = {key: value for key, value in acknowledged.items() if stored.get(key) != value}
    assert not missing, f"{len(missing)} acknowledged updates not in SQLite, e.g. {list(missing.items())[:5]}"


async def test_internal_mode_runs_its_own_broker_and_restarts_it_after_a_crash(
    tmp_path: Path, start_edgecore: StartEdgecore
) -> None:
    port = free_port()
    edgecore = await start_edgecore(edgecore_config(tmp_path, internal_port=port), devices=EXAMPLES)
    assert (await edgecore.health())["modules"]["mosquitto"]["state"] == "running"
    url = f"tcp://127.0.0.1:{port}"
    with MqttProbe(url) as probe:
        probe.subscribe(f"{THERMOSTAT}/twin/get/result")
        assert "setpoint" in twin_get(probe, THERMOSTAT, "before-crash")["twin"]

    brokers = [pid for pid, command in children_of(edgecore.process.pid).items() if "mosquitto" in command]
    assert len(brokers) == 1
    os.kill(brokers[0], signal.SIGKILL)

    async def restarted() -> bool:
        module = (await edgecore.health())["modules"]["mosquitto"]
        return bool(module["restarts"] == 1 and module["state"] == "running")

    await eventually(restarted, timeout=15, what="mosquitto restarted by the supervisor")
    module = (await edgecore.health())["modules"]["mosquitto"]
    assert module["last_error"].startswith("BrokerExitedError")
    assert await edgecore.metric("edgetwin_module_restarts_total", module="mosquitto") == 1

    # The MQTT connections come back by themselves (resubscribed), and the twin serves again.
    async def reconnected() -> bool:
        connected = await edgecore.samples("edgetwin_mqtt_connected")
        return len(connected) == 2 and set(connected.values()) == {1.0}

    await eventually(reconnected, what="edgecore's MQTT clients connected again")
    with MqttProbe(url) as probe:
        probe.subscribe(f"{THERMOSTAT}/twin/get/result")
        twin = await asyncio.to_thread(twin_get, probe, THERMOSTAT, "after-crash")
    assert "setpoint" in twin["twin"]

    new_brokers = [
        pid for pid, command in children_of(edgecore.process.pid).items() if "mosquitto" in command
    ]
    assert await edgecore.terminate(signal.SIGINT) == 0  # Ctrl-C stops as cleanly as SIGTERM
    assert not any(alive(pid) for pid in new_brokers), "mosquitto left running"


async def test_invalid_config_fails_naming_the_field(tmp_path: Path, start_edgecore: StartEdgecore) -> None:
    config = edgecore_config(tmp_path, broker="tcp://127.0.0.1:1", modules={"eventBus": {"mqttMode": 7}})
    edgecore = await start_edgecore(config, wait=False)
    assert await edgecore.exit_code() == 2
    assert "modules.eventBus.mqttMode: 7 is not valid" in edgecore.output


async def test_bad_devices_file_fails_naming_the_file_and_field(
    tmp_path: Path, mosquitto: MosquittoBroker, start_edgecore: StartEdgecore
) -> None:
    devices = tmp_path / "devices"
    write_burst_devices(devices)
    bad = devices / "burst.yaml"
    bad.write_text(bad.read_text().replace("value: '0'", "value: warm"))
    config = edgecore_config(tmp_path, broker=mosquitto.url)
    edgecore = await start_edgecore(config, devices=devices, wait=False)
    assert await edgecore.exit_code(timeout=START_TIMEOUT) == 1
    assert str(bad) in edgecore.output
    assert "spec.properties" in edgecore.output
    assert "'warm'" in edgecore.output


def test_defaultconfig_prints_a_complete_config_that_loads(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(EDGETWIN), "edgecore", "--defaultconfig"], capture_output=True, check=True, timeout=30
    )
    path = tmp_path / "default.yaml"
    path.write_bytes(done.stdout)
    config = load_config(path)
    assert config.unknown_fields() == []
    assert config.modules.event_bus.mqtt_server_external == "tcp://127.0.0.1:1883"
    assert yaml.safe_load(done.stdout)["modules"]["eventBus"]["mqttMode"] == 2

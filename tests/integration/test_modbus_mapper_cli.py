"""``edgetwin mapper modbus`` as a user runs it: a separate process, ``--once``, ``/metrics``, SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from edgetwin.testing import free_port
from edgetwin.testing.modbus import ModbusTcpSimulator
from eventbus import MosquittoBroker, TopicKind
from tests.fixtures.mqtt import ProbeFactory
from tests.integration.test_modbus_mapper import (
    Prop,
    device_topic,
    documents,
    eventually,
    set_expected,
    thermostat,
    unique,
    wait_actual,
)

EDGETWIN = str(Path(sys.executable).with_name("edgetwin"))


def write_devices(path: Path, *devices: list[dict[str, Any]]) -> Path:
    """Device + DeviceModel documents in one multi-document YAML file."""
    path.write_text(yaml.safe_dump_all([doc for docs in devices for doc in docs], sort_keys=False))
    return path


async def run(*args: str) -> tuple[int, str, str]:
    """Run the CLI to completion (asynchronously: the simulated devices live on this event loop)."""
    process = await asyncio.create_subprocess_exec(
        EDGETWIN, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with asyncio.timeout(60):
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_once_prints_every_property_or_its_error(
    modbus_tcp_server: ModbusTcpSimulator, tmp_path: Path
) -> None:
    await modbus_tcp_server.set_inputs(1, 0, [215])
    await modbus_tcp_server.set_holding(1, 0, [200])
    dead = ModbusTcpSimulator((1,))  # never started: nothing listens on its port
    sparse = [Prop("missing", "INT", "HoldingRegister", 130, data_type="uint16")]
    path = write_devices(
        tmp_path / "devices.yaml",
        thermostat("default", "thermostat-01", modbus_tcp_server.config_data(1)),
        documents("default", "sparse", modbus_tcp_server.config_data(2), sparse),
        documents("default", "gone", dead.config_data(1), sparse),
    )
    code, out, err = await run("mapper", "modbus", "--once", "--timeout", "0.5", "--devices", str(path))
    lines = [line.split(maxsplit=2) for line in out.splitlines()]
    assert lines[0] == ["DEVICE", "PROPERTY", "VALUE"]
    rows = {(device, prop): value for device, prop, value in lines[1:]}
    assert rows[("default/thermostat-01", "temperature")] == "21.5"
    assert rows[("default/thermostat-01", "setpoint")] == "20.0"
    assert rows[("default/thermostat-01", "heating")] == "false"
    assert rows[("default/sparse", "missing")].startswith("ERROR: Modbus exception 2 (illegal data address)")
    assert rows[("default/gone", "missing")].startswith("ERROR: cannot connect to 127.0.0.1:")
    assert code == 1, err  # some property could not be read


async def test_once_reads_numbers_written_as_strings(
    modbus_tcp_server: ModbusTcpSimulator, tmp_path: Path
) -> None:
    """KubeEdge users write numbers as strings (``port: "5502"``); every read succeeds: exit 0."""
    await modbus_tcp_server.set_holding(1, 0, [225])
    docs = thermostat(
        "default", "t", {key: str(value) for key, value in modbus_tcp_server.config_data(1).items()}
    )
    for prop in docs[1]["spec"]["properties"]:
        visitor = prop["visitors"]["configData"]
        visitor.update({key: str(visitor[key]) for key in ("offset", "limit", "scale") if key in visitor})
    code, out, err = await run(
        "mapper", "modbus", "--once", "--devices", str(write_devices(tmp_path / "d.yaml", docs))
    )
    assert code == 0, err
    assert "22.5" in out
    assert len(out.splitlines()) == 4


async def test_bad_device_file_names_the_field(tmp_path: Path) -> None:
    docs = thermostat("default", "t", {"communicateMode": "TCP", "ip": "127.0.0.1", "port": 1502})
    docs[1]["spec"]["properties"][0]["visitors"]["configData"]["register"] = "HoldRegister"
    path = write_devices(tmp_path / "devices.yaml", docs)
    code, _out, err = await run("mapper", "modbus", "--once", "--devices", str(path))
    assert code == 2
    assert "configData.register" in err
    assert "HoldRegister" in err


async def test_needs_a_node_or_once(tmp_path: Path) -> None:
    code, _out, err = await run("mapper", "modbus")
    assert code == 2
    assert "--node is required" in err


@contextlib.asynccontextmanager
async def mapper_process(*args: str) -> AsyncIterator[asyncio.subprocess.Process]:
    """A running ``edgetwin mapper modbus`` process; killed if the test did not stop it."""
    process = await asyncio.create_subprocess_exec(
        EDGETWIN, "mapper", "modbus", *args, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def http_get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status, response.read().decode()


async def test_mapper_process_reports_serves_metrics_and_stops_on_sigterm(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    await modbus_tcp_server.set_inputs(1, 0, [215])
    path = write_devices(
        tmp_path / "devices.yaml", thermostat(namespace, "thermostat", modbus_tcp_server.config_data(1))
    )
    metrics = f"127.0.0.1:{free_port()}"
    args = ("--broker", mosquitto.url, "--node", node, "--devices", str(path), "--metrics", metrics)
    async with mapper_process(*args) as process:
        # Standalone (devices from files): the reported values reach the broker.
        update = await probe.wait_message_async(
            device_topic(TopicKind.TWIN_UPDATE, namespace, "thermostat"),
            lambda m: m.json()["twin"]["temperature"]["actual"]["value"] == "21.5",
            timeout=15.0,
        )
        assert update.json()["twin"]["temperature"]["metadata"] == {"type": "float"}
        await probe.wait_message_async(
            device_topic(TopicKind.STATE_UPDATE, namespace, "thermostat"),
            lambda m: m.json()["state"] == "online",
        )

        status, body = await asyncio.to_thread(http_get, f"http://{metrics}/metrics")
        assert status == 200
        device = f'device="{namespace}/thermostat"'
        for series in (
            "edgetwin_mapper_reads_total",
            "edgetwin_mapper_polls_total",
            "edgetwin_mapper_request_seconds_count",
        ):
            assert f"{series}{{{device}}}" in body, series
        status, body = await asyncio.to_thread(http_get, f"http://{metrics}/healthz")
        assert status == 200
        assert f'"{namespace}/thermostat": "online"' in body

        process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            code = await process.wait()
        assert code == 0
        assert process.stderr is not None
        assert "modbus mapper stopped" in (await process.stderr.read()).decode()


async def test_edgecore_and_mapper_processes_end_to_end(
    modbus_tcp_server: ModbusTcpSimulator,
    mosquitto: MosquittoBroker,
    mqtt_probe: ProbeFactory,
    tmp_path: Path,
) -> None:
    """`edgetwin edgecore` then `edgetwin mapper modbus`, as a user starts them (KubeEdge #5021)."""
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    await modbus_tcp_server.set_inputs(1, 0, [215])
    devices = tmp_path / "devices"
    devices.mkdir()
    docs = thermostat(namespace, "thermostat", modbus_tcp_server.config_data(1))
    docs[1]["spec"]["nodeName"] = node
    write_devices(devices / "thermostat.yaml", docs)
    config = {
        "apiVersion": "edgecore.config.kubeedge.io/v1alpha2",
        "kind": "EdgeCore",
        "database": {"dataSource": str(tmp_path / "edgecore.db")},
        "modules": {
            "edged": {"hostnameOverride": node},
            "edgeHub": {"enable": False},
            "eventBus": {"mqttMode": 2, "mqttServerExternal": mosquitto.url, "mqttQOS": 1},
        },
        "edgetwin": {"healthz": f"127.0.0.1:{free_port()}"},
    }
    (tmp_path / "edgecore.yaml").write_text(yaml.safe_dump(config))
    edgecore = await asyncio.create_subprocess_exec(
        EDGETWIN,
        "edgecore",
        "--config",
        str(tmp_path / "edgecore.yaml"),
        "--devices",
        str(devices),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with mapper_process("--broker", mosquitto.url, "--node", node, "--timeout", "0.5") as mapper:
            await wait_actual(probe, namespace, "thermostat", "temperature", "21.5")
            set_expected(probe, namespace, "thermostat", "setpoint", "22.5")
            set_expected(probe, namespace, "thermostat", "heating", "true")

            async def written() -> bool:
                holding = await modbus_tcp_server.get_holding(1, 0)
                coils = await modbus_tcp_server.get_coils(1, 0)
                return holding == [225] and coils == [True]

            await eventually(written, "setpoint and heating written to the device")
            await wait_actual(probe, namespace, "thermostat", "setpoint", "22.5")
            mapper.send_signal(signal.SIGTERM)
            async with asyncio.timeout(10):
                assert await mapper.wait() == 0
    finally:
        if edgecore.returncode is None:
            edgecore.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(10):
                    await edgecore.wait()
            except TimeoutError:
                edgecore.kill()
                await edgecore.wait()

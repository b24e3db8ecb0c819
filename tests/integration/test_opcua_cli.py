"""``edgetwin mapper opcua`` and ``edgetwin mapper opcua-browse`` as a user runs them: separate processes
against a real asyncua server (which keeps serving on the test's event loop meanwhile)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from edgetwin.testing.opcua import OpcUaSimulator
from eventbus import MosquittoBroker, TopicKind
from tests.fixtures.mqtt import ProbeFactory
from tests.integration.test_modbus_mapper import device_topic, unique
from tests.integration.test_modbus_mapper_cli import EDGETWIN, run, write_devices
from tests.integration.test_opcua_mapper import Prop, documents

pytestmark = pytest.mark.asyncio(loop_scope="module")


async def test_browse_lists_the_variables_a_device_yaml_can_name(opcua_device: OpcUaSimulator) -> None:
    code, out, err = await run("mapper", "opcua-browse", opcua_device.url)

    assert code == 0, err
    header, *rows = [line.split() for line in out.splitlines()]
    assert header == ["NODE", "ID", "BROWSE", "PATH", "DATA", "TYPE", "ACCESS"]
    table = {row[0]: row[1:] for row in rows}
    assert table["ns=2;s=Device.temperature"] == ["0:Objects/2:Device/2:temperature", "Double", "read/write"]
    assert table["ns=2;s=Device.readonly"] == ["0:Objects/2:Device/2:readonly", "Int16", "read"]
    assert table["ns=2;s=Device.array"] == ["0:Objects/2:Device/2:array", "Int32[]", "read/write"]
    assert table["ns=2;s=Device.DateTime"][1] == "DateTime"
    assert len(rows) == len(opcua_device.variables)  # namespace 0's standard nodes are left out


async def test_browse_with_security_the_server_lacks_says_what_it_offers(
    opcua_device: OpcUaSimulator,
) -> None:
    code, _out, err = await run(
        "mapper",
        "opcua-browse",
        opcua_device.url,
        "--security-policy",
        "Basic256Sha256",
        "--security-mode",
        "Sign",
    )

    assert code == 1
    assert "offers no endpoint with securityPolicy Basic256Sha256 and securityMode Sign" in err
    assert "it offers (policy/mode) None/None" in err


async def test_once_prints_every_property_or_its_error(opcua_device: OpcUaSimulator, tmp_path: Path) -> None:
    await opcua_device.set("temperature", 21.5)
    props = [
        Prop("temperature", "DOUBLE", opcua_device.node_id("temperature")),
        Prop("series", "INT", opcua_device.node_id("array")),
        Prop("missing", "INT", "ns=2;s=Device.nothing"),
    ]
    path = write_devices(
        tmp_path / "devices.yaml", documents("default", "boiler", {"url": opcua_device.url}, props)
    )

    code, out, err = await run(
        "mapper", "opcua", "--once", "--devices", str(path), "--cert-dir", str(tmp_path)
    )

    lines = [line.split(maxsplit=2) for line in out.splitlines()]
    rows = {prop: value for _device, prop, value in lines[1:]}
    assert rows["temperature"] == "21.5"
    assert rows["series"] == "ERROR: node ns=2;s=Device.array is an array of Int32; twin values are scalars"
    assert rows["missing"] == "ERROR: node ns=2;s=Device.nothing cannot be used (BadNodeIdUnknown)"
    assert code == 1, err


async def test_mapper_process_reports_and_stops_on_sigterm(
    opcua_device: OpcUaSimulator, mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path
) -> None:
    namespace, node = unique("ns"), unique("node")
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#")
    await opcua_device.set("temperature", 30.5)
    docs = documents(
        namespace,
        "boiler",
        {"url": opcua_device.url},
        [Prop("t", "DOUBLE", opcua_device.node_id("temperature"))],
    )
    path = write_devices(tmp_path / "devices.yaml", docs)
    process = await asyncio.create_subprocess_exec(
        EDGETWIN,
        "mapper",
        "opcua",
        "--broker",
        mosquitto.url,
        "--node",
        node,
        "--devices",
        str(path),
        "--cert-dir",
        str(tmp_path / "certs"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await probe.wait_message_async(
            device_topic(TopicKind.TWIN_UPDATE, namespace, "boiler"),
            lambda m: m.json()["twin"]["t"]["actual"]["value"] == "30.5",
            timeout=15.0,
        )
        await opcua_device.set("temperature", 31.0)  # pushed by the subscription
        await probe.wait_message_async(
            device_topic(TopicKind.TWIN_UPDATE, namespace, "boiler"),
            lambda m: m.json()["twin"]["t"]["actual"]["value"] == "31.0",
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
    assert "opcua mapper stopped" in (await process.stderr.read()).decode()

"""Issue 9 end to end: ``kubectl edit device`` drives a real Modbus register, and the register comes back
in the Device's status.

Everything is real: the Kubernetes API fixture (kube-apiserver + etcd, and the emulator) with the
devices.kubeedge.io CRDs, cloudcore in-process, an edge joined with ``edgetwin join`` and run from the
edgecore.yaml it wrote (its own mosquitto, SQLite), the Modbus mapper learning its device through
membership, and a pymodbus server. A second, shorter test drives an asyncua server with the OPC-UA mapper.

The mappers run in this process (``mappers.sdk.Mapper``, as ``edgetwin mapper`` runs them): the edge's
mosquitto goes away while the edge is offline, and an in-process mapper can be told to reconnect within a
fraction of a second, where the command's defaults back off for up to 30 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import ua
from kubernetes import client as k8s

from cloudcore import CloudCore
from cloudcore.kube import request
from device_models import new_event_id, now_ms
from edgecore import EdgeCore, EdgeCoreConfig
from edgetwin.testing import wait_for
from edgetwin.testing.cluster import cloud_config, join_edge, running_cloud
from edgetwin.testing.kubeapi import KubeApi
from edgetwin.testing.modbus import ModbusTcpSimulator
from edgetwin.testing.opcua import OpcUaSimulator, Variable
from eventbus import BrokerSettings, MqttClient, TopicKind, topics
from mappers.modbus import LinkSettings, ModbusProtocol
from mappers.opcua import OpcUaProtocol, OpcUaSettings
from mappers.sdk import BackoffPolicy, Mapper, ProtocolPlugin

pytestmark = pytest.mark.kube

REPO = Path(__file__).resolve().parents[2]
THERMOSTAT = REPO / "examples" / "modbus-tcp-thermostat.yaml"
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
DEVICE = "thermostat-01"
SETPOINT = 1  # index of the setpoint in the example's spec.properties
TIMEOUT = 20.0
# Reads every 100 ms instead of the example's second: the test waits for reads, not for a slow device.
CYCLE_MS = 100
RECONNECT = BackoffPolicy(minimum=0.05, maximum=0.3)

needs_kubectl = pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")

JsonObject = dict[str, Any]


# -- the cluster ---------------------------------------------------------------------------------------------


@pytest.fixture
async def cloud(
    kube_client: k8s.ApiClient, kube_namespace: str, kube_crds: list[str]
) -> AsyncIterator[CloudCore]:
    """cloudcore in-process, its Secrets in the test's namespace."""
    async with running_cloud(kube_client, cloud_config(kube_namespace, keepalive=5)) as running:
        yield running


@pytest.fixture
async def edge_config(cloud: CloudCore, tmp_path: Path) -> EdgeCoreConfig:
    """An edge joined with ``edgetwin join`` (run in a thread: the command has its own event loop)."""
    return await asyncio.to_thread(join_edge, cloud, f"edge-{uuid.uuid4().hex[:8]}", tmp_path / "edge")


@contextlib.asynccontextmanager
async def running_mapper(plugin: ProtocolPlugin, edge: EdgeCoreConfig) -> AsyncIterator[Mapper]:
    """A mapper on the edge's own mosquitto, asking the node's membership; stopped on exit."""
    broker = BrokerSettings(url=edge.modules.event_bus.broker_url, reconnect_min=0.05, reconnect_max=0.3)
    mapper = Mapper(plugin, broker, node=edge.node_name, reconnect=RECONNECT)
    await mapper.start()
    try:
        yield mapper
    finally:
        await mapper.stop()


# -- Kubernetes objects --------------------------------------------------------------------------------------


def thermostat(namespace: str, node: str, simulator: ModbusTcpSimulator) -> list[JsonObject]:
    """The shipped example (DeviceModel, Device) in ``namespace``, bound to ``node``, on ``simulator``."""
    model, device = (copy.deepcopy(doc) for doc in yaml.safe_load_all(THERMOSTAT.read_text()))
    for obj in (model, device):
        obj["metadata"]["namespace"] = namespace
    device["spec"]["nodeName"] = node
    device["spec"]["protocol"]["configData"].update(simulator.config_data(1))
    for prop in device["spec"]["properties"]:
        prop["collectCycle"] = prop["reportCycle"] = CYCLE_MS
    return [model, device]


def boiler(namespace: str, node: str, simulator: OpcUaSimulator) -> list[JsonObject]:
    """An OPC-UA boiler: temperature (ReadOnly) and a writable setpoint with a desired value."""
    model = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "DeviceModel",
        "metadata": {"name": "boiler-model", "namespace": namespace},
        "spec": {
            "protocol": "opcua",
            "properties": [
                {"name": "temperature", "type": "DOUBLE", "accessMode": "ReadOnly"},
                {
                    "name": "setpoint",
                    "type": "DOUBLE",
                    "accessMode": "ReadWrite",
                    "minimum": "30",
                    "maximum": "90",
                },
            ],
        },
    }

    def prop(name: str) -> JsonObject:
        visitor = {"nodeID": simulator.node_id(name)}
        return {
            "name": name,
            "collectCycle": CYCLE_MS,
            "reportCycle": CYCLE_MS,
            "visitors": {"protocolName": "opcua", "configData": visitor},
        }

    device = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Device",
        "metadata": {"name": "boiler-01", "namespace": namespace},
        "spec": {
            "deviceModelRef": {"name": "boiler-model"},
            "nodeName": node,
            "protocol": {"protocolName": "opcua", "configData": {"url": simulator.url, "timeout": 2}},
            "properties": [prop("temperature"), {**prop("setpoint"), "desired": {"value": "60.5"}}],
        },
    }
    return [model, device]


def _path(namespace: str, plural: str, name: str = "") -> str:
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{plural}"
    return f"{path}/{name}" if name else path


async def apply(api: k8s.ApiClient, objects: list[JsonObject]) -> None:
    """Create the DeviceModel and the Device, as ``kubectl apply`` does for new objects."""
    for obj in objects:
        plural = "devicemodels" if obj["kind"] == "DeviceModel" else "devices"
        await request(api, "POST", _path(obj["metadata"]["namespace"], plural), body=obj)


async def patch_desired(api: k8s.ApiClient, namespace: str, name: str, index: int, value: str) -> None:
    """Set ``spec.properties[index].desired.value`` with the Python client (a JSON patch)."""
    custom = k8s.CustomObjectsApi(api)
    body = [{"op": "add", "path": f"/spec/properties/{index}/desired", "value": {"value": value}}]
    await asyncio.to_thread(
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        namespace,
        "devices",
        name,
        body,
        _content_type="application/json-patch+json",
    )


async def kubectl(api: KubeApi, *args: str, env: dict[str, str] | None = None) -> str:
    """Run kubectl against ``api``; its stdout (the test fails with its stderr on a non-zero exit)."""
    return await api.run_kubectl(*args, env=env)


def sed_editor(directory: Path, old: str, new: str) -> dict[str, str]:
    """Environment of a ``kubectl edit`` whose editor (sed) changes the desired value ``old`` to ``new``."""
    script = directory / "editor.sh"
    script.write_text(f'#!/bin/sh\nsed -i \'s/^\\( *value: \\)"{old}"$/\\1"{new}"/\' "$1"\n')
    script.chmod(0o755)
    return {"EDITOR": str(script)}


# -- what the status shows -----------------------------------------------------------------------------------


async def read_device(api: k8s.ApiClient, namespace: str, name: str) -> JsonObject:
    """The Device as the API holds it."""
    return await request(api, "GET", _path(namespace, "devices", name))


def twin_in_status(device: JsonObject, prop: str) -> JsonObject:
    """``status.twins[propertyName=prop]`` (empty when absent)."""
    for twin in (device.get("status") or {}).get("twins") or []:
        if twin.get("propertyName") == prop:
            return dict(twin)
    return {}


def condition_of(device: JsonObject, kind: str) -> JsonObject:
    """``status.conditions[type=kind]`` (empty when absent)."""
    for entry in (device.get("status") or {}).get("conditions") or []:
        if entry.get("type") == kind:
            return dict(entry)
    return {}


async def until(check: Callable[[], Awaitable[Any]], what: str, timeout: float = TIMEOUT) -> Any:
    """Wait until the async ``check`` returns something truthy; that value."""
    condition: Callable[[], object] = check  # wait_for cannot infer its T from a coroutine function
    return await wait_for(condition, timeout=timeout, what=what)


async def status_shows(
    api: k8s.ApiClient, namespace: str, name: str, prop: str, *, reported: str, desired: str | None = None
) -> JsonObject:
    """Wait until the status reports ``reported`` for ``prop`` (and observes ``desired`` when given)."""

    async def shown() -> JsonObject | None:
        device = await read_device(api, namespace, name)
        twin = twin_in_status(device, prop)
        if (twin.get("reported") or {}).get("value") != reported:
            return None
        if desired is not None and (twin.get("observedDesired") or {}).get("value") != desired:
            return None
        return device

    what = f"status of {name}: {prop} reported {reported!r}, observedDesired {desired!r}"
    found: JsonObject = await until(shown, what)
    return found


async def refused(api: k8s.ApiClient, namespace: str, name: str, reason: str, field: str) -> JsonObject:
    """Wait until the ``Valid`` condition of the Device's current generation is False with ``reason``,
    naming ``field``; the condition."""

    async def said() -> JsonObject | None:
        device = await read_device(api, namespace, name)
        valid = condition_of(device, "Valid")
        if valid.get("observedGeneration") != device["metadata"]["generation"]:
            return None
        if valid.get("status") == "False" and valid.get("reason") == reason and field in valid["message"]:
            return valid
        return None

    found: JsonObject = await until(said, f"condition Valid=False {reason} on {field}")
    return found


async def events_for(api: k8s.ApiClient, namespace: str, name: str) -> list[JsonObject]:
    """The Events about the Device ``name``."""
    found = await request(api, "GET", f"/api/v1/namespaces/{namespace}/events")
    return [event for event in found.get("items") or [] if event["involvedObject"].get("name") == name]


async def edge_app_sets(edge: EdgeCoreConfig, namespace: str, name: str, prop: str, value: str) -> None:
    """Publish a desired value on the edge's ``twin/update``, as a local MQTT app does."""
    client = MqttClient(BrokerSettings(url=edge.modules.event_bus.broker_url), client_id="edge-app")
    await client.start()
    try:
        body = {
            "event_id": new_event_id(),
            "timestamp": now_ms(),
            "twin": {prop: {"expected": {"value": value}}},
        }
        await client.publish(topics.device_topic(TopicKind.TWIN_UPDATE, namespace, name), json.dumps(body))
    finally:
        await client.stop()


# -- the tests -----------------------------------------------------------------------------------------------


@needs_kubectl
async def test_kubectl_edit_device_drives_the_modbus_register_and_the_status_reports_it(
    cloud: CloudCore,
    edge_config: EdgeCoreConfig,
    kube_api: KubeApi,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
    modbus_tcp_server: ModbusTcpSimulator,
    tmp_path: Path,
) -> None:
    namespace, node = kube_namespace, edge_config.node_name
    device_id = f"{namespace}/{DEVICE}"
    await modbus_tcp_server.set_inputs(1, 0, [203])  # 20.3 °C

    async def register(raw: int) -> bool:
        return (await modbus_tcp_server.get_holding(1, 0))[0] == raw

    async def drives(value: str) -> None:
        """The register takes ``value`` (tenths); the status reports it and observes it as desired."""
        await until(lambda: register(round(float(value) * 10)), f"holding register 0 = {value} x 10")
        await status_shows(kube_client, namespace, DEVICE, "setpoint", reported=value, desired=value)

    mapper_plugin = ModbusProtocol(LinkSettings(timeout=0.5, retries=0))
    edge = EdgeCore(edge_config)
    await edge.start()
    try:
        async with running_mapper(mapper_plugin, edge_config) as mapper:
            await apply(kube_client, thermostat(namespace, node, modbus_tcp_server))
            # Membership brought the Device (spec and model) to the mapper; the spec's desired value 21.5
            # went to the register.
            await until(lambda: register(215), "the desired value of the spec written")
            assert device_id in mapper.devices
            device = await status_shows(
                kube_client, namespace, DEVICE, "setpoint", reported="21.5", desired="21.5"
            )
            device = await status_shows(kube_client, namespace, DEVICE, "temperature", reported="20.3")
            assert condition_of(device, "Valid")["status"] == "True"

            async def online() -> JsonObject | None:
                found = await read_device(kube_client, namespace, DEVICE)
                status = found.get("status") or {}
                return found if status.get("state") == "online" and status.get("lastOnlineTime") else None

            await until(online, "status.state online with lastOnlineTime")

            # The Python client patches spec.properties[1].desired.value.
            await patch_desired(kube_client, namespace, DEVICE, SETPOINT, "23.5")
            await drives("23.5")

            # kubectl patch, as examples/modbus-tcp-thermostat.yaml shows it.
            patch = (
                f'[{{"op": "replace", "path": "/spec/properties/{SETPOINT}/desired/value", "value": "24.5"}}]'
            )
            await kubectl(kube_api, "patch", "device", DEVICE, "-n", namespace, "--type", "json", "-p", patch)
            await drives("24.5")

            # kubectl edit, with an editor that changes the value in the YAML it is shown.
            edited = await kubectl(
                kube_api, "edit", "device", DEVICE, "-n", namespace, env=sed_editor(tmp_path, "24.5", "25.5")
            )
            assert "edited" in edited
            await drives("25.5")

            # A change on the device side reaches the status.
            await modbus_tcp_server.set_inputs(1, 0, [0xFFCE])  # -5.0 °C
            await status_shows(kube_client, namespace, DEVICE, "temperature", reported="-5.0")

            # Invalid desired values: a condition and an Event say why; the edge never sees them.
            async def edge_untouched() -> None:
                twin = await edge.twin.get_twin(device_id)
                assert twin["setpoint"].expected_value == "25.5"
                assert twin["temperature"].expected_value is None
                assert await register(255)

            setpoint_field = "spec.properties[name=setpoint].desired.value"
            for value, why in (("warm", "'warm' is not a number (FLOAT)"), ("99", "above the maximum 35")):
                await patch_desired(kube_client, namespace, DEVICE, SETPOINT, value)
                valid = await refused(kube_client, namespace, DEVICE, "InvalidDesiredValue", setpoint_field)
                assert why in valid["message"], valid
                await edge_untouched()
            await patch_desired(kube_client, namespace, DEVICE, SETPOINT, "25.5")  # valid again
            await patch_desired(kube_client, namespace, DEVICE, 0, "30")  # on the ReadOnly temperature
            temperature_field = "spec.properties[name=temperature].desired.value"
            await refused(kube_client, namespace, DEVICE, "ReadOnlyProperty", temperature_field)
            await edge_untouched()
            reasons = {event["reason"] for event in await events_for(kube_client, namespace, DEVICE)}
            assert {"InvalidDesiredValue", "ReadOnlyProperty"} <= reasons

            # Fixed: the condition clears and the new value goes through.
            await request(
                kube_client,
                "PATCH",
                _path(namespace, "devices", DEVICE),
                body=[
                    {"op": "remove", "path": "/spec/properties/0/desired"},
                    {"op": "replace", "path": f"/spec/properties/{SETPOINT}/desired/value", "value": "26.5"},
                ],
                content_type="application/json-patch+json",
            )
            await drives("26.5")
            assert (
                condition_of(await read_device(kube_client, namespace, DEVICE), "Valid")["status"] == "True"
            )

            # An app at the edge sets the setpoint itself: the edge's newer write wins (CONTRACTS.md §1)
            # and the status says the cloud's desired value was superseded.
            await edge_app_sets(edge_config, namespace, DEVICE, "setpoint", "30.0")
            await until(lambda: register(300), "holding register 0 = 300 (the edge's own write)")
            await status_shows(kube_client, namespace, DEVICE, "setpoint", reported="30.0", desired="30.0")

            async def superseded() -> JsonObject | None:
                synced = condition_of(await read_device(kube_client, namespace, DEVICE), "DesiredSynced")
                return synced if synced.get("reason") == "SupersededAtEdge" else None

            synced = await until(superseded, "condition DesiredSynced=False SupersededAtEdge")
            assert synced["status"] == "False"
            assert "'26.5'" in synced["message"], synced
            assert "'30.0'" in synced["message"], synced

            # The edge goes offline; the desired value changes twice meanwhile; the last one arrives.
            await edge.stop()
            await patch_desired(kube_client, namespace, DEVICE, SETPOINT, "27.5")
            await patch_desired(kube_client, namespace, DEVICE, SETPOINT, "28.5")
            assert await register(300)
            await edge.start()
            await drives("28.5")
    finally:
        await edge.stop()


async def test_desired_value_reaches_an_opcua_node_and_its_changes_reach_the_status(
    cloud: CloudCore,
    edge_config: EdgeCoreConfig,
    kube_client: k8s.ApiClient,
    kube_namespace: str,
    tmp_path: Path,
) -> None:
    namespace, node = kube_namespace, edge_config.node_name
    variables = [
        Variable("temperature", ua.VariantType.Double, 55.0),
        Variable("setpoint", ua.VariantType.Double, 40.0),
    ]
    plugin = OpcUaProtocol(OpcUaSettings(cert_dir=tmp_path / "opcua-certs", timeout=2.0))
    async with (
        OpcUaSimulator(variables) as simulator,
        EdgeCore(edge_config),
        running_mapper(plugin, edge_config),
    ):
        await apply(kube_client, boiler(namespace, node, simulator))

        async def node_value(value: float) -> bool:
            return abs(float(await simulator.get("setpoint")) - value) < 1e-9

        await until(lambda: node_value(60.5), "Boiler.setpoint = 60.5 (the spec's desired value)")
        await status_shows(kube_client, namespace, "boiler-01", "setpoint", reported="60.5", desired="60.5")

        await patch_desired(kube_client, namespace, "boiler-01", 1, "72.5")
        await until(lambda: node_value(72.5), "Boiler.setpoint = 72.5")
        await status_shows(kube_client, namespace, "boiler-01", "setpoint", reported="72.5", desired="72.5")
        # A whole number for a Double node reads back as 75.0: it is reported as it was desired, in sync.
        await patch_desired(kube_client, namespace, "boiler-01", 1, "75")
        await until(lambda: node_value(75.0), "Boiler.setpoint = 75")
        await status_shows(kube_client, namespace, "boiler-01", "setpoint", reported="75", desired="75")

        await simulator.set("temperature", 61.25)
        await status_shows(kube_client, namespace, "boiler-01", "temperature", reported="61.25")

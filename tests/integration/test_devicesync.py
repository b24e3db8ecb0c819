"""edgecore's device sync against a real DeviceTwin, SQLite file and mosquitto.

The cloud link is outside the thing under test: the test hands messages to ``DeviceSync.received`` as the
EdgeLink would, and a recorder stands in for the link's sending side. What MQTT apps and mappers see is
read with a real MQTT probe.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from prometheus_client import CollectorRegistry

from cloudcore.devices import cloud_twin_message, object_message
from cloudsync import Message, Operation, ResourceType
from device_models import MsgTwin, TwinValue, TwinVersion, TypeMetadata
from devicetwin import DeviceNotFoundError, DeviceTwin, TwinStore
from edgecore.devicesync import DeviceObjectStore, DeviceSync, LinkCloudSink
from edgetwin.testing import wait_for
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import BrokerSettings, MosquittoBroker, MqttClient

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "modbus-tcp-thermostat.yaml"


@dataclass
class RecordingLink:
    """Stands in for the EdgeLink's sending side: records every message."""

    sent: list[Message] = field(default_factory=list)

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def edge_updated(self, device_id: str) -> list[dict[str, Any]]:
        resource = f"device/{device_id}/twin/edge_updated"
        return [message.content for message in self.sent if message.resource == resource]


@dataclass
class Edge:
    twin: DeviceTwin
    sync: DeviceSync
    link: RecordingLink
    probe: MqttProbe
    namespace: str
    node: str
    registry: CollectorRegistry
    restart: Callable[[], Awaitable[Edge]]
    rv: int = 100

    def model(self) -> dict[str, Any]:
        return self._example("DeviceModel")

    def device(self, *, desired: str | None = "21.5") -> dict[str, Any]:
        device = self._example("Device")
        device["spec"]["nodeName"] = self.node
        device["spec"]["properties"][1]["desired"] = {"value": desired} if desired else None
        if desired is None:
            del device["spec"]["properties"][1]["desired"]
        return device

    def _example(self, kind: str) -> dict[str, Any]:
        obj = next(doc for doc in yaml.safe_load_all(EXAMPLE.read_text()) if doc["kind"] == kind)
        obj = cast(dict[str, Any], copy.deepcopy(obj))
        self.rv += 1
        obj["metadata"].update(namespace=self.namespace, resourceVersion=str(self.rv), generation=1)
        return obj

    @property
    def device_id(self) -> str:
        return f"{self.namespace}/thermostat-01"

    def desired(self, value: str, cloud: int, edge: int = 0) -> Message:
        twin = MsgTwin(
            expected=TwinValue(value=value),
            optional=False,
            metadata=TypeMetadata(type="float"),
            expected_version=TwinVersion(cloud=cloud, edge=edge),
        )
        self.rv += 1
        return cloud_twin_message(self.device_id, {"setpoint": twin}, str(self.rv))

    async def deliver(self, operation: Operation, kind: ResourceType, obj: dict[str, Any]) -> None:
        await self.sync.received(object_message(operation, kind, obj, obj["metadata"]["resourceVersion"]))

    def topic(self, suffix: str) -> str:
        return f"$hw/events/device/{self.device_id}/{suffix}"


@pytest.fixture
async def edge(
    mosquitto: MosquittoBroker, mqtt_probe: Callable[..., MqttProbe], tmp_path: Path
) -> AsyncIterator[Edge]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    node = f"node-{namespace}"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#", f"$hw/events/node/{node}/#")
    db_path = tmp_path / "edgecore.db"
    link = RecordingLink()
    running: list[tuple[DeviceTwin, MqttClient, TwinStore, DeviceObjectStore]] = []

    async def stop_running() -> None:
        while running:
            twin, client, store, objects = running.pop()
            try:
                await twin.stop()
            finally:
                await client.stop()
                await store.close()
                await objects.close()

    async def start() -> Edge:
        await stop_running()
        registry = CollectorRegistry()
        store = await TwinStore.open(db_path, registry=registry)
        objects = DeviceObjectStore(db_path)
        client = MqttClient(BrokerSettings(url=mosquitto.url))
        twin = DeviceTwin(store, client, node, registry=registry, cloud=LinkCloudSink(link))
        running.append((twin, client, store, objects))
        await objects.open()
        await client.start()
        await twin.start()
        sync = DeviceSync(twin, objects, LinkCloudSink(link), link, registry=registry)
        await sync.start()
        return Edge(twin, sync, link, probe, namespace, node, registry, start)

    try:
        yield await start()
    finally:
        await stop_running()


async def test_model_device_and_desired_value_reach_the_mapper(edge: Edge) -> None:
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, edge.model())
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, edge.device())

    added = await edge.probe.wait_message_async(f"$hw/events/node/{edge.node}/membership/updated")
    entry = added.json()["added_devices"][0]
    assert entry["id"] == edge.device_id
    assert entry["spec"]["protocol"]["configData"]["port"] == "5502"
    assert [prop["name"] for prop in entry["model"]["properties"]] == ["temperature", "setpoint", "heating"]
    # The spec's desired value is not applied from the Device: only the versioned twin message sets it.
    twins = await edge.twin.get_twin(edge.device_id)
    assert twins["setpoint"].expected is None
    assert twins["setpoint"].value_type == "float"

    await edge.sync.received(edge.desired("21.5", cloud=1))

    delta = await edge.probe.wait_message_async(edge.topic("twin/update/delta"))
    assert delta.json()["delta"] == {"setpoint": "21.5"}
    [observed] = edge.link.edge_updated(edge.device_id)
    assert observed["twin"]["setpoint"]["expected"]["value"] == "21.5"
    assert observed["twin"]["setpoint"]["expected_version"] == {"cloud": 1, "edge": 0}
    assert "actual" not in observed["twin"]["setpoint"]


async def test_device_before_its_model_waits_with_its_desired_value(edge: Edge) -> None:
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, edge.device())
    await edge.sync.received(edge.desired("23", cloud=1))
    with pytest.raises(DeviceNotFoundError):
        await edge.twin.get_twin(edge.device_id)

    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, edge.model())

    delta = await edge.probe.wait_message_async(edge.topic("twin/update/delta"))
    assert delta.json()["delta"] == {"setpoint": "23"}
    assert edge.probe.received(f"$hw/events/node/{edge.node}/membership/updated")


async def test_devices_and_desired_values_survive_a_restart(edge: Edge) -> None:
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, edge.device())
    await edge.sync.received(edge.desired("24", cloud=1))
    # Restart before the model came: the device and its desired value were kept in SQLite.
    edge = await edge.restart()
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, edge.model())
    twins = await edge.twin.get_twin(edge.device_id)
    assert twins["setpoint"].expected_value == "24"

    # Restart again: the twin and the model are there; a later desired value still applies.
    edge = await edge.restart()
    assert [device.id for device in edge.twin.list_devices()] == [edge.device_id]
    await edge.sync.received(edge.desired("25", cloud=2))
    twins = await edge.twin.get_twin(edge.device_id)
    assert twins["setpoint"].expected_value == "25"
    assert twins["setpoint"].expected_version == TwinVersion(cloud=2, edge=0)


async def test_the_edge_newer_write_wins_over_an_older_cloud_update(edge: Edge) -> None:
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, edge.model())
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, edge.device())
    await edge.sync.received(edge.desired("21.5", cloud=1))
    # An app at the edge sets its own desired value (edge version 1) ...
    edge.probe.publish(
        edge.topic("twin/update"), {"event_id": "app", "twin": {"setpoint": {"expected": {"value": "19"}}}}
    )
    await edge.probe.wait_message_async(
        edge.topic("twin/update/result"), lambda m: m.json()["event_id"] == "app"
    )
    # ... then the cloud, not yet knowing it, sends edge version 0: refused, the edge's value goes back.
    await edge.sync.received(edge.desired("30", cloud=2, edge=0))

    twins = await edge.twin.get_twin(edge.device_id)
    assert twins["setpoint"].expected_value == "19"
    reports = edge.link.edge_updated(edge.device_id)
    assert reports[-1]["twin"]["setpoint"]["expected"]["value"] == "19"
    assert reports[-1]["twin"]["setpoint"]["expected_version"]["edge"] == 1

    # Knowing the edge's version, the cloud's next value wins.
    await edge.sync.received(edge.desired("30", cloud=3, edge=1))
    twins = await edge.twin.get_twin(edge.device_id)
    assert twins["setpoint"].expected_value == "30"


async def test_delete_removes_the_device_and_membership_is_answered(edge: Edge) -> None:
    model = edge.model()
    device = edge.device(desired=None)
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, model)
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, device)
    query = Message.new(source="cloudhub", group="twin", operation=Operation.QUERY, resource="membership")
    await edge.sync.received(query)
    [answer] = [message for message in edge.link.sent if message.header.parent_msg_id == query.msg_id]
    assert answer.content == {"devices": [{"id": edge.device_id, "name": "thermostat-01"}]}

    device["metadata"]["resourceVersion"] = "999"
    await edge.deliver(Operation.DELETE, ResourceType.DEVICE, device)

    removed = await edge.probe.wait_message_async(
        f"$hw/events/node/{edge.node}/membership/updated", lambda m: bool(m.json()["removed_devices"])
    )
    assert removed.json()["removed_devices"][0]["id"] == edge.device_id
    assert edge.twin.list_devices() == []
    edge = await edge.restart()
    assert edge.twin.list_devices() == []


async def test_a_bad_message_is_refused_and_counted_without_stopping(edge: Edge) -> None:
    broken = edge.device()
    broken["spec"]["properties"][0]["name"] = "no such property"
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE_MODEL, edge.model())
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, broken)
    await edge.deliver(Operation.INSERT, ResourceType.DEVICE, edge.device())

    await wait_for(lambda: edge.twin.list_devices(), 5.0, what="the valid device declared")
    assert [device.id for device in edge.twin.list_devices()] == [edge.device_id]
    assert edge.registry.get_sample_value("edgetwin_devicesync_errors_total", {"kind": "refused"}) == 1

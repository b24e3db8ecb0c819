"""DeviceTwin against a real mosquitto and a real SQLite file, driven as a KubeEdge app drives edgecore.

The outside app is :class:`MqttProbe` (plain paho); every payload is checked field by field against
CONTRACTS.md §1. The cloud link is outside the thing under test: a recorder stands in for it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from device_models import MsgTwin
from devicetwin import (
    DeviceNotFoundError,
    DeviceTwin,
    TwinDevice,
    TwinProperty,
    TwinStore,
)
from edgetwin.testing import wait_for
from edgetwin.testing.mosquitto import MqttProbe, ProbeMessage
from eventbus import BrokerSettings, MosquittoBroker, MqttClient

ProbeFactory = Callable[..., MqttProbe]


@dataclass
class RecordingCloud:
    """Stands in for the cloud link: records what the twin hands over; optionally holds one device back."""

    calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    hold: str | None = None
    released: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, resource: str, operation: str, content: dict[str, Any]) -> None:
        if self.hold is not None and resource.startswith(f"device/{self.hold}/"):
            await self.released.wait()
        self.calls.append((resource, operation, content))

    def sent(self, resource: str) -> list[dict[str, Any]]:
        return [content for sent_resource, _, content in self.calls if sent_resource == resource]


@dataclass
class Edge:
    """A running twin, the app's probe and what the test needs to address them."""

    twin: DeviceTwin
    client: MqttClient
    probe: MqttProbe
    cloud: RecordingCloud
    registry: CollectorRegistry
    namespace: str
    node: str
    db_path: Path
    restart: Callable[[], Awaitable[Edge]]

    def device_topic(self, name: str, suffix: str, *, legacy: bool = False) -> str:
        return (
            f"$hw/events/device/{name}/{suffix}"
            if legacy
            else f"$hw/events/device/{self.namespace}/{name}/{suffix}"
        )

    def node_topic(self, suffix: str) -> str:
        return f"$hw/events/node/{self.node}/{suffix}"

    def send(self, name: str, suffix: str, body: dict[str, Any] | bytes, *, legacy: bool = False) -> None:
        self.probe.publish(self.device_topic(name, suffix, legacy=legacy), body)

    async def receive(
        self, name: str, suffix: str, event_id: str | None = None, *, legacy: bool = False
    ) -> ProbeMessage:
        def matches(message: ProbeMessage) -> bool:
            return event_id is None or message.json()["event_id"] == event_id

        return await self.probe.wait_message_async(self.device_topic(name, suffix, legacy=legacy), matches)

    async def flush(self, name: str) -> None:
        """Return once everything the twin published about ``name`` so far has reached the probe.

        The twin publishes in order through one connection: the answer to a request sent now comes last.
        """
        event_id = f"flush-{uuid.uuid4().hex}"
        self.send(name, "twin/get", {"event_id": event_id})
        await self.receive(name, "twin/get/result", event_id)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def edge(mosquitto: MosquittoBroker, mqtt_probe: ProbeFactory, tmp_path: Path) -> AsyncIterator[Edge]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    node = f"node-{namespace}"
    probe = mqtt_probe(f"$hw/events/device/{namespace}/#", f"$hw/events/node/{node}/#")
    db_path = tmp_path / "edgecore.db"
    cloud = RecordingCloud()
    running: list[tuple[DeviceTwin, MqttClient, TwinStore]] = []

    async def stop_running() -> None:
        while running:
            twin, client, store = running.pop()
            try:
                await twin.stop()
            finally:
                try:
                    await client.stop()
                finally:
                    await store.close()

    async def start() -> Edge:
        await stop_running()
        registry = CollectorRegistry()
        store = await TwinStore.open(db_path, registry=registry)
        client = MqttClient(BrokerSettings(url=mosquitto.url))
        twin = DeviceTwin(store, client, node, registry=registry, cloud=cloud)
        running.append((twin, client, store))
        await client.start()
        await twin.start()
        return Edge(twin, client, probe, cloud, registry, namespace, node, db_path, start)

    try:
        yield await start()
    finally:
        await stop_running()


THERMOSTAT_SPEC = {
    "deviceModelRef": {"name": "thermostat-model"},
    "nodeName": "edge-node-1",
    "protocol": {"protocolName": "modbus", "configData": {"communicateMode": "TCP", "port": "5502"}},
}
THERMOSTAT_MODEL = {"properties": [{"name": "target", "type": "FLOAT", "accessMode": "ReadWrite"}]}


def thermostat(edge: Edge, name: str = "thermostat", **overrides: Any) -> TwinDevice:
    fields: dict[str, Any] = {
        "namespace": edge.namespace,
        "name": name,
        "description": "lab thermostat",
        "attributes": {"serial": "T-100"},
        "properties": [TwinProperty("target", type="float"), TwinProperty("mode", optional=True)],
        "spec": THERMOSTAT_SPEC,
        "model": THERMOSTAT_MODEL,
    }
    return TwinDevice(**(fields | overrides))


async def wait_until(condition: Callable[[], object], timeout: float = 5.0) -> None:
    await wait_for(condition, timeout, what=getattr(condition, "__qualname__", None))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def assert_ms(timestamp: object, since: int) -> None:
    """A Unix-milliseconds timestamp taken during the test."""
    assert isinstance(timestamp, int)
    assert since <= timestamp <= now_ms() + 1


def keys_of(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in keys_of(item)}
    if isinstance(value, list):
        return {key for item in value for key in keys_of(item)}
    return set()


def assert_no_versions(body: object) -> None:
    assert not keys_of(body) & {"expected_version", "actual_version"}, body


def stamped(value: str, since: int, stamp: object) -> None:
    assert isinstance(stamp, dict)
    assert stamp["value"] == value
    assert set(stamp) == {"value", "metadata"}
    assert_ms(stamp["metadata"]["timestamp"], since)


def is_uuid(text: str) -> bool:
    return str(uuid.UUID(text)) == text


def position(edge: Edge, message: ProbeMessage) -> int:
    return next(i for i, seen in enumerate(edge.probe.messages) if seen is message)


# --- twin/update --------------------------------------------------------------------------------------


async def test_reported_value_answers_result_then_document_without_delta(edge: Edge) -> None:
    # KubeEdge #5468: a reported value is taken for a property nobody declared beforehand.
    await edge.twin.upsert_device(thermostat(edge))
    since = now_ms()

    edge.send(
        "thermostat",
        "twin/update",
        {"event_id": "r1", "timestamp": since, "twin": {"humidity": {"actual": {"value": "40"}}}},
    )

    result = await edge.receive("thermostat", "twin/update/result", "r1")
    body = result.json()
    assert set(body) == {"event_id", "timestamp", "twin"}
    assert_ms(body["timestamp"], since)
    assert list(body["twin"]) == ["humidity"]
    humidity = body["twin"]["humidity"]
    assert set(humidity) == {"actual", "optional", "metadata"}
    stamped("40", since, humidity["actual"])
    assert humidity["optional"] is True
    assert humidity["metadata"] == {"type": "string"}

    document = await edge.receive("thermostat", "twin/update/document", "r1")
    doc = document.json()
    assert doc["twin"] == {"humidity": {"last": None, "current": humidity}}
    assert position(edge, result) < position(edge, document)
    assert_no_versions(body)
    assert_no_versions(doc)
    # Only a reported value changed and no desired value is pending: no delta is due.
    await edge.flush("thermostat")
    assert not edge.probe.received(edge.device_topic("thermostat", "twin/update/delta"))


async def test_desired_value_set_at_the_edge_publishes_delta_and_reaches_the_cloud(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))
    edge.send(
        "thermostat", "twin/update", {"event_id": "a1", "twin": {"target": {"actual": {"value": "20.5"}}}}
    )
    await edge.receive("thermostat", "twin/update/result", "a1")
    since = now_ms()

    edge.send(
        "thermostat", "twin/update", {"event_id": "d1", "twin": {"target": {"expected": {"value": "22"}}}}
    )

    result = await edge.receive("thermostat", "twin/update/result", "d1")
    document = await edge.receive("thermostat", "twin/update/document", "d1")
    delta = await edge.receive("thermostat", "twin/update/delta", None)
    assert position(edge, result) < position(edge, document) < position(edge, delta)

    target = result.json()["twin"]["target"]
    assert set(target) == {"expected", "optional", "metadata"}
    stamped("22", since, target["expected"])
    assert (target["optional"], target["metadata"]) == (False, {"type": "float"})

    last, current = document.json()["twin"]["target"]["last"], document.json()["twin"]["target"]["current"]
    assert "expected" not in last
    assert last["actual"]["value"] == current["actual"]["value"] == "20.5"
    assert current["expected"] == target["expected"]

    body = delta.json()
    assert is_uuid(body["event_id"])
    assert body["event_id"] != "d1"
    assert_ms(body["timestamp"], since)
    assert body["delta"] == {"target": "22"}
    assert set(body["twin"]) == {"target", "mode"}  # every live property, declared "mode" included
    assert body["twin"]["target"]["actual"]["value"] == "20.5"
    for message in (result, document, delta):
        assert_no_versions(message.json())

    # KubeEdge #4166 / #3299: a desired value set at the edge reaches the cloud, with its versions.
    resource = f"device/{edge.namespace}/thermostat/twin/edge_updated"
    await wait_until(
        lambda: any("expected" in sent["twin"].get("target", {}) for sent in edge.cloud.sent(resource))
    )
    synced = [sent for sent in edge.cloud.sent(resource) if "expected" in sent["twin"]["target"]][-1]
    assert synced["twin"]["target"]["expected"]["value"] == "22"
    assert synced["twin"]["target"]["expected_version"] == {"cloud": 0, "edge": 1}
    assert edge.cloud.calls[-1][1] == "update"


async def test_delta_lists_every_live_property(edge: Edge) -> None:
    await edge.twin.upsert_device(
        thermostat(edge, properties=[TwinProperty("target", type="float", expected="21")])
    )
    edge.send(
        "thermostat", "twin/update", {"event_id": "u1", "twin": {"mode": {"actual": {"value": "auto"}}}}
    )

    await edge.receive("thermostat", "twin/update/result", "u1")
    delta = await edge.probe.wait_message_async(
        edge.device_topic("thermostat", "twin/update/delta"), lambda m: "mode" in m.json()["twin"]
    )

    assert delta.json()["delta"] == {"target": "21"}
    assert set(delta.json()["twin"]) == {"target", "mode"}


async def test_null_soft_deletes_an_optional_property(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))
    edge.send("thermostat", "twin/update", {"event_id": "m1", "twin": {"mode": {"actual": {"value": "eco"}}}})
    await edge.receive("thermostat", "twin/update/result", "m1")

    edge.send("thermostat", "twin/update", {"event_id": "m2", "twin": {"mode": None}})

    result = await edge.receive("thermostat", "twin/update/result", "m2")
    assert result.json()["twin"] == {"mode": None}
    document = await edge.receive("thermostat", "twin/update/document", "m2")
    mode = document.json()["twin"]["mode"]
    assert mode["current"] is None
    assert mode["last"]["actual"]["value"] == "eco"
    edge.send("thermostat", "twin/get", {"event_id": "g1"})
    answer = await edge.receive("thermostat", "twin/get/result", "g1")
    assert set(answer.json()["twin"]) == {"target"}
    deleted = [
        sent["twin"]["mode"]
        for sent in edge.cloud.sent(f"device/{edge.namespace}/thermostat/twin/edge_updated")
        if "mode" in sent["twin"]
    ][-1]
    assert deleted["metadata"] == {"type": "deleted"}


async def test_requests_of_one_device_are_answered_in_order(edge: Edge) -> None:
    # KubeEdge #5892: no request limiter; a burst is served, in order.
    await edge.twin.upsert_device(thermostat(edge))

    for i in range(40):
        edge.send(
            "thermostat",
            "twin/update",
            {"event_id": f"o{i}", "twin": {"target": {"actual": {"value": str(i)}}}},
        )

    await edge.receive("thermostat", "twin/update/result", "o39")
    results = [
        m.json()["event_id"]
        for m in edge.probe.received(edge.device_topic("thermostat", "twin/update/result"))
    ]
    assert results == [f"o{i}" for i in range(40)]
    twins = await edge.twin.get_twin(f"{edge.namespace}/thermostat")
    assert twins["target"].actual_value == "39"
    assert twins["target"].actual_version is not None
    assert twins["target"].actual_version.edge == 40


async def test_legacy_one_segment_ids_are_answered_on_the_legacy_topics(edge: Edge) -> None:
    # KubeEdge #5407: apps written for one-segment ids keep working next to namespaced ones.
    name = f"legacy-{edge.namespace}"
    edge.probe.subscribe(f"$hw/events/device/{name}/#")
    await edge.twin.upsert_device(TwinDevice("default", name, properties=[TwinProperty("level", type="int")]))

    edge.send(
        name, "twin/update", {"event_id": "l1", "twin": {"level": {"expected": {"value": "3"}}}}, legacy=True
    )

    result = await edge.receive(name, "twin/update/result", "l1", legacy=True)
    assert result.json()["twin"]["level"]["expected"]["value"] == "3"
    await edge.receive(name, "twin/update/document", "l1", legacy=True)
    delta = await edge.receive(name, "twin/update/delta", legacy=True)
    assert delta.json()["delta"] == {"level": "3"}
    edge.send(name, "twin/get", {"event_id": "l2"}, legacy=True)
    answer = await edge.receive(name, "twin/get/result", "l2", legacy=True)
    assert answer.json()["twin"]["level"]["metadata"] == {"type": "int"}
    assert (await edge.twin.get_twin(f"default/{name}"))["level"].expected_value == "3"


# --- refusals -----------------------------------------------------------------------------------------

OVERSIZED = b'{"event_id": "big", "twin": {}, "pad": "' + b"x" * (1 << 20) + b'"}'

BAD_UPDATES = [
    pytest.param(b"{not json", "", None, "not valid JSON", id="invalid-json"),
    pytest.param(b"\xff\xfe\x00", "", None, "not valid JSON", id="not-utf8"),
    pytest.param(b"[1, 2]", "", None, "JSON object", id="not-an-object"),
    pytest.param({"event_id": "b3"}, "b3", None, "no twin", id="no-twin"),
    pytest.param({"event_id": 5, "twin": {}}, "", None, "event_id", id="event-id-not-a-string"),
    pytest.param(
        {"event_id": "b4", "twin": {"target": {"actual": {"value": 21}}}},
        "b4",
        "target",
        "string",
        id="number",
    ),
    pytest.param({"event_id": "b5", "twin": {"bad name": {}}}, "b5", "bad name", "1-128", id="bad-name"),
    pytest.param(
        {"event_id": "b6", "twin": {"target": {"actual": {"value": "two words"}}}},
        "b6",
        "target",
        "1-512",
        id="bad-value",
    ),
    pytest.param(
        {"event_id": "b7", "twin": {"target": {"actual": {"value": "warm"}}}},
        "b7",
        "target",
        "float",
        id="type",
    ),
    pytest.param(
        {"event_id": "b8", "twin": {"target": None}}, "b8", "target", "not optional", id="not-optional"
    ),
    pytest.param(OVERSIZED, "", None, "more than the 1048576", id="oversized"),
]


@pytest.mark.parametrize(("payload", "event_id", "prop", "reason"), BAD_UPDATES)
async def test_bad_updates_are_answered_400_on_the_device_result_topic(
    edge: Edge, payload: dict[str, Any] | bytes, event_id: str, prop: str | None, reason: str
) -> None:
    await edge.twin.upsert_device(thermostat(edge))
    since = now_ms()

    edge.send("thermostat", "twin/update", payload)

    answer = (await edge.receive("thermostat", "twin/update/result")).json()
    assert answer["code"] == 400
    assert answer["event_id"] == event_id
    assert reason in answer["reason"]
    assert answer.get("property") == prop
    assert_ms(answer["timestamp"], since)
    assert "twin" not in answer
    await wait_until(lambda: edge.metric("edgetwin_twin_errors_total", code="400") == 1)
    # Nothing was written, and the twin keeps serving.
    edge.send(
        "thermostat", "twin/update", {"event_id": "ok", "twin": {"target": {"actual": {"value": "1.5"}}}}
    )
    assert "twin" in (await edge.receive("thermostat", "twin/update/result", "ok")).json()
    assert (await edge.twin.get_twin(f"{edge.namespace}/thermostat"))["target"].actual_value == "1.5"


async def test_unknown_devices_are_answered_404(edge: Edge) -> None:
    edge.send("ghost", "twin/update", {"event_id": "n1", "twin": {"p": {"actual": {"value": "1"}}}})
    edge.send("ghost", "twin/get", {"event_id": "n2"})
    edge.send("ghost", "state/update", {"event_id": "n3", "state": "online"})

    for suffix, event_id in (
        ("twin/update/result", "n1"),
        ("twin/get/result", "n2"),
        ("state/update/result", "n3"),
    ):
        answer = (await edge.receive("ghost", suffix, event_id)).json()
        assert answer["code"] == 404
        assert f"{edge.namespace}/ghost" in answer["reason"]
    assert edge.metric("edgetwin_twin_errors_total", code="404") == 3
    with pytest.raises(DeviceNotFoundError):
        await edge.twin.get_twin(f"{edge.namespace}/ghost")


async def test_bad_get_and_membership_requests_are_answered_400(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))

    edge.send("thermostat", "twin/get", b"nope")
    edge.probe.publish(edge.node_topic("membership/get"), b'{"event_id": "mg", "timestamp": "soon"}')

    assert (await edge.receive("thermostat", "twin/get/result")).json()["code"] == 400
    membership = await edge.probe.wait_message_async(edge.node_topic("membership/get/result"))
    assert membership.json()["code"] == 400
    assert membership.json()["event_id"] == "mg"


async def test_store_failure_is_answered_500_and_nothing_is_published_or_kept(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))
    with sqlite3.connect(edge.db_path) as conn:
        conn.execute(
            "CREATE TRIGGER full BEFORE UPDATE ON device_twin "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )

    edge.send(
        "thermostat", "twin/update", {"event_id": "f1", "twin": {"target": {"expected": {"value": "30"}}}}
    )

    answer = (await edge.receive("thermostat", "twin/update/result", "f1")).json()
    assert answer["code"] == 500
    assert "disk is full" in answer["reason"]
    edge.send("thermostat", "twin/get", {"event_id": "f2"})
    after = (await edge.receive("thermostat", "twin/get/result", "f2")).json()
    assert "expected" not in after["twin"]["target"]
    documents = edge.probe.received(edge.device_topic("thermostat", "twin/update/document"))
    assert [m.json()["event_id"] for m in documents if m.json()["event_id"] == "f1"] == []
    assert edge.metric("edgetwin_twin_errors_total", code="500") == 1


async def test_a_stuck_device_does_not_hold_up_the_others(edge: Edge) -> None:
    for name in ("stuck", "free"):
        await edge.twin.upsert_device(thermostat(edge, name))
    edge.cloud.hold = f"{edge.namespace}/stuck"

    edge.send("stuck", "twin/update", {"event_id": "s1", "twin": {"target": {"actual": {"value": "1"}}}})
    await edge.receive("stuck", "twin/update/result", "s1")
    edge.send("stuck", "twin/update", {"event_id": "s2", "twin": {"target": {"actual": {"value": "2"}}}})
    for i in range(5):
        edge.send(
            "free", "twin/update", {"event_id": f"f{i}", "twin": {"target": {"actual": {"value": str(i)}}}}
        )
    await edge.receive("free", "twin/update/result", "f4")

    # The stuck device's next request waits for its lane; it is served, in order, once the cloud link moves.
    assert not [
        m
        for m in edge.probe.received(edge.device_topic("stuck", "twin/update/result"))
        if m.json()["event_id"] == "s2"
    ]
    edge.cloud.released.set()
    await edge.receive("stuck", "twin/update/result", "s2")


# --- twin/get, state, membership ---------------------------------------------------------------------


async def test_twin_get_answers_declared_properties_before_any_report(edge: Edge) -> None:
    # KubeEdge #5758: the MQTT twin path must answer real content, not {}.
    await edge.twin.upsert_device(
        thermostat(edge, properties=[TwinProperty("target", type="float", expected="21.5")])
    )
    await edge.twin.upsert_device(thermostat(edge, "bare", properties=[]))
    since = now_ms()

    edge.send("thermostat", "twin/get", {"event_id": "g1", "timestamp": since})
    edge.send("bare", "twin/get", {"event_id": "g2"})

    body = (await edge.receive("thermostat", "twin/get/result", "g1")).json()
    assert set(body) == {"event_id", "timestamp", "twin"}
    assert_ms(body["timestamp"], since)
    target = body["twin"]["target"]
    assert target["expected"]["value"] == "21.5"
    assert target["metadata"] == {"type": "float"}
    assert target["optional"] is False
    assert_no_versions(body)
    assert (await edge.receive("bare", "twin/get/result", "g2")).json()["twin"] == {}


async def test_state_update_is_recorded_answered_and_sent_to_the_cloud(edge: Edge) -> None:
    # KubeEdge #5542: devices have an online / offline state.
    await edge.twin.upsert_device(thermostat(edge))
    since = now_ms()

    edge.send("thermostat", "state/update", {"event_id": "s1", "timestamp": since, "state": "online"})

    result = (await edge.receive("thermostat", "state/update/result")).json()
    assert set(result) == {"event_id", "timestamp", "device"}
    assert is_uuid(result["event_id"])
    assert_ms(result["timestamp"], since)
    device = result["device"]
    assert set(device) == {"name", "state", "lastOnlineTime"}
    assert (device["name"], device["state"]) == ("thermostat", "online")
    assert time.strptime(device["lastOnlineTime"], "%Y-%m-%dT%H:%M:%SZ")
    resource = f"device/{edge.namespace}/thermostat/state/update"
    await wait_until(lambda: edge.cloud.sent(resource))
    assert edge.cloud.sent(resource)[0]["device"] == device

    edge.send("thermostat", "state/update", {"event_id": "s2", "state": "offline"})
    offline = await edge.probe.wait_message_async(
        edge.device_topic("thermostat", "state/update/result"),
        lambda m: m.json()["device"]["state"] == "offline",
    )
    assert offline.json()["device"]["lastOnlineTime"] == device["lastOnlineTime"]
    [snapshot] = edge.twin.list_devices()
    assert (snapshot.record.state, snapshot.record.last_online) == ("offline", device["lastOnlineTime"])


async def test_unknown_state_is_answered_400(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))

    edge.send("thermostat", "state/update", {"event_id": "s3", "state": "sleeping"})

    answer = (await edge.receive("thermostat", "state/update/result", "s3")).json()
    assert answer["code"] == 400
    assert "sleeping" in answer["reason"]
    assert edge.twin.list_devices()[0].record.state == ""


async def test_membership_get_lists_devices_with_spec_and_model(edge: Edge) -> None:
    # KubeEdge #5021: devices created before the mapper starts are there when it asks.
    await edge.twin.upsert_device(thermostat(edge))
    await edge.twin.upsert_device(TwinDevice(edge.namespace, "bare"))
    edge.send("thermostat", "state/update", {"event_id": "s", "state": "online"})
    await edge.receive("thermostat", "state/update/result")
    since = now_ms()

    edge.probe.publish(edge.node_topic("membership/get"), {"event_id": "mg1", "timestamp": since})

    body = (await edge.probe.wait_message_async(edge.node_topic("membership/get/result"))).json()
    assert body["event_id"] == "mg1"
    assert_ms(body["timestamp"], since)
    bare, thermo = body["devices"]
    assert bare == {"id": f"{edge.namespace}/bare", "name": "bare"}
    assert set(thermo) == {"id", "name", "description", "state", "last_online", "attributes", "spec", "model"}
    assert thermo["id"] == f"{edge.namespace}/thermostat"
    assert thermo["state"] == "online"
    assert thermo["attributes"] == {
        "serial": {"value": "T-100", "optional": True, "metadata": {"type": "string"}}
    }
    assert thermo["spec"] == THERMOSTAT_SPEC
    assert thermo["model"] == THERMOSTAT_MODEL


async def test_membership_updated_on_add_and_remove_but_not_on_an_identical_upsert(edge: Edge) -> None:
    await edge.twin.upsert_device(
        thermostat(edge, properties=[TwinProperty("target", type="float", expected="20")])
    )

    added = (await edge.probe.wait_message_async(edge.node_topic("membership/updated"))).json()
    assert added["removed_devices"] == []
    [entry] = added["added_devices"]
    assert (entry["id"], entry["name"], entry["spec"], entry["model"]) == (
        f"{edge.namespace}/thermostat",
        "thermostat",
        THERMOSTAT_SPEC,
        THERMOSTAT_MODEL,
    )
    assert entry["twin"]["target"]["expected"]["value"] == "20"
    assert_no_versions(added)

    # KubeEdge #6269: declaring the same device again must not announce it again.
    await edge.twin.upsert_device(
        thermostat(edge, properties=[TwinProperty("target", type="float", expected="20")])
    )
    await edge.twin.remove_device(f"{edge.namespace}/thermostat")

    removed = (await edge.probe.wait_message_async(edge.node_topic("membership/updated"))).json()
    assert removed["added_devices"] == []
    assert removed["removed_devices"] == [{"id": f"{edge.namespace}/thermostat", "name": "thermostat"}]
    assert edge.twin.list_devices() == []
    with pytest.raises(DeviceNotFoundError):
        await edge.twin.remove_device(f"{edge.namespace}/thermostat")


async def test_attribute_changes_are_published_on_updated(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))
    first = (await edge.receive("thermostat", "updated")).json()
    assert first["attributes"] == {
        "serial": {"value": "T-100", "optional": True, "metadata": {"type": "string"}}
    }

    await edge.twin.upsert_device(thermostat(edge, attributes={"site": "lab-2"}))

    second = (await edge.receive("thermostat", "updated")).json()
    assert is_uuid(second["event_id"])
    assert second["attributes"] == {
        "site": {"value": "lab-2", "optional": True, "metadata": {"type": "string"}},
        "serial": None,
    }


async def test_a_desired_value_declared_by_the_cloud_side_is_announced_with_a_delta(edge: Edge) -> None:
    await edge.twin.upsert_device(thermostat(edge))

    await edge.twin.upsert_device(
        thermostat(edge, properties=[TwinProperty("target", type="float", expected="19")])
    )

    delta = (await edge.receive("thermostat", "twin/update/delta")).json()
    assert delta["delta"] == {"target": "19"}
    document = await edge.probe.wait_message_async(
        edge.device_topic("thermostat", "twin/update/document"),
        lambda m: "expected" in m.json()["twin"]["target"]["current"],
    )
    assert document.json()["twin"]["target"]["current"]["expected"]["value"] == "19"


# --- cloud updates ------------------------------------------------------------------------------------


async def test_cloud_update_version_rules(edge: Edge) -> None:
    device_id = f"{edge.namespace}/thermostat"
    await edge.twin.upsert_device(thermostat(edge))
    current = (await edge.twin.get_twin(device_id))["target"]
    assert current.expected_version is not None

    applied = await edge.twin.apply_cloud_update(
        device_id,
        {
            "target": MsgTwin.model_validate(
                {"expected": {"value": "24"}, "expected_version": {"cloud": 5, "edge": 0}}
            )
        },
        event_id="c1",
    )

    assert applied.applied == ("target",)
    assert applied.rejected == {}
    document = (await edge.receive("thermostat", "twin/update/document", "c1")).json()
    assert document["twin"]["target"]["current"]["expected"]["value"] == "24"
    assert (await edge.receive("thermostat", "twin/update/delta")).json()["delta"] == {"target": "24"}

    # An older cloud version is refused.
    stale = await edge.twin.apply_cloud_update(
        device_id,
        {
            "target": MsgTwin.model_validate(
                {"expected": {"value": "1"}, "expected_version": {"cloud": 4, "edge": 0}}
            )
        },
    )
    assert "cloud version 5" in stale.rejected["target"]

    # The edge writes; a cloud update that has not seen that write loses, and the edge's twin goes back.
    edge.send(
        "thermostat", "twin/update", {"event_id": "e1", "twin": {"target": {"expected": {"value": "26"}}}}
    )
    await edge.receive("thermostat", "twin/update/result", "e1")
    edge.cloud.calls.clear()
    conflict = await edge.twin.apply_cloud_update(
        device_id,
        {
            "target": MsgTwin.model_validate(
                {"expected": {"value": "25"}, "expected_version": {"cloud": 6, "edge": 0}}
            )
        },
    )
    assert "edge wins" in conflict.rejected["target"]
    [(resource, operation, content)] = edge.cloud.calls
    assert (resource, operation) == (f"device/{device_id}/twin/edge_updated", "update")
    assert content["twin"]["target"]["expected"]["value"] == "26"
    assert content["twin"]["target"]["expected_version"] == {"cloud": 5, "edge": 1}
    assert (await edge.twin.get_twin(device_id))["target"].expected_value == "26"


# --- durability ---------------------------------------------------------------------------------------


async def test_restart_on_the_same_database_keeps_everything(edge: Edge) -> None:
    device_id = f"{edge.namespace}/thermostat"
    await edge.twin.upsert_device(thermostat(edge))
    edge.send(
        "thermostat",
        "twin/update",
        {
            "event_id": "p1",
            "twin": {
                "target": {"actual": {"value": "20"}, "expected": {"value": "21"}},
                "extra": {"actual": {"value": "x"}},
            },
        },
    )
    edge.send("thermostat", "twin/update", {"event_id": "p2", "twin": {"extra": None}})
    edge.send("thermostat", "state/update", {"event_id": "p3", "state": "online"})
    await edge.receive("thermostat", "twin/update/result", "p2")
    await edge.receive("thermostat", "state/update/result")
    before = edge.twin.list_devices()

    restarted = await edge.restart()

    assert restarted.twin.list_devices() == before
    [device] = before
    assert device.record.state == "online"
    assert device.attributes["serial"].value == "T-100"
    assert device.record.spec == THERMOSTAT_SPEC
    assert device.twins["extra"].is_deleted
    twins = await restarted.twin.get_twin(device_id)
    assert twins["target"].expected_version is not None
    assert twins["target"].expected_version.edge == 1
    restarted.send("thermostat", "twin/get", {"event_id": "p4"})
    answer = (await restarted.receive("thermostat", "twin/get/result", "p4")).json()
    assert answer["twin"]["target"]["actual"]["value"] == "20"
    assert answer["twin"]["target"]["expected"]["value"] == "21"
    assert "extra" not in answer["twin"]


async def test_concurrent_devices_share_commits(edge: Edge) -> None:
    names = [f"d{i}" for i in range(20)]
    await asyncio.gather(*(edge.twin.upsert_device(thermostat(edge, name)) for name in names))
    commits_before = edge.metric("edgetwin_twin_store_batch_size_count")

    for round_ in range(5):
        for name in names:
            edge.send(
                name,
                "twin/update",
                {"event_id": f"{name}-{round_}", "twin": {"target": {"actual": {"value": str(round_)}}}},
            )
    for name in names:
        await edge.receive(name, "twin/update/result", f"{name}-4")

    commits = edge.metric("edgetwin_twin_store_batch_size_count") - commits_before
    assert edge.metric("edgetwin_twin_queue_depth", queue="devices") == 0
    assert commits < 100, "updates of different devices arriving together share transactions"
    assert edge.metric("edgetwin_twin_messages_in_total", kind="twin_update") == 100
    assert edge.metric("edgetwin_twin_messages_out_total", kind="twin_update_result") == 100


async def test_wait_returns_when_the_twin_stops_serving(edge: Edge) -> None:
    waiting = asyncio.ensure_future(edge.twin.wait())
    await asyncio.sleep(0)
    assert not waiting.done()

    await edge.client.stop()

    await asyncio.wait_for(waiting, 5.0)

"""The DeviceController against a real Kubernetes API (kube-apiserver + etcd, and the emulator).

The cloud link is outside the thing under test: a recorder takes what the controller hands to
``CloudLink.send``, and the edge's reports are handed to ``received`` as the link would.
"""

from __future__ import annotations

import asyncio
import copy
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import pytest
import yaml
from kubernetes import client as k8s
from prometheus_client import CollectorRegistry

from cloudcore.devices import DeviceApi, DeviceController
from cloudcore.errors import WatchExpiredError
from cloudsync import Message, Operation
from device_models import (
    DeviceStateInfo,
    MsgTwin,
    StateUpdateResult,
    TwinSync,
    TwinValue,
    TwinVersion,
    TypeMetadata,
    ValueMetadata,
)
from edgetwin.testing import wait_for
from edgetwin.testing.kubeapi import KubeApi

pytestmark = pytest.mark.kube

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "modbus-tcp-thermostat.yaml"
GROUP, VERSION = "devices.kubeedge.io", "v1beta1"
NODE = "edge-node-1"


@dataclass
class RecordingLink:
    """Stands in for ``CloudLink.send``: records ``(node, message)``."""

    sent: list[tuple[str, Message]] = field(default_factory=list)

    async def send(self, node: str, message: Message) -> None:
        self.sent.append((node, message))

    def to(self, node: str, resource: str) -> list[Message]:
        return [message for to, message in self.sent if to == node and message.resource == resource]


@dataclass
class Cloud:
    controller: DeviceController
    link: RecordingLink
    custom: k8s.CustomObjectsApi
    core: k8s.CoreV1Api
    namespace: str
    registry: CollectorRegistry

    @property
    def device_id(self) -> str:
        return f"{self.namespace}/thermostat-01"

    def twin_resource(self) -> str:
        return f"device/{self.device_id}/twin/cloud_updated"

    def device_resource(self) -> str:
        return f"{self.namespace}/device/thermostat-01"

    async def create_example(self) -> dict[str, Any]:
        documents = list(yaml.safe_load_all(EXAMPLE.read_text()))
        for document in documents:
            document = copy.deepcopy(document)
            document["metadata"]["namespace"] = self.namespace
            plural = "devicemodels" if document["kind"] == "DeviceModel" else "devices"
            created = await asyncio.to_thread(
                self.custom.create_namespaced_custom_object, GROUP, VERSION, self.namespace, plural, document
            )
        return cast(dict[str, Any], created)

    async def patch_device(self, patch: Any) -> dict[str, Any]:
        answer = await asyncio.to_thread(
            self.custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "devices",
            "thermostat-01",
            patch,
            _content_type="application/json-patch+json" if isinstance(patch, list) else None,
        )
        return cast(dict[str, Any], answer)

    async def set_desired(self, value: str, index: int = 1) -> dict[str, Any]:
        return await self.patch_device(
            [{"op": "replace", "path": f"/spec/properties/{index}/desired/value", "value": value}]
        )

    async def device(self) -> dict[str, Any]:
        found = await asyncio.to_thread(
            self.custom.get_namespaced_custom_object,
            GROUP,
            VERSION,
            self.namespace,
            "devices",
            "thermostat-01",
        )
        return cast(dict[str, Any], found)

    async def status(self) -> dict[str, Any]:
        return dict((await self.device()).get("status") or {})

    async def twin_in_status(self, prop: str) -> dict[str, Any]:
        twins = (await self.status()).get("twins") or []
        return next((twin for twin in twins if twin["propertyName"] == prop), {})

    async def condition(self, kind: str) -> dict[str, Any]:
        conditions = (await self.status()).get("conditions") or []
        return next((entry for entry in conditions if entry["type"] == kind), {})

    async def report(self, twins: dict[str, MsgTwin], node: str = NODE) -> None:
        sync = TwinSync(event_id="e", timestamp=0, twin=dict(twins))
        message = Message.new(
            source="twin",
            group="twin",
            operation=Operation.UPDATE,
            resource=f"device/{self.device_id}/twin/edge_updated",
            content=sync.to_dict(),
        )
        await self.controller.received(node, message)

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


@pytest.fixture
async def cloud(
    kube_api: KubeApi, kube_crds: list[str], kube_namespace: str, kube_client: k8s.ApiClient
) -> AsyncIterator[Cloud]:
    link = RecordingLink()
    registry = CollectorRegistry()
    controller = DeviceController(
        kube_client,
        link.send,
        registry=registry,
        status_interval=0.05,
        watch_timeout=30,
        namespace=kube_namespace,
    )
    await controller.start()
    try:
        yield Cloud(
            controller,
            link,
            k8s.CustomObjectsApi(kube_client),
            k8s.CoreV1Api(kube_client),
            kube_namespace,
            registry,
        )
    finally:
        await controller.stop()


def actual(value: str, edge: int) -> MsgTwin:
    return MsgTwin(
        actual=TwinValue(value=value, metadata=ValueMetadata(timestamp=1_700_000_000_000)),
        metadata=TypeMetadata(type="float"),
        actual_version=TwinVersion(cloud=0, edge=edge),
    )


def expected(value: str, cloud: int, edge: int) -> MsgTwin:
    return MsgTwin(
        expected=TwinValue(value=value, metadata=ValueMetadata(timestamp=1_700_000_000_000)),
        metadata=TypeMetadata(type="float"),
        expected_version=TwinVersion(cloud=cloud, edge=edge),
    )


def desired_of(message: Message) -> dict[str, Any]:
    return {
        name: (twin["expected"]["value"], twin["expected_version"])
        for name, twin in message.content["twin"].items()
    }


async def test_a_device_reaches_its_node_with_model_and_versioned_desired_value(cloud: Cloud) -> None:
    created = await cloud.create_example()

    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")
    resources = [message.resource for _, message in cloud.link.sent]
    model, device, twin = (
        f"{cloud.namespace}/devicemodel/thermostat-model",
        cloud.device_resource(),
        cloud.twin_resource(),
    )
    assert resources == [model, device, twin]
    [(_, model_message), (_, device_message), (_, twin_message)] = cloud.link.sent
    assert model_message.operation is Operation.INSERT
    assert device_message.operation is Operation.INSERT
    assert device_message.header.resource_version == created["metadata"]["resourceVersion"]
    assert device_message.content["spec"]["nodeName"] == NODE
    assert "status" not in device_message.content
    assert twin_message.header.resource_version == created["metadata"]["resourceVersion"]
    assert desired_of(twin_message) == {"setpoint": ("21.5", {"cloud": 1, "edge": 0})}
    assert twin_message.content["twin"]["setpoint"]["metadata"] == {"type": "float"}

    updated = await cloud.set_desired("23")

    await wait_for(
        lambda: len(cloud.link.to(NODE, cloud.twin_resource())) == 2, 10.0, what="the new desired value"
    )
    latest = cloud.link.to(NODE, cloud.twin_resource())[-1]
    assert desired_of(latest) == {"setpoint": ("23", {"cloud": updated["metadata"]["generation"], "edge": 0})}
    assert latest.header.resource_version == updated["metadata"]["resourceVersion"]
    await wait_for(
        lambda: len(cloud.link.to(NODE, cloud.device_resource())) == 2, 10.0, what="the Device's new copy"
    )
    # Only a desired value changed: the write goes first, the edge's copy of the Device follows.
    assert [message.resource for _, message in cloud.link.sent[-2:]] == [twin, device]
    assert cloud.link.sent[-1][1].content["spec"]["properties"][1]["desired"]["value"] == "23"
    valid = await wait_for(lambda: cloud.condition("Valid"), 10.0, what="the Valid condition")
    assert valid["status"] == "True"


async def test_a_desired_value_changed_with_the_spec_follows_the_new_device(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")

    await cloud.patch_device(
        [
            {"op": "replace", "path": "/spec/properties/1/collectCycle", "value": 500},
            {"op": "replace", "path": "/spec/properties/1/desired/value", "value": "24"},
        ]
    )

    await wait_for(
        lambda: len(cloud.link.to(NODE, cloud.twin_resource())) == 2, 10.0, what="the new desired value"
    )
    # The mapper must read the setpoint with its new settings before it writes the new value.
    assert [message.resource for _, message in cloud.link.sent[-2:]] == [
        cloud.device_resource(),
        cloud.twin_resource(),
    ]
    assert cloud.link.sent[-2][1].content["spec"]["properties"][1]["collectCycle"] == 500


async def test_edge_reports_patch_the_device_status(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")
    patches_before = cloud.metric("edgetwin_devicecontroller_status_patches_total")

    # A burst of reports (a property not declared in status.twins among them) makes one patch.
    for step in range(30):
        await cloud.report(
            {"temperature": actual(f"{20 + step / 10:.1f}", step + 1), "setpoint": expected("21.5", 1, 0)}
        )
    state = StateUpdateResult(
        event_id="s",
        timestamp=0,
        device=DeviceStateInfo(name="thermostat-01", state="online", lastOnlineTime="2026-01-02T03:04:05Z"),
    )
    await cloud.controller.received(
        NODE,
        Message.new(
            source="twin",
            group="twin",
            operation=Operation.UPDATE,
            resource=f"device/{cloud.device_id}/state/update",
            content=state.to_dict(),
        ),
    )

    async def reported() -> dict[str, Any]:
        twin = await cloud.twin_in_status("temperature")
        return twin if twin.get("reported", {}).get("value") == "22.9" else {}

    temperature = await wait_for(reported, 10.0, what="the last reported temperature in the status")
    assert temperature["reported"]["metadata"] == {"type": "float", "timestamp": "1700000000000"}
    setpoint = await cloud.twin_in_status("setpoint")
    assert setpoint["observedDesired"]["value"] == "21.5"
    assert setpoint["observedDesired"]["metadata"]["cloudVersion"] == "1"
    status = await cloud.status()
    assert status["state"] == "online"
    assert status["lastOnlineTime"] == "2026-01-02T03:04:05Z"
    synced = await cloud.condition("DesiredSynced")
    assert synced["status"] == "True"
    assert cloud.metric("edgetwin_devicecontroller_reports_received_total", kind="twin") == 30
    assert cloud.metric("edgetwin_devicecontroller_status_patches_total") - patches_before <= 4


async def test_a_status_written_meanwhile_is_kept_through_a_conflict(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")
    # Someone else writes the status; the controller's cached copy is now stale (409 on its next patch).
    await asyncio.to_thread(
        cloud.custom.patch_namespaced_custom_object_status,
        GROUP,
        VERSION,
        cloud.namespace,
        "devices",
        "thermostat-01",
        {"status": {"twins": [{"propertyName": "heating", "reported": {"value": "true"}}]}},
    )
    await cloud.report({"temperature": actual("20.5", 1)})

    async def both() -> bool:
        names = {twin["propertyName"]: twin for twin in (await cloud.status()).get("twins") or []}
        return "heating" in names and names.get("temperature", {}).get("reported", {}).get("value") == "20.5"

    await wait_for(both, 10.0, what="both twins in the status")


@pytest.mark.parametrize(
    ("index", "value", "reason", "field"),
    [
        (1, "99", "InvalidDesiredValue", "spec.properties[name=setpoint].desired.value"),
        (1, "warm", "InvalidDesiredValue", "spec.properties[name=setpoint].desired.value"),
        (0, "20", "ReadOnlyProperty", "spec.properties[name=temperature].desired.value"),
    ],
)
async def test_an_invalid_desired_value_is_reported_and_not_sent(
    cloud: Cloud, index: int, value: str, reason: str, field: str
) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")
    sent_before = len(cloud.link.sent)

    if index == 0:
        await cloud.patch_device(
            [{"op": "add", "path": "/spec/properties/0/desired", "value": {"value": value}}]
        )
    else:
        await cloud.set_desired(value)

    async def refused() -> dict[str, Any]:
        entry = await cloud.condition("Valid")
        return entry if entry.get("status") == "False" else {}

    entry = await wait_for(refused, 10.0, what="the Valid=False condition")
    assert entry["reason"] == reason
    assert entry["message"].startswith(field)
    assert len(cloud.link.sent) == sent_before

    async def event() -> list[k8s.CoreV1Event]:
        events = await asyncio.to_thread(cloud.core.list_namespaced_event, cloud.namespace)
        return [
            item
            for item in events.items
            if item.reason == reason and item.involved_object.name == "thermostat-01"
        ]

    [recorded] = await wait_for(event, 10.0, what="the Warning event")
    assert recorded.type == "Warning"
    assert field in (recorded.message or "")

    # A valid change clears the condition and goes to the edge.
    if index == 0:
        await cloud.patch_device(
            [
                {"op": "remove", "path": "/spec/properties/0/desired"},
                {"op": "replace", "path": "/spec/properties/1/desired/value", "value": "22"},
            ]
        )
    else:
        await cloud.set_desired("22")

    async def valid_again() -> dict[str, Any]:
        entry = await cloud.condition("Valid")
        return entry if entry.get("status") == "True" else {}

    await wait_for(valid_again, 10.0, what="the Valid=True condition")
    latest = cloud.link.to(NODE, cloud.twin_resource())[-1]
    assert desired_of(latest)["setpoint"][0] == "22"


async def test_moving_and_deleting_a_device_updates_the_nodes(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")

    await cloud.patch_device({"spec": {"nodeName": "edge-node-2"}})

    await wait_for(
        lambda: cloud.link.to("edge-node-2", cloud.twin_resource()), 10.0, what="the device on node 2"
    )
    [removed] = [m for m in cloud.link.to(NODE, cloud.device_resource()) if m.operation is Operation.DELETE]
    node2 = [message.resource for message in [m for to, m in cloud.link.sent if to == "edge-node-2"]]
    assert node2 == [
        f"{cloud.namespace}/devicemodel/thermostat-model",
        cloud.device_resource(),
        cloud.twin_resource(),
    ]

    await asyncio.to_thread(
        cloud.custom.delete_namespaced_custom_object,
        GROUP,
        VERSION,
        cloud.namespace,
        "devices",
        "thermostat-01",
    )

    def deleted() -> list[Message]:
        return [
            m
            for m in cloud.link.to("edge-node-2", cloud.device_resource())
            if m.operation is Operation.DELETE
        ]

    await wait_for(deleted, 10.0, what="the delete on node 2")
    assert int(deleted()[0].header.resource_version) > int(removed.header.resource_version)


async def test_the_edge_newer_desired_value_wins_and_the_status_says_so(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")

    # The edge refused the cloud's 21.5: an app at the edge had written 19 (edge version 1).
    await cloud.report({"setpoint": expected("19", 0, 1)})

    async def superseded() -> dict[str, Any]:
        entry = await cloud.condition("DesiredSynced")
        return entry if entry.get("reason") == "SupersededAtEdge" else {}

    entry = await wait_for(superseded, 10.0, what="the SupersededAtEdge condition")
    assert entry["status"] == "False"
    assert "'21.5' was superseded at the edge by '19'" in entry["message"]
    assert (await cloud.twin_in_status("setpoint"))["observedDesired"]["value"] == "19"

    # The next edit knows the edge's version, so it wins at the edge.
    await cloud.set_desired("24")
    await wait_for(
        lambda: len(cloud.link.to(NODE, cloud.twin_resource())) == 2, 10.0, what="the new desired value"
    )
    assert desired_of(cloud.link.to(NODE, cloud.twin_resource())[-1])["setpoint"][1]["edge"] == 1


async def test_a_report_from_a_node_without_the_device_is_dropped(cloud: Cloud) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")

    await cloud.report({"temperature": actual("99.9", 1)}, node="intruder")
    await cloud.controller.received(
        NODE,
        Message.new(source="twin", group="twin", operation=Operation.UPDATE, resource="device/x", content={}),
    )

    assert cloud.metric("edgetwin_devicecontroller_errors_total", kind="message") == 2
    assert cloud.metric("edgetwin_devicecontroller_reports_received_total", kind="twin") == 0


async def test_a_restarted_controller_resumes_without_resending_desired_values(
    cloud: Cloud, kube_client: k8s.ApiClient
) -> None:
    await cloud.create_example()
    await wait_for(lambda: cloud.link.to(NODE, cloud.twin_resource()), 10.0, what="the desired value sent")
    await cloud.report({"setpoint": expected("21.5", 1, 0)})
    await wait_for(lambda: cloud.twin_in_status("setpoint"), 10.0, what="observedDesired in the status")
    await cloud.controller.stop()

    link = RecordingLink()
    restarted = DeviceController(
        kube_client, link.send, status_interval=0.05, watch_timeout=30, namespace=cloud.namespace
    )
    await restarted.start()
    try:
        # The node gets the model and device again (the link skips versions it acknowledged) but no
        # desired value: the status says the edge holds it already.
        resources = [message.resource for _, message in link.sent]
        assert cloud.twin_resource() not in resources
        assert cloud.device_resource() in resources
        await cloud.set_desired("25")
        await wait_for(lambda: link.to(NODE, cloud.twin_resource()), 10.0, what="the new desired value")
        assert desired_of(link.to(NODE, cloud.twin_resource())[0])["setpoint"][0] == "25"
    finally:
        await restarted.stop()


async def test_a_watch_from_an_expired_version_asks_for_a_new_list(
    kube_api: KubeApi, kube_crds: list[str], kube_client: k8s.ApiClient
) -> None:
    if kube_api.backend != "real":
        pytest.skip("the emulator keeps every event since it started: no version is too old")
    api = DeviceApi(kube_client)
    _, version = await api.list("devices")
    assert int(version) > 1

    async def watch_from_the_start() -> None:
        async with api.watch("devices", "1", timeout_seconds=5) as events:
            async for _ in events:
                pass

    with pytest.raises(WatchExpiredError) as caught:
        await watch_from_the_start()
    assert caught.value.status == 410

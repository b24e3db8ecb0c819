"""The device messages between cloudcore and an edge node: built as the edge reads them, read strictly."""

from __future__ import annotations

import pytest

from cloudcore.devices import (
    EdgeStateReport,
    EdgeTwinReport,
    cloud_twin_message,
    object_message,
    read_edge_message,
)
from cloudcore.errors import DeviceMessageError
from cloudsync import Message, Operation, ResourceType, decode, encode
from device_models import MsgTwin, TwinSync, TwinValue, TwinVersion


def edge(resource: str, content: object) -> Message:
    return Message.new(
        source="twin", group="twin", operation=Operation.UPDATE, resource=resource, content=content
    )


def test_an_object_message_carries_the_cr_without_status_and_its_version() -> None:
    obj = {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "42", "managedFields": [{}]},
        "spec": {"nodeName": "n"},
        "status": {"state": "online"},
    }
    message = decode(encode(object_message(Operation.UPDATE, ResourceType.DEVICE, obj, "42")))
    assert message.resource == "ns/device/d"
    assert message.header.resource_version == "42"
    assert message.route.source == "devicecontroller"
    assert message.content == {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": "d", "namespace": "ns", "resourceVersion": "42"},
        "spec": {"nodeName": "n"},
    }


def test_a_cloud_twin_message_round_trips_with_versions() -> None:
    twin = MsgTwin(expected=TwinValue(value="22"), expected_version=TwinVersion(cloud=3, edge=1))
    message = decode(encode(cloud_twin_message("ns/d", {"setpoint": twin}, "77")))
    assert message.resource == "device/ns/d/twin/cloud_updated"
    assert message.header.resource_version == "77"
    assert TwinSync.model_validate(message.content).twin == {"setpoint": twin}


def test_edge_reports_are_read_with_the_device_id() -> None:
    twin = MsgTwin(actual=TwinValue(value="21"), actual_version=TwinVersion(edge=4))
    sync = TwinSync(event_id="e", timestamp=1, twin={"temperature": twin}).to_dict()
    assert read_edge_message(edge("device/ns/d/twin/edge_updated", sync)) == EdgeTwinReport(
        "ns/d", {"temperature": twin}
    )
    state = {
        "event_id": "s",
        "timestamp": 1,
        "device": {"name": "d", "state": "online", "lastOnlineTime": "t"},
    }
    assert read_edge_message(edge("device/ns/d/state/update", state)) == EdgeStateReport(
        "ns/d", "online", "t"
    )
    # KubeEdge's one-segment id is in the default namespace.
    assert read_edge_message(edge("device/d/state/update", state)) == EdgeStateReport(
        "default/d", "online", "t"
    )


@pytest.mark.parametrize(
    ("resource", "content", "reason"),
    [
        ("device/ns/d/twin/edge_updated", {"twin": {"p": {"actual": {"value": 21}}}}, "twin.p.actual.value"),
        ("device/ns/d/twin/other", {}, "is not twin/edge_updated or state/update"),
        ("device//d/state/update", {}, "is not device/<namespace>/<name>"),
        ("device/ns/d/state/update", {"state": "online"}, "device"),
    ],
)
def test_a_bad_edge_message_says_what_is_wrong(resource: str, content: object, reason: str) -> None:
    with pytest.raises(DeviceMessageError) as caught:
        read_edge_message(edge(resource, content))
    assert caught.value.resource == resource
    assert reason in caught.value.reason

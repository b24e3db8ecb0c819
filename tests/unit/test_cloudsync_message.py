"""The beehive codec: KubeEdge's JSON spelling both ways, and every malformed frame refused with a reason."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloudsync import (
    MAX_FRAME,
    Message,
    MessageFormatError,
    ObjectRef,
    Operation,
    decode,
    encode,
    strip_node,
    with_node,
)

# A frame as KubeEdge's cloudhub writes it (Go's encoding/json of beehive's model.Message).
KUBEEDGE_FRAME = (
    '{"header":{"msg_id":"7d6c4b6a-0b1e-4d55-9d8f-6f2a5b0e9c11","parent_msg_id":"","timestamp":1700000000000,'
    '"resourceversion":"4242","sync":false},"route":{"source":"edgecontroller","group":"resource",'
    '"operation":"update","resource":"default/pod/nginx"},"content":{"metadata":{"name":"nginx"}}}'
)


def test_a_kubeedge_frame_parses_field_by_field() -> None:
    message = decode(KUBEEDGE_FRAME)
    assert message.msg_id == "7d6c4b6a-0b1e-4d55-9d8f-6f2a5b0e9c11"
    assert message.header.timestamp == 1700000000000
    assert message.header.resource_version == "4242"
    assert message.route.source == "edgecontroller"
    assert message.operation is Operation.UPDATE
    assert ObjectRef.parse(message.resource) == ObjectRef("default", "pod", "nginx")
    assert message.content == {"metadata": {"name": "nginx"}}


def test_encoding_uses_kubeedge_names_and_omits_empty_optional_fields() -> None:
    message = Message.new(
        source="edgehub", group="resource", operation=Operation.KEEPALIVE, resource="node", content="ping"
    )
    frame = json.loads(encode(message))
    assert set(frame) == {"header", "route", "content"}
    assert set(frame["header"]) == {"msg_id", "timestamp"}
    assert frame["route"] == {
        "source": "edgehub",
        "group": "resource",
        "operation": "keepalive",
        "resource": "node",
    }


def test_a_response_names_its_parent_and_keeps_the_version() -> None:
    request = Message.new(
        source="edgecontroller",
        group="resource",
        operation=Operation.INSERT,
        resource="default/configmap/settings",
        resource_version="17",
    )
    frame = json.loads(encode(request.response(source="metaManager")))
    assert frame["header"]["parent_msg_id"] == request.msg_id
    assert frame["header"]["resourceversion"] == "17"
    assert frame["header"]["msg_id"] != request.msg_id
    assert frame["route"]["operation"] == "response"


def test_round_trip_keeps_everything() -> None:
    message = Message.new(
        source="devicecontroller",
        group="twin",
        operation=Operation.UPDATE,
        resource="device/default/thermostat/twin/cloud_updated",
        content={"twin": {"setpoint": {"expected": {"value": "21.5"}}}, "unicode": "température"},
        resource_version="99",
        sync=True,
    )
    assert decode(encode(message)) == message
    assert decode(encode(message).encode()) == message


@pytest.mark.parametrize(
    ("frame", "reason"),
    [
        (b"\xff\xfe", "Invalid JSON"),
        ("[1, 2]", "Input should be an object"),
        ("{}", "header: Field required"),
        ('{"header": {"msg_id": "a", "timestamp": 1}, "route": {}}', "route.source: Field required"),
        (
            '{"header": {"msg_id": "a", "timestamp": 1}, '
            '"route": {"source": "s", "group": "g", "operation": "explode", "resource": "r"}}',
            "route.operation",
        ),
        (
            '{"header": {"msg_id": "a", "timestamp": "yesterday"}, '
            '"route": {"source": "s", "group": "g", "operation": "insert", "resource": "r"}}',
            "header.timestamp",
        ),
        ("[" * 100_000, "recursion limit"),
    ],
)
def test_malformed_frames_are_refused_with_the_part_named(frame: str | bytes, reason: str) -> None:
    with pytest.raises(MessageFormatError, match=reason):
        decode(frame)


def test_an_oversized_frame_is_refused_before_parsing() -> None:
    with pytest.raises(MessageFormatError, match="larger than"):
        decode(" " * (MAX_FRAME + 1))


def test_node_prefix_is_added_and_stripped() -> None:
    cloud = with_node("edge-1", "default/pod/nginx")
    assert cloud == "node/edge-1/default/pod/nginx"
    assert strip_node(cloud) == ("edge-1", "default/pod/nginx")
    for bad in ("default/pod/nginx", "node/edge-1", "node//pod"):
        with pytest.raises(MessageFormatError, match="node/<node>/"):
            strip_node(bad)


@pytest.mark.parametrize("resource", ["default/pod", "a/b/c/d", "default//nginx", "node"])
def test_object_resources_need_three_parts(resource: str) -> None:
    with pytest.raises(MessageFormatError, match="<namespace>/<type>/<name>"):
        ObjectRef.parse(resource)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(st.binary(max_size=512) | st.text(max_size=512))
def test_random_bytes_never_raise_anything_but_a_format_error(frame: str | bytes) -> None:
    with contextlib.suppress(MessageFormatError):
        decode(frame)


@given(
    st.fixed_dictionaries(
        {"header": st.dictionaries(st.sampled_from(["msg_id", "timestamp", "sync", "x"]), json_values)},
        optional={
            "route": st.dictionaries(
                st.sampled_from(["source", "group", "operation", "resource"]),
                st.sampled_from(list(Operation)) | json_values,
            ),
            "content": json_values,
        },
    )
)
def test_random_json_messages_decode_or_are_refused(frame: dict[str, Any]) -> None:
    text = json.dumps(frame)
    try:
        message = decode(text)
    except MessageFormatError:
        return
    assert decode(encode(message)) == message

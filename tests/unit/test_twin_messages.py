"""The twin wire messages: JSON shapes of KubeEdge's edgecore v1.23, strict parsing, value validation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from device_models import (
    AttributesUpdated,
    ErrorResult,
    MembershipDevice,
    MembershipGetResult,
    MembershipUpdated,
    MsgTwin,
    StateUpdateRequest,
    StateUpdateResult,
    TwinDelta,
    TwinDocument,
    TwinGetResult,
    TwinSync,
    TwinUpdateRequest,
    TwinUpdateResult,
    TwinValidationError,
    TwinValue,
    TwinVersion,
    TypeMetadata,
    ValueMetadata,
    WireModel,
    validate_property_name,
    validate_value,
    validate_value_type,
)

TS = 1700000000123
STAMPED_ACTUAL = {"value": "21.5", "metadata": {"timestamp": TS}}
TEMPERATURE = {"actual": STAMPED_ACTUAL, "optional": True, "metadata": {"type": "float"}}
TARGET = {
    "expected": {"value": "22", "metadata": {"timestamp": TS}},
    "actual": {"value": "20", "metadata": {"timestamp": TS}},
    "optional": False,
    "metadata": {"type": "float"},
}

# Bodies shaped like the messages of a real edgecore v1.23 run (CONTRACTS.md §1), one per message model.
SAMPLES: list[tuple[type[WireModel], dict[str, Any]]] = [
    (
        TwinUpdateRequest,
        {
            "event_id": "e1",
            "timestamp": 1700000000000,
            "twin": {"temperature": {"actual": {"value": "21.5"}}},
        },
    ),
    (TwinUpdateResult, {"event_id": "e1", "timestamp": TS, "twin": {"temperature": TEMPERATURE}}),
    (TwinUpdateResult, {"event_id": "e2", "timestamp": TS, "twin": {"mode": None}}),
    (
        TwinDocument,
        {"event_id": "e1", "timestamp": TS, "twin": {"temperature": {"last": None, "current": TEMPERATURE}}},
    ),
    (
        TwinDocument,
        {"event_id": "e2", "timestamp": TS, "twin": {"mode": {"last": TEMPERATURE, "current": None}}},
    ),
    (
        TwinDelta,
        {
            "event_id": "0f8c3a57-9d0e-4d55-9a53-7d3b5e0c2b11",
            "timestamp": TS,
            "twin": {"target": TARGET, "temperature": TEMPERATURE},
            "delta": {"target": "22"},
        },
    ),
    (TwinGetResult, {"event_id": "g1", "timestamp": TS, "twin": {}}),
    (TwinGetResult, {"event_id": "g2", "timestamp": TS, "twin": {"target": TARGET}}),
    (ErrorResult, {"event_id": "e3", "timestamp": TS, "code": 404, "reason": "device not found"}),
    (
        ErrorResult,
        {"event_id": "e4", "timestamp": TS, "code": 400, "reason": "not a float", "property": "target"},
    ),
    (StateUpdateRequest, {"event_id": "s1", "timestamp": TS, "state": "online"}),
    (
        StateUpdateResult,
        {
            "event_id": "6a1d2c8e-3f4b-4a5c-8d9e-0f1a2b3c4d5e",
            "timestamp": TS,
            "device": {"name": "thermostat-01", "state": "online", "lastOnlineTime": "2024-05-01T10:00:00Z"},
        },
    ),
    (
        MembershipGetResult,
        {
            "event_id": "m1",
            "timestamp": TS,
            "devices": [
                {"id": "default/thermostat-01", "name": "thermostat-01"},
                {
                    "id": "plant/pump",
                    "name": "pump",
                    "state": "online",
                    "last_online": "2024-05-01T10:00:00Z",
                },
                {
                    "id": "plant/meter",
                    "name": "meter",
                    "description": "energy meter",
                    "attributes": {
                        "serial": {"value": "A-17", "optional": True, "metadata": {"type": "string"}}
                    },
                    "spec": {
                        "deviceModelRef": {"name": "meter-model"},
                        "protocol": {"protocolName": "modbus"},
                    },
                    "model": {"properties": [{"name": "power", "type": "FLOAT"}]},
                },
            ],
        },
    ),
    (
        MembershipUpdated,
        {
            "event_id": "m2",
            "timestamp": TS,
            "added_devices": [{"id": "plant/pump", "name": "pump", "twin": {"target": TARGET}}],
            "removed_devices": [],
        },
    ),
    (
        MembershipUpdated,
        {
            "event_id": "m3",
            "timestamp": TS,
            "added_devices": [],
            "removed_devices": [{"id": "a/b", "name": "b"}],
        },
    ),
    (
        AttributesUpdated,
        {
            "event_id": "u1",
            "timestamp": TS,
            "attributes": {
                "serial": {"value": "A-18", "optional": True, "metadata": {"type": "string"}},
                "old": None,
            },
        },
    ),
    (
        TwinSync,
        {
            "event_id": "c1",
            "timestamp": TS,
            "twin": {
                "temperature": {
                    **TEMPERATURE,
                    "expected_version": {"cloud": 3, "edge": 1},
                    "actual_version": {"cloud": 0, "edge": 7},
                }
            },
        },
    ),
]


@pytest.mark.parametrize(
    ("model", "body"), SAMPLES, ids=[f"{model.__name__}-{i}" for i, (model, _) in enumerate(SAMPLES)]
)
def test_json_round_trip_is_identical(model: type[WireModel], body: dict[str, Any]) -> None:
    text = json.dumps(body, separators=(",", ":"))

    message = model.model_validate_json(text)

    assert json.loads(message.to_json()) == body
    # Key order too: fields are declared in KubeEdge's order, so the bytes match as well.
    assert message.to_json().decode() == text


def _keys(value: object) -> set[str]:
    if isinstance(value, dict):
        return set(value) | {key for item in value.values() for key in _keys(item)}
    if isinstance(value, list):
        return {key for item in value for key in _keys(item)}
    return set()


def _versioned(**fields: Any) -> MsgTwin:
    return MsgTwin(
        actual=TwinValue(value="1", metadata=ValueMetadata(timestamp=TS)),
        metadata=TypeMetadata(type="int"),
        expected_version=TwinVersion(cloud=2, edge=5),
        actual_version=TwinVersion(cloud=0, edge=9),
        **fields,
    )


def test_messages_for_apps_never_carry_versions() -> None:
    twin = _versioned(optional=True)
    messages: list[WireModel] = [
        TwinUpdateResult(event_id="e", timestamp=TS, twin={"p": twin, "gone": None}),
        TwinGetResult(event_id="e", timestamp=TS, twin={"p": twin}),
        TwinDelta(event_id="e", timestamp=TS, twin={"p": twin}, delta={"p": "2"}),
        TwinDocument.model_validate(
            {"event_id": "e", "timestamp": TS, "twin": {"p": {"last": twin, "current": twin}}}
        ),
        MembershipUpdated(
            event_id="e", timestamp=TS, added_devices=[MembershipDevice(id="a/b", name="b", twin={"p": twin})]
        ),
    ]

    for message in messages:
        keys = _keys(json.loads(message.to_json()))
        assert "expected_version" not in keys, type(message).__name__
        assert "actual_version" not in keys, type(message).__name__
        assert "actual" in keys, type(message).__name__


def test_cloud_sync_keeps_versions() -> None:
    sync = TwinSync(event_id="e", timestamp=TS, twin={"p": _versioned(), "gone": None})

    body = sync.to_dict()

    assert body["twin"]["p"]["expected_version"] == {"cloud": 2, "edge": 5}
    assert body["twin"]["p"]["actual_version"] == {"cloud": 0, "edge": 9}
    assert body["twin"]["gone"] is None


def test_absent_fields_are_left_out_and_contract_nulls_kept() -> None:
    document = TwinDocument.model_validate(
        {"event_id": "", "timestamp": 0, "twin": {"new": {"current": {"metadata": {"type": "string"}}}}}
    )

    assert json.loads(document.to_json()) == {
        "event_id": "",
        "timestamp": 0,
        "twin": {"new": {"last": None, "current": {"metadata": {"type": "string"}}}},
    }


@pytest.mark.parametrize(
    "body",
    [
        {"twin": {"p": {"actual": {"value": 21}}}},  # a number where KubeEdge wants a string
        {"twin": {"p": {"optional": "true"}}},
        {"twin": {"p": {"actual": "21"}}},
        {"event_id": 7, "twin": {}},
        {"timestamp": "1700000000000", "twin": {}},
        {"twin": ["p"]},
    ],
)
def test_parsing_is_strict_like_go(body: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        TwinUpdateRequest.model_validate_json(json.dumps(body))


def test_update_request_keeps_null_properties_and_ignores_unknown_keys() -> None:
    request = TwinUpdateRequest.model_validate_json('{"twin": {"mode": null}, "extra": 1}')

    assert request.twin == {"mode": None}
    assert request.event_id == ""
    assert request.timestamp == 0


def test_msg_twin_helpers() -> None:
    twin = MsgTwin.model_validate({"expected": {"value": "3"}, "actual": {"value": "2"}})

    assert twin.value_type == "string"
    assert not twin.is_deleted
    assert (twin.expected_value, twin.actual_value) == ("3", "2")
    assert MsgTwin(metadata=TypeMetadata(type="deleted")).is_deleted
    assert _versioned().without_versions().expected_version is None


@pytest.mark.parametrize("name", ["temperature", "a", "A-b_c.d,e:f/g@h#i", "x" * 128])
def test_valid_property_names(name: str) -> None:
    validate_property_name(name)


@pytest.mark.parametrize("name", ["", "x" * 129, "has space", "semi;colon", "tab\t", "new\nline", "ünï"])
def test_invalid_property_names(name: str) -> None:
    with pytest.raises(TwinValidationError) as caught:
        validate_property_name(name)
    assert caught.value.property == name


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("int", "42"),
        ("int", "-9223372036854775808"),
        ("integer", "0"),
        ("float", "21.5"),
        ("float", "-1e-3"),
        ("double", "3"),
        ("boolean", "true"),
        ("boolean", "false"),
        ("string", "any-thing_1.2,3:4/5@6#7"),
        ("bytes", "AQID"),
        ("string", "v" * 512),
    ],
)
def test_values_that_parse_as_their_type(value_type: str, value: str) -> None:
    validate_value("p", value_type, value)


@pytest.mark.parametrize(
    ("value_type", "value"),
    [
        ("int", "1.5"),
        ("int", "9223372036854775808"),
        ("integer", "ten"),
        ("float", "abc"),
        ("float", "1_000"),
        ("boolean", "True"),
        ("boolean", "1"),
        ("string", ""),
        ("string", "two words"),
        ("string", "v" * 513),
        ("uuid", "x"),
    ],
)
def test_values_refused(value_type: str, value: str) -> None:
    with pytest.raises(TwinValidationError) as caught:
        validate_value("p", value_type, value)
    assert (caught.value.property, caught.value.value) == ("p", value)


def test_value_types() -> None:
    validate_value_type("p", "float")
    with pytest.raises(TwinValidationError, match="not allowed"):
        validate_value_type("p", "deleted")

"""The twin state machine on its own: KubeEdge's update, delete, version and declaration rules."""

from __future__ import annotations

from typing import Any

import pytest

from device_models import MsgTwin, TwinDoc, TwinValidationError, TwinVersion
from devicetwin import DeviceRecord, DeviceSnapshot, TwinDevice, TwinProperty, TwinRequestError
from devicetwin.state import (
    apply_cloud_update,
    apply_edge_update,
    apply_state,
    check_update_request,
    declare_device,
    delta_of,
)

NOW = 1700000000000
LATER = NOW + 1000


def twin(body: dict[str, Any]) -> MsgTwin:
    return MsgTwin.model_validate(body)


def device(**twins: dict[str, Any]) -> DeviceSnapshot:
    return DeviceSnapshot(
        DeviceRecord(id="default/thermostat", name="thermostat"),
        twins={name: twin(body) for name, body in twins.items()},
    )


TARGET = {
    "expected": {"value": "22", "metadata": {"timestamp": NOW}},
    "actual": {"value": "20", "metadata": {"timestamp": NOW}},
    "optional": False,
    "metadata": {"type": "float"},
    "expected_version": {"cloud": 2, "edge": 1},
    "actual_version": {"cloud": 0, "edge": 4},
}
MODE = {
    "actual": {"value": "auto", "metadata": {"timestamp": NOW}},
    "optional": True,
    "metadata": {"type": "string"},
    "expected_version": {"cloud": 0, "edge": 0},
    "actual_version": {"cloud": 0, "edge": 2},
}


def test_new_property_is_added_optional_string_with_edge_version_one() -> None:
    change = apply_edge_update(device(), {"humidity": twin({"actual": {"value": "40"}})}, NOW)

    added = change.device.twins["humidity"]
    assert added.optional is True
    assert added.value_type == "string"
    assert added.actual is not None
    assert added.actual.model_dump() == {
        "value": "40",
        "metadata": {"timestamp": NOW},
    }
    assert added.actual_version == TwinVersion(cloud=0, edge=1)
    assert added.expected is None
    assert added.expected_version == TwinVersion()
    assert change.result == {"humidity": added}
    assert change.document == {"humidity": TwinDoc(last=None, current=added)}
    assert change.sync == {"humidity": added}
    assert [write.name for write in change.writes] == ["humidity"]  # type: ignore[union-attr]


def test_reported_value_of_existing_property_bumps_only_its_edge_version() -> None:
    before = device(target=TARGET)

    change = apply_edge_update(before, {"target": twin({"actual": {"value": "21.5"}})}, LATER)

    after = change.device.twins["target"]
    assert after.actual_value == "21.5"
    assert after.actual_version == TwinVersion(cloud=0, edge=5)
    assert after.expected == before.twins["target"].expected
    assert after.expected_version == TwinVersion(cloud=2, edge=1)
    touched = change.result["target"]
    assert touched is not None
    assert touched.expected is None
    assert touched.actual is not None
    assert touched.actual.model_dump() == {
        "value": "21.5",
        "metadata": {"timestamp": LATER},
    }
    assert (touched.optional, touched.value_type) == (False, "float")
    assert change.document["target"] == TwinDoc(last=before.twins["target"], current=after)
    assert change.sync["target"] == touched
    assert touched.actual_version == TwinVersion(cloud=0, edge=5)


def test_desired_value_set_at_the_edge_goes_to_the_cloud_with_its_version() -> None:
    change = apply_edge_update(device(target=TARGET), {"target": twin({"expected": {"value": "23"}})}, LATER)

    synced = change.sync["target"]
    assert synced is not None
    assert synced.expected_value == "23"
    assert synced.expected_version == TwinVersion(cloud=2, edge=2)
    assert synced.actual is None
    assert delta_of(change.device) == {"target": "23"}


def test_null_soft_deletes_an_optional_property() -> None:
    before = device(mode=MODE)

    change = apply_edge_update(before, {"mode": None}, LATER)

    deleted = change.device.twins["mode"]
    assert deleted.is_deleted
    assert deleted.actual is None
    assert deleted.expected is None
    assert deleted.expected_version == TwinVersion(cloud=0, edge=1)
    assert deleted.actual_version == TwinVersion(cloud=0, edge=3)
    assert change.result == {"mode": None}
    assert change.document == {"mode": TwinDoc(last=before.twins["mode"], current=None)}
    assert change.sync == {"mode": deleted}
    assert "mode" not in change.device.live_twins()


def test_deleting_again_changes_nothing() -> None:
    deleted = apply_edge_update(device(mode=MODE), {"mode": None}, NOW).device

    change = apply_edge_update(deleted, {"mode": None}, LATER)

    assert change.writes == ()
    assert change.result == {}


@pytest.mark.parametrize(
    ("changes", "prop", "reason"),
    [
        ({"target": None}, "target", "not optional"),
        ({"ghost": None}, "ghost", "does not exist"),
        ({"target": {"actual": {"value": "warm"}}}, "target", "not a float"),
        ({"flag": {"actual": {"value": "True"}, "metadata": {"type": "boolean"}}}, "flag", "true or false"),
        ({"count": {"actual": {"value": "1.5"}, "metadata": {"type": "int"}}}, "count", "not an int"),
        ({"x": {"actual": {"value": "1"}, "metadata": {"type": "deleted"}}}, "x", "not allowed"),
        ({"x": {"actual": {}}}, "x", "actual.value must be a string"),
    ],
)
def test_refused_updates_name_the_property(changes: dict[str, Any], prop: str, reason: str) -> None:
    request = {name: None if body is None else twin(body) for name, body in changes.items()}

    with pytest.raises(TwinValidationError, match=reason) as caught:
        apply_edge_update(device(target=TARGET), request, NOW)

    assert caught.value.property == prop


def test_check_update_request_refuses_bad_names_and_characters_first() -> None:
    with pytest.raises(TwinValidationError) as caught:
        check_update_request({"ok": twin({"actual": {"value": "1"}}), "bad name": None})
    assert caught.value.property == "bad name"
    with pytest.raises(TwinValidationError, match="1-512 characters"):
        check_update_request({"p": twin({"expected": {"value": "a b"}})})


def test_type_of_a_live_property_is_fixed_and_values_checked_against_it() -> None:
    change = apply_edge_update(
        device(target=TARGET),
        {"target": twin({"actual": {"value": "19"}, "metadata": {"type": "string"}})},
        NOW,
    )

    assert change.device.twins["target"].value_type == "float"
    with pytest.raises(TwinValidationError):
        apply_edge_update(
            device(target=TARGET),
            {"target": twin({"actual": {"value": "cold"}, "metadata": {"type": "string"}})},
            NOW,
        )


def test_optional_goes_from_true_to_false_only() -> None:
    turned_off = apply_edge_update(device(mode=MODE), {"mode": twin({"optional": False})}, NOW)
    assert turned_off.device.twins["mode"].optional is False
    assert turned_off.result["mode"] is not None

    not_on = apply_edge_update(device(target=TARGET), {"target": twin({"optional": True})}, NOW)
    assert not_on.writes == ()
    assert not_on.device.twins["target"].optional is False


def test_a_deleted_property_comes_back_with_last_null_and_later_versions() -> None:
    deleted = apply_edge_update(device(mode=MODE), {"mode": None}, NOW).device

    change = apply_edge_update(deleted, {"mode": twin({"actual": {"value": "eco"}})}, LATER)

    back = change.device.twins["mode"]
    assert back.actual_value == "eco"
    assert not back.is_deleted
    assert back.actual_version == TwinVersion(cloud=0, edge=4)
    assert change.document["mode"].last is None


def test_state_machine_does_not_modify_its_input() -> None:
    before = device(target=TARGET)

    apply_edge_update(before, {"target": twin({"actual": {"value": "1"}}), "new": twin({})}, NOW)

    assert before.twins == {"target": twin(TARGET)}


def test_delta_lists_desired_values_that_differ_from_reported_ones() -> None:
    state = device(
        target=TARGET,
        mode=MODE,
        level={"expected": {"value": "3"}, "metadata": {"type": "int"}},
        same={"expected": {"value": "on"}, "actual": {"value": "on"}},
        gone={"metadata": {"type": "deleted"}},
    )

    assert delta_of(state) == {"target": "22", "level": "3"}


# --- cloud updates ------------------------------------------------------------------------------------


def cloud(body: dict[str, Any]) -> MsgTwin:
    return twin(body)


def test_cloud_update_with_current_versions_is_applied_and_takes_them() -> None:
    change = apply_cloud_update(
        device(target=TARGET),
        {"target": cloud({"expected": {"value": "24"}, "expected_version": {"cloud": 3, "edge": 1}})},
        LATER,
    )

    after = change.device.twins["target"]
    assert after.expected_value == "24"
    assert after.expected_version == TwinVersion(cloud=3, edge=1)
    assert after.actual_version == TwinVersion(cloud=0, edge=4)
    assert change.rejected == {}
    assert change.sync == {}
    assert change.document["target"].current == after


def test_cloud_update_refused_when_the_local_cloud_version_is_newer() -> None:
    change = apply_cloud_update(
        device(target=TARGET),
        {"target": cloud({"expected": {"value": "24"}, "expected_version": {"cloud": 1, "edge": 1}})},
        LATER,
    )

    assert "cloud version 2" in change.rejected["target"]
    assert change.writes == ()
    assert change.device.twins["target"] == twin(TARGET)


def test_cloud_update_refused_when_the_edge_wrote_later_and_the_edge_twin_goes_back() -> None:
    edge_written = apply_edge_update(
        device(target=TARGET), {"target": twin({"expected": {"value": "25"}})}, NOW
    )

    change = apply_cloud_update(
        edge_written.device,
        {"target": cloud({"expected": {"value": "24"}, "expected_version": {"cloud": 3, "edge": 1}})},
        LATER,
    )

    assert "edge wins" in change.rejected["target"]
    assert change.sync == {"target": edge_written.device.twins["target"]}
    assert change.device.twins["target"].expected_value == "25"


def test_cloud_update_without_versions_is_refused() -> None:
    change = apply_cloud_update(device(target=TARGET), {"target": cloud({"expected": {"value": "24"}})}, NOW)

    assert change.rejected == {"target": "a cloud update must carry versions"}


def test_cloud_adds_and_deletes_properties() -> None:
    change = apply_cloud_update(
        device(mode=MODE),
        {
            "speed": cloud(
                {
                    "expected": {"value": "3"},
                    "metadata": {"type": "int"},
                    "expected_version": {"cloud": 1, "edge": 0},
                }
            ),
            "mode": cloud({"metadata": {"type": "deleted"}, "actual_version": {"cloud": 1, "edge": 2}}),
        },
        NOW,
    )

    assert change.device.twins["speed"].expected_value == "3"
    assert change.device.twins["speed"].value_type == "int"
    assert change.device.twins["mode"].is_deleted
    assert change.document["mode"].current is None
    assert change.document["speed"].last is None


def test_cloud_update_with_a_bad_value_is_refused_with_the_reason() -> None:
    change = apply_cloud_update(
        device(target=TARGET),
        {"target": cloud({"expected": {"value": "hot"}, "expected_version": {"cloud": 9, "edge": 9}})},
        NOW,
    )

    assert "not a float" in change.rejected["target"]
    assert change.sync == {}


# --- declarations --------------------------------------------------------------------------------------


THERMOSTAT = TwinDevice(
    namespace="default",
    name="thermostat",
    description="lab thermostat",
    attributes={"serial": "T-1"},
    properties=[TwinProperty("target", type="FLOAT", expected="21.5"), TwinProperty("mode", optional=True)],
    spec={"protocol": {"protocolName": "modbus"}},
    model={"properties": [{"name": "target", "type": "FLOAT"}]},
)


def test_declaring_a_new_device() -> None:
    declaration = declare_device(None, THERMOSTAT, NOW)

    state = declaration.change.device
    assert declaration.is_new
    assert declaration.membership_changed
    assert state.record.description == "lab thermostat"
    assert state.twins["target"].value_type == "float"
    assert state.twins["target"].optional is False
    assert state.twins["target"].expected_value == "21.5"
    assert state.twins["target"].expected_version == TwinVersion(cloud=1, edge=0)
    assert state.twins["mode"].expected is None
    assert state.twins["mode"].optional is True
    assert set(declaration.attributes) == {"serial"}
    assert delta_of(state) == {"target": "21.5"}


def test_declaring_the_same_device_again_changes_nothing() -> None:
    first = declare_device(None, THERMOSTAT, NOW).change.device

    again = declare_device(first, THERMOSTAT, LATER)

    assert again.change.writes == ()
    assert not again.membership_changed
    assert again.attributes == {}


def test_redeclaring_keeps_reported_values_and_counts_a_new_desired_value_as_a_cloud_write() -> None:
    first = declare_device(None, THERMOSTAT, NOW).change.device
    reported = apply_edge_update(first, {"target": twin({"actual": {"value": "20"}})}, NOW).device
    changed = TwinDevice(
        namespace="default",
        name="thermostat",
        description="lab thermostat",
        attributes={"serial": "T-2", "site": "lab"},
        properties=[TwinProperty("target", type="float", expected="23")],
        spec=THERMOSTAT.spec,
        model=THERMOSTAT.model,
    )

    declaration = declare_device(reported, changed, LATER)

    target = declaration.change.device.twins["target"]
    assert target.actual_value == "20"
    assert target.expected_value == "23"
    assert target.expected_version == TwinVersion(cloud=2, edge=0)
    assert declaration.membership_changed
    assert {name: attr and attr.value for name, attr in declaration.attributes.items()} == {
        "serial": "T-2",
        "site": "lab",
    }
    assert "mode" in declaration.change.device.twins  # undeclared properties are left alone


def test_declaration_errors() -> None:
    with pytest.raises(TwinValidationError, match="declared twice"):
        declare_device(None, TwinDevice("ns", "d", properties=[TwinProperty("a"), TwinProperty("a")]), NOW)
    with pytest.raises(TwinValidationError, match="not allowed"):
        declare_device(None, TwinDevice("ns", "d", properties=[TwinProperty("a", type="complex")]), NOW)
    with pytest.raises(TwinValidationError, match="not an int"):
        declare_device(
            None, TwinDevice("ns", "d", properties=[TwinProperty("a", type="INT", expected="x")]), NOW
        )


# --- state --------------------------------------------------------------------------------------------


def test_online_state_stamps_last_online_and_offline_keeps_it() -> None:
    online = apply_state(device(), "online", now=0)
    assert (online.record.state, online.record.last_online) == ("online", "1970-01-01T00:00:00Z")

    offline = apply_state(online, "offline", now=3600)
    assert (offline.record.state, offline.record.last_online) == ("offline", "1970-01-01T00:00:00Z")


def test_unknown_state_is_refused() -> None:
    with pytest.raises(TwinRequestError, match="unknown device state 'sleepy'"):
        apply_state(device(), "sleepy")

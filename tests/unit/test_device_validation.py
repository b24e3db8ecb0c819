"""The DeviceController's validation of Device CRs: the verdict's reason, field and message."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from cloudcore.devices import validate_device

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "modbus-tcp-thermostat.yaml"
DOCUMENTS = list(yaml.safe_load_all(EXAMPLE.read_text()))
MODEL = next(doc for doc in DOCUMENTS if doc["kind"] == "DeviceModel")
DEVICE = next(doc for doc in DOCUMENTS if doc["kind"] == "Device")
MODELS = {"default/thermostat-model": MODEL}


def device(**changes: Any) -> dict[str, Any]:
    obj: dict[str, Any] = copy.deepcopy(DEVICE)
    for index, prop in changes.items():
        obj["spec"]["properties"][int(index.removeprefix("p"))].update(prop)
    return obj


def test_the_example_is_valid() -> None:
    verdict = validate_device(DEVICE, MODELS)
    assert verdict.valid
    assert verdict.device is not None
    assert verdict.model is not None
    assert verdict.device.node_name == "edge-node-1"


@pytest.mark.parametrize(
    ("changes", "reason", "message"),
    [
        ({"p1": {"desired": {"value": "36"}}}, "InvalidDesiredValue", "'36' is above the maximum 35"),
        ({"p1": {"desired": {"value": "warm"}}}, "InvalidDesiredValue", "'warm' is not a number (FLOAT)"),
        ({"p0": {"desired": {"value": "20"}}}, "ReadOnlyProperty", "read-only"),
        ({"p2": {"name": "fan"}}, "UnknownProperty", "'fan' is not a property of"),
    ],
)
def test_invalid_devices_name_the_field_and_reason(
    changes: dict[str, Any], reason: str, message: str
) -> None:
    verdict = validate_device(device(**changes), MODELS)
    assert not verdict.valid
    assert verdict.reason == reason
    assert verdict.field.startswith("spec.properties[")
    assert verdict.message.startswith(verdict.field)
    assert message in verdict.message


def test_a_missing_model_is_its_own_reason() -> None:
    verdict = validate_device(DEVICE, {})
    assert (verdict.reason, verdict.field) == ("ModelNotFound", "spec.deviceModelRef.name")
    assert "default/thermostat-model does not exist" in verdict.message


def test_a_device_that_does_not_parse_is_an_invalid_spec() -> None:
    broken = copy.deepcopy(DEVICE)
    del broken["spec"]["deviceModelRef"]
    verdict = validate_device(broken, MODELS)
    assert verdict.reason == "InvalidSpec"
    assert verdict.device is None
    assert "deviceModelRef" in verdict.field

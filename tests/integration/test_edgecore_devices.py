"""The ``--devices`` directory: which Devices a node takes, typed from their models, and clear errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from devicetwin import TwinProperty
from edgecore import DevicesDirError, load_devices

MODEL: dict[str, Any] = {
    "apiVersion": "devices.kubeedge.io/v1beta1",
    "kind": "DeviceModel",
    "metadata": {"name": "every-type", "namespace": "plant"},
    "spec": {
        "properties": [
            {"name": "count", "type": "INT"},
            {"name": "ratio", "type": "FLOAT"},
            {"name": "precise", "type": "DOUBLE"},
            {"name": "on", "type": "BOOLEAN"},
            {"name": "label", "type": "STRING"},
            {"name": "blob", "type": "BYTES"},
        ]
    },
}


def device(name: str, node: str | None, properties: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"deviceModelRef": {"name": "every-type"}, "properties": properties or []}
    if node is not None:
        spec["nodeName"] = node
    return {
        "apiVersion": "devices.kubeedge.io/v1beta1",
        "kind": "Device",
        "metadata": {"name": name, "namespace": "plant"},
        "spec": spec,
    }


def write(directory: Path, *documents: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    (directory / "devices.yaml").write_text(yaml.safe_dump_all(documents))
    return directory


def test_properties_take_their_type_from_the_model_and_desired_as_expected(tmp_path: Path) -> None:
    properties: list[dict[str, Any]] = [
        {"name": "count", "desired": {"value": "3"}},
        {"name": "ratio"},
        {"name": "precise"},
        {"name": "on", "desired": {"value": "true"}},
        {"name": "label"},
        {"name": "blob"},
    ]
    [declared] = load_devices(write(tmp_path / "d", MODEL, device("mixer", "edge-a", properties)), "edge-a")
    assert declared.id == "plant/mixer"
    assert list(declared.properties) == [
        TwinProperty("count", "int", optional=False, expected="3"),
        TwinProperty("ratio", "float", optional=False),
        TwinProperty("precise", "float", optional=False),
        TwinProperty("on", "boolean", optional=False, expected="true"),
        TwinProperty("label", "string", optional=False),
        TwinProperty("blob", "string", optional=False),
    ]
    # Membership [ext]: mappers learn the device's spec and its model's spec from the twin.
    assert declared.spec is not None
    assert declared.spec["deviceModelRef"] == {"name": "every-type"}
    assert declared.model is not None
    assert [prop["name"] for prop in declared.model["properties"]][:2] == ["count", "ratio"]


def test_a_node_takes_its_own_and_unbound_devices(tmp_path: Path) -> None:
    directory = write(
        tmp_path / "d", MODEL, device("mine", "edge-a"), device("theirs", "edge-b"), device("free", None)
    )
    assert [d.name for d in load_devices(directory, "edge-a")] == ["mine", "free"]
    # No node name: every device.
    assert [d.name for d in load_devices(directory, "")] == ["mine", "theirs", "free"]


def test_other_kinds_in_the_directory_are_skipped(tmp_path: Path) -> None:
    directory = write(tmp_path / "d", MODEL, device("mine", "edge-a"))
    (directory / "edgecore.yaml").write_text(
        "apiVersion: edgecore.config.kubeedge.io/v1alpha2\nkind: EdgeCore\n"
    )
    assert [d.name for d in load_devices(directory, "edge-a")] == ["mine"]


def test_missing_model_names_the_file_and_field(tmp_path: Path) -> None:
    directory = write(tmp_path / "d", device("orphan", "edge-a"))
    with pytest.raises(DevicesDirError) as caught:
        load_devices(directory, "edge-a")
    assert caught.value.path == directory / "devices.yaml"
    assert caught.value.field == "spec.deviceModelRef.name"
    assert "plant/every-type" in str(caught.value)


def test_invalid_document_names_the_file_field_and_value(tmp_path: Path) -> None:
    bad = device("mixer", "edge-a", [{"name": "count", "desired": {"value": "many"}}])
    directory = write(tmp_path / "d", MODEL, bad)
    with pytest.raises(DevicesDirError) as caught:
        load_devices(directory, "edge-a")
    assert caught.value.path == directory / "devices.yaml"
    assert caught.value.field.startswith("spec.properties")
    assert "'many'" in str(caught.value)
    assert str(directory / "devices.yaml") in str(caught.value)


def test_not_a_directory_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DevicesDirError, match="is not a directory"):
        load_devices(tmp_path / "absent", "edge-a")

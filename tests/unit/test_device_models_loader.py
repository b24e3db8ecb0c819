"""The loader: YAML / JSON text, files and directories into Devices and DeviceModels, with every problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from device_models import (
    Device,
    DeviceModel,
    ModelValidationError,
    dump_documents,
    load_documents,
    load_text,
    parse_document,
    validate_paths,
    validate_text,
)

MODEL = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: DeviceModel
metadata:
  name: lamp-model
spec:
  protocol: modbus
  properties:
    - {name: power, type: BOOLEAN, accessMode: ReadWrite}
"""

DEVICE = """\
apiVersion: devices.kubeedge.io/v1beta1
kind: Device
metadata:
  name: lamp-01
  creationTimestamp: 2024-01-01T00:00:00Z
spec:
  deviceModelRef: {name: lamp-model}
  nodeName: edge-node-1
  protocol:
    protocolName: modbus
    configData: {ip: 127.0.0.1, port: "5502"}
  properties:
    - name: power
      desired: {value: "true"}
      visitors:
        protocolName: modbus
        configData: {register: CoilRegister, offset: 3}
"""


def test_multi_document_text() -> None:
    objects = load_text(MODEL + "---\n" + DEVICE)

    assert [obj.label for obj in objects] == ["DeviceModel default/lamp-model", "Device default/lamp-01"]
    assert isinstance(objects[0], DeviceModel)
    assert isinstance(objects[1], Device)
    # Timestamps stay the strings the API server uses; plain YAML loaders would make them datetimes.
    assert objects[1].metadata.creation_timestamp == "2024-01-01T00:00:00Z"


def test_json_text() -> None:
    document = yaml.safe_load(DEVICE)
    document["metadata"]["creationTimestamp"] = "2024-01-01T00:00:00Z"

    (device,) = load_text(json.dumps(document))

    assert isinstance(device, Device)
    assert device.to_manifest()["spec"] == document["spec"]


def test_kubectl_list_output_is_read_item_by_item() -> None:
    listing = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [yaml.safe_load(MODEL), yaml.safe_load(DEVICE)],
    }

    objects = load_text(yaml.safe_dump(listing))

    assert [obj.label for obj in objects] == ["DeviceModel default/lamp-model", "Device default/lamp-01"]


def test_problems_in_list_items_name_the_item() -> None:
    device = yaml.safe_load(DEVICE)
    device["spec"]["nodeName"] = ["a"]
    listing = {"apiVersion": "devices.kubeedge.io/v1beta1", "kind": "DeviceList", "items": [device]}

    with pytest.raises(ModelValidationError) as caught:
        load_text(yaml.safe_dump(listing), "devices.yaml")

    assert (
        str(caught.value)
        == "devices.yaml: Device default/lamp-01: items[0].spec.nodeName: ['a'] is not a string"
    )


def test_directory_is_read_recursively_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "lamp.yml").write_text(MODEL)
    (tmp_path / "devices.yaml").write_text(DEVICE)
    (tmp_path / "notes.txt").write_text("not yaml: [")

    objects = load_documents(tmp_path)

    assert [obj.label for obj in objects] == ["Device default/lamp-01", "DeviceModel default/lamp-model"]


def test_files_and_directories_together(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(MODEL)
    (tmp_path / "devices").mkdir()
    (tmp_path / "devices" / "lamp.json").write_text(json.dumps(yaml.safe_load(DEVICE), default=str))

    objects = load_documents(tmp_path / "model.yaml", str(tmp_path / "devices"))

    assert [obj.id for obj in objects] == ["default/lamp-model", "default/lamp-01"]


def test_every_error_of_every_file_is_raised_at_once(tmp_path: Path) -> None:
    bad_model = MODEL.replace("BOOLEAN", "BOOL")
    bad_device = DEVICE.replace("CoilRegister", "Coil").replace("lamp-01", "lamp-02")
    (tmp_path / "a.yaml").write_text(bad_model)
    (tmp_path / "b.yaml").write_text(DEVICE + "---\n" + bad_device)

    with pytest.raises(ModelValidationError) as caught:
        load_documents(tmp_path)

    assert [str(problem) for problem in caught.value.problems] == [
        f"{tmp_path / 'a.yaml'}: DeviceModel default/lamp-model: spec.properties[name=power].type: 'BOOL' is "
        "not "
        "one of INT, FLOAT, DOUBLE, STRING, BOOLEAN, BYTES, STREAM",
        f"{tmp_path / 'b.yaml'}: Device default/lamp-02: "
        "spec.properties[name=power].visitors.configData.register: "
        "'Coil' is not one of CoilRegister, DiscreteInputRegister, HoldingRegister, InputRegister",
    ]


def test_unknown_kinds_are_reported_not_dropped() -> None:
    deployment = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: mapper, namespace: edge}\n"

    reports = validate_text(deployment + "---\n" + MODEL, "all.yaml")
    skipped = validate_text(deployment, "all.yaml", skip_other_kinds=True)

    assert [str(problem) for report in reports for problem in report.problems] == [
        "all.yaml: Deployment edge/mapper: kind: 'Deployment' is not Device or DeviceModel (edgetwin reads "
        "devices.kubeedge.io objects only)"
    ]
    assert [report.ok for report in reports] == [False, True]
    assert [(problem.severity, problem.path) for problem in skipped[0].problems] == [("warning", "kind")]
    assert not skipped[0].ok
    with pytest.raises(ModelValidationError, match="Deployment edge/mapper"):
        load_text(deployment)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "apiVersion: devices.kubeedge.io/v1\nkind: Device\nmetadata: {name: a}\n",
            "x.yaml: Device default/a: apiVersion: 'devices.kubeedge.io/v1' is not one of "
            "devices.kubeedge.io/v1beta1, devices.kubeedge.io/v1alpha2",
        ),
        (
            "kind: Device\n",
            "x.yaml: Device: apiVersion: is not one of devices.kubeedge.io/v1beta1, "
            "devices.kubeedge.io/v1alpha2",
        ),
        ("- just\n- a list\n", "x.yaml: ['just', 'a list'] is not a Kubernetes object (a mapping)"),
        (
            "kind: Device\nspec: [\n",
            "x.yaml: is not valid YAML (line 3, column 1): expected the node content, but found '<stream "
            "end>'",
        ),
    ],
)
def test_malformed_documents(text: str, expected: str) -> None:
    reports = validate_text(text, "x.yaml")

    assert [str(problem) for report in reports for problem in report.problems] == [expected]
    assert not any(report.ok for report in reports)


def test_empty_documents_are_skipped() -> None:
    assert validate_text("---\n---\n# nothing here\n") == []


def test_objects_defined_twice_are_errors(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(MODEL)
    (tmp_path / "b.yaml").write_text(MODEL)

    reports = validate_paths([tmp_path])

    assert [str(problem) for report in reports for problem in report.problems] == [
        f"{tmp_path / 'b.yaml'}: DeviceModel default/lamp-model: metadata.name: 'lamp-model' is defined "
        "twice "
        f"(also in {tmp_path / 'a.yaml'})"
    ]


def test_device_without_its_model_is_a_warning() -> None:
    (report,) = validate_text(DEVICE, "devices.yaml")

    assert report.ok
    assert [(problem.severity, str(problem)) for problem in report.problems] == [
        (
            "warning",
            "devices.yaml: Device default/lamp-01: spec.deviceModelRef.name: 'lamp-model' is not among the "
            "DeviceModels given; the cross-checks with it were skipped",
        )
    ]


def test_devices_are_checked_against_models_in_other_files(tmp_path: Path) -> None:
    (tmp_path / "model.yaml").write_text(MODEL)
    (tmp_path / "device.yaml").write_text(DEVICE.replace('"true"', '"on"'))

    reports = validate_paths([tmp_path / "device.yaml", tmp_path / "model.yaml"])

    assert [str(problem) for report in reports for problem in report.problems] == [
        f"{tmp_path / 'device.yaml'}: Device default/lamp-01: spec.properties[name=power].desired.value: "
        "'on' "
        "is not a boolean (exactly true or false)"
    ]


def test_missing_and_unreadable_paths_are_reported(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary.yaml").write_bytes(b"\xff\xfe\x00")

    reports = validate_paths([tmp_path / "absent.yaml", tmp_path / "empty", tmp_path / "binary.yaml"])

    assert [problem.message.split(":")[0] for report in reports for problem in report.problems] == [
        "does not exist",
        "contains no .yaml, .yml or .json file",
        "cannot be read",
    ]
    with pytest.raises(ModelValidationError, match="does not exist"):
        load_documents(tmp_path / "absent.yaml")


def test_dump_documents_round_trips() -> None:
    objects = load_text(MODEL + "---\n" + DEVICE)

    text = dump_documents(objects)

    assert load_text(text) == objects
    assert "deviceModelRef" in text
    assert "device_model_ref" not in text


def test_parse_document_rejects_non_mappings() -> None:
    with pytest.raises(ModelValidationError, match="is not a Kubernetes object"):
        parse_document(["not", "an", "object"])  # type: ignore[arg-type]

"""The committed CRDs are the generated ones, structural, and declare every field the models have."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from device_models import DeviceSpec, crd_manifest, crd_yaml, parse_document
from device_models.crd import CRD_DIRECTORY, KINDS, Kind, file_name
from tests.unit.test_device_models import DEVICE_YAML, MODEL_YAML

# What a structural schema node may hold (apiextensions.k8s.io/v1, as v1.28 accepts it).
_ALLOWED_KEYS = {
    "description",
    "type",
    "format",
    "properties",
    "required",
    "items",
    "additionalProperties",
    "enum",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "x-kubernetes-preserve-unknown-fields",
}
_FREE_FORM = ("configData", "anomalyDetection")


def schema_of(kind: Kind) -> dict[str, Any]:
    schema: dict[str, Any] = crd_manifest(kind)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from nodes(sub, f"{path}.{name}")
    if "items" in schema:
        yield from nodes(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from nodes(schema["additionalProperties"], f"{path}{{}}")


@pytest.mark.parametrize("kind", KINDS)
def test_committed_crd_is_the_generated_one(kind: Kind) -> None:
    committed = (CRD_DIRECTORY / file_name(kind)).read_text(encoding="utf-8")

    assert committed == crd_yaml(kind), "regenerate the CRDs with `python -m device_models`"
    assert yaml.safe_load(committed) == crd_manifest(kind)


@pytest.mark.parametrize("kind", KINDS)
def test_crd_schema_is_structural(kind: Kind) -> None:
    for path, node in nodes(schema_of(kind)):
        assert set(node) <= _ALLOWED_KEYS, (path, set(node) - _ALLOWED_KEYS)
        assert node.get("type") in ("object", "array", "string", "integer", "number", "boolean"), path
        assert not ("properties" in node and "additionalProperties" in node), path
        assert set(node.get("required", [])) <= set(node.get("properties", {})), path
        assert node.get("exclusiveMinimum", True) is True, path
        if "enum" in node:
            assert node["type"] == "string", path
        if node.get("x-kubernetes-preserve-unknown-fields"):
            assert path.endswith(_FREE_FORM), path
            assert node["type"] == "object", path


@pytest.mark.parametrize("kind", KINDS)
def test_metadata_is_left_to_the_api_server(kind: Kind) -> None:
    schema = schema_of(kind)

    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["properties"]["apiVersion"] == {"type": "string"}
    assert "metadata" not in schema.get("required", [])


def undeclared(document: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """The fields of ``document`` the API server would prune (not declared by ``schema``)."""
    if schema.get("x-kubernetes-preserve-unknown-fields") or path == ".metadata":
        return []
    if isinstance(document, list):
        return [missing for item in document for missing in undeclared(item, schema["items"], f"{path}[]")]
    if not isinstance(document, dict):
        return []
    if isinstance(schema.get("additionalProperties"), dict):
        return [
            missing
            for key, value in document.items()
            for missing in undeclared(value, schema["additionalProperties"], f"{path}.{key}")
        ]
    declared = schema.get("properties", {})
    return [f"{path}.{key}" for key in document if key not in declared] + [
        missing
        for key, value in document.items()
        if key in declared
        for missing in undeclared(value, declared[key], f"{path}.{key}")
    ]


@pytest.mark.parametrize(("kind", "text"), [("Device", DEVICE_YAML), ("DeviceModel", MODEL_YAML)])
def test_crd_declares_every_field_so_nothing_is_pruned(kind: Kind, text: str) -> None:
    obj = parse_document(yaml.safe_load(text))

    assert undeclared(obj.to_manifest(), schema_of(kind)) == []


def test_required_fields_match_the_models() -> None:
    spec = schema_of("Device")["properties"]["spec"]

    assert spec["required"] == ["deviceModelRef"]
    assert spec["properties"]["deviceModelRef"]["required"] == ["name"]
    assert spec["properties"]["properties"]["items"]["required"] == ["name"]
    assert schema_of("DeviceModel")["properties"]["spec"]["properties"]["properties"]["items"][
        "required"
    ] == [
        "name",
        "type",
    ]


def test_enums_are_kubeedge_spellings() -> None:
    item = schema_of("DeviceModel")["properties"]["spec"]["properties"]["properties"]["items"]["properties"]

    assert item["type"]["enum"] == ["INT", "FLOAT", "DOUBLE", "STRING", "BOOLEAN", "BYTES", "STREAM"]
    assert item["accessMode"]["enum"] == ["ReadWrite", "ReadOnly"]
    assert item["minimum"]["type"] == "string"


def test_device_crd_names_status_and_columns() -> None:
    crd = crd_manifest("Device")
    version = crd["spec"]["versions"][0]

    assert crd["metadata"]["name"] == "devices.devices.kubeedge.io"
    assert crd["spec"]["group"] == "devices.kubeedge.io"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"] == {
        "kind": "Device",
        "listKind": "DeviceList",
        "plural": "devices",
        "singular": "device",
    }
    assert (version["name"], version["served"], version["storage"]) == ("v1beta1", True, True)
    assert version["subresources"] == {"status": {}}
    assert [(column["name"], column["jsonPath"]) for column in version["additionalPrinterColumns"]] == [
        ("Node", ".spec.nodeName"),
        ("Model", ".spec.deviceModelRef.name"),
        ("State", ".status.state"),
        ("Age", ".metadata.creationTimestamp"),
    ]
    assert "status" in version["schema"]["openAPIV3Schema"]["properties"]


def test_device_model_crd_names_and_columns() -> None:
    crd = crd_manifest("DeviceModel")
    version = crd["spec"]["versions"][0]

    assert crd["metadata"]["name"] == "devicemodels.devices.kubeedge.io"
    assert crd["spec"]["names"]["plural"] == "devicemodels"
    assert "subresources" not in version
    assert [(column["name"], column["jsonPath"]) for column in version["additionalPrinterColumns"]] == [
        ("Protocol", ".spec.protocol"),
        ("Age", ".metadata.creationTimestamp"),
    ]


def test_descriptions_come_from_the_models() -> None:
    spec = schema_of("Device")["properties"]["spec"]

    assert spec["properties"]["nodeName"]["description"] == DeviceSpec.model_fields["node_name"].description
    assert spec["description"] == DeviceSpec.__doc__
    # Docstrings are reStructuredText; kubectl explain shows plain text.
    assert "``" not in yaml.safe_dump(crd_manifest("Device"))

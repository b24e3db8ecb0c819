"""The Device / DeviceModel CustomResourceDefinitions, generated from the pydantic models.

The committed files under ``device_models/crds/`` are this module's output (a test keeps them equal);
regenerate them with ``python -m device_models``. The schemas are structural (every node has a
type; only free-form configData keeps unknown fields) and use what Kubernetes v1.28 supports.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Final, Literal

import yaml

from device_models.device import Device
from device_models.device_model import GROUP, DeviceModel
from device_models.meta import KubeObject

Kind = Literal["Device", "DeviceModel"]
KINDS: Final[tuple[Kind, ...]] = ("Device", "DeviceModel")
VERSION: Final = "v1beta1"
CRD_DIRECTORY: Final = Path(__file__).parent / "crds"

_MODELS: dict[Kind, type[KubeObject]] = {"Device": Device, "DeviceModel": DeviceModel}
_PLURALS: dict[Kind, str] = {"Device": "devices", "DeviceModel": "devicemodels"}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}
_PRINTER_COLUMNS: dict[Kind, list[dict[str, str]]] = {
    "Device": [
        {"name": "Node", "type": "string", "jsonPath": ".spec.nodeName"},
        {"name": "Model", "type": "string", "jsonPath": ".spec.deviceModelRef.name"},
        {"name": "State", "type": "string", "jsonPath": ".status.state"},
        _AGE,
    ],
    "DeviceModel": [{"name": "Protocol", "type": "string", "jsonPath": ".spec.protocol"}, _AGE],
}
# JSON-schema keywords kept in the CRD; the rest (title, default, pattern, format, ...) is pydantic's own or
# not portable to the API server's Go regexps.
_KEPT_KEYWORDS = (
    "description",
    "enum",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
)
_HEADER = "# Generated from the pydantic models by `python -m device_models`; do not edit.\n"


def file_name(kind: Kind) -> str:
    """``devices_v1beta1_device.yaml`` or ``devices_v1beta1_devicemodel.yaml``."""
    return f"devices_{VERSION}_{kind.lower()}.yaml"


def crd_manifest(kind: Kind) -> dict[str, Any]:
    """The ``apiextensions.k8s.io/v1`` CustomResourceDefinition of ``kind``."""
    model = _MODELS[kind]
    plural = _PLURALS[kind]
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": _object_schema(model)},
    }
    if "status" in model.model_fields:
        version["subresources"] = {"status": {}}
    version["additionalPrinterColumns"] = copy.deepcopy(_PRINTER_COLUMNS[kind])
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "names": {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [version],
        },
    }


def crd_yaml(kind: Kind) -> str:
    """The text of the committed CRD file of ``kind``."""
    return _HEADER + yaml.safe_dump(crd_manifest(kind), sort_keys=False, width=110)


def _object_schema(model: type[KubeObject]) -> dict[str, Any]:
    schema = model.model_json_schema(by_alias=True, mode="validation")
    structural = _structural(schema, schema.get("$defs", {}))
    properties = structural["properties"]
    # The API server owns these: metadata may only be declared as an object, apiVersion / kind as strings.
    properties["apiVersion"] = {"type": "string"}
    properties["kind"] = {"type": "string"}
    properties["metadata"] = {"type": "object"}
    required = [
        name for name in structural.get("required", []) if name not in ("apiVersion", "kind", "metadata")
    ]
    if required:
        structural["required"] = required
    else:
        structural.pop("required", None)
    return structural


def _structural(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one node of pydantic's JSON schema into a structural OpenAPI v3 schema node."""
    description = schema.get("description")
    if "$ref" in schema:
        schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    if "anyOf" in schema:
        # Optional fields (X | None): the API server has no null, omitted fields are the None.
        members = [member for member in schema["anyOf"] if member.get("type") != "null"]
        if len(members) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {schema['anyOf']}")
        schema = members[0]
        if "$ref" in schema:
            schema = defs[schema["$ref"].rsplit("/", 1)[-1]]
    node: dict[str, Any] = {}
    description = description or schema.get("description")
    if description:
        # Docstrings are reStructuredText; kubectl explain shows plain text.
        node["description"] = description.replace("``", "")
    node.update({key: schema[key] for key in _KEPT_KEYWORDS if key in schema and key != "description"})
    if "exclusiveMinimum" in schema:
        node["minimum"], node["exclusiveMinimum"] = schema["exclusiveMinimum"], True
    if "exclusiveMaximum" in schema:
        node["maximum"], node["exclusiveMaximum"] = schema["exclusiveMaximum"], True
    if "const" in schema:
        node["enum"] = [schema["const"]]
    kind = schema.get("type", "string" if "enum" in node else None)
    if kind is None:
        raise ValueError(f"schema node without a type: {schema}")
    node["type"] = kind
    if kind == "integer":
        node["format"] = "int64"
    elif kind == "array":
        node["items"] = _structural(schema["items"], defs)
    elif kind == "object":
        node.update(_object_members(schema, defs))
    return node


def _object_members(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    if "properties" in schema:
        members: dict[str, Any] = {
            "properties": {name: _structural(sub, defs) for name, sub in schema["properties"].items()}
        }
        if schema.get("required"):
            members["required"] = list(schema["required"])
        return members
    extra = schema.get("additionalProperties", True)
    if extra is True:
        # Free-form configData: any keys, any values, kept as they are.
        return {"x-kubernetes-preserve-unknown-fields": True}
    return {"additionalProperties": _structural(extra, defs)}


def write_crds(directory: Path = CRD_DIRECTORY) -> list[Path]:
    """Write both CRD files into ``directory``; returns their paths."""
    paths = []
    for kind in KINDS:
        path = directory / file_name(kind)
        path.write_text(crd_yaml(kind), encoding="utf-8")
        paths.append(path)
    return paths

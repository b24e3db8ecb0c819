"""Just enough OpenAPI for kubectl: it reads these documents to decide how to validate and patch.

kubectl looks in ``/openapi/v3`` for the ``fieldValidation`` parameter on a kind's PATCH operation (found by
``x-kubernetes-group-version-kind``); finding it, it leaves validation to the server instead of failing
client-side. For patches of built-in kinds it falls back to ``/openapi/v2``, where a document holding only
``swagger: "2.0"`` makes it use its compiled-in patch strategies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

# What kubectl asks for has "@v1.0"; what the apiserver answers has ".v1.0" (Go cannot parse the "@").
OPENAPI_V2_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"
# openapi_v2.Document with only field 1 (swagger) = "2.0": tag 0x0a, length 3, then the bytes.
OPENAPI_V2_PROTOBUF = b"\x0a\x032.0"
OPENAPI_V2_JSON: dict[str, Any] = {"swagger": "2.0", "info": {"title": "Kubernetes", "version": "v1.28.7"}}

_STRING_QUERY = {"type": "string", "uniqueItems": True}


@dataclass(frozen=True)
class ServedKind:
    """A resource as the OpenAPI documents describe it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def group_version_path(self) -> str:
        """The discovery path of the group-version without its leading slash: ``api/v1``, ``apis/g/v``."""
        return f"apis/{self.group}/{self.version}" if self.group else f"api/{self.version}"


def _item_path(kind: ServedKind) -> str:
    scope = "/namespaces/{namespace}" if kind.namespaced else ""
    return f"/{kind.group_version_path}{scope}/{kind.plural}/{{name}}"


def group_version_document(kinds: Iterable[ServedKind]) -> dict[str, Any]:
    """The ``/openapi/v3/<group-version>`` document: a PATCH operation per kind, accepting fieldValidation."""
    paths: dict[str, Any] = {}
    for kind in kinds:
        paths[_item_path(kind)] = {
            "patch": {
                "operationId": f"patch{kind.kind}",
                "parameters": [
                    {"name": name, "in": "query", "schema": _STRING_QUERY}
                    for name in ("dryRun", "fieldManager", "fieldValidation")
                ],
                "responses": {"200": {"description": "OK"}},
                "x-kubernetes-action": "patch",
                "x-kubernetes-group-version-kind": {
                    "group": kind.group,
                    "version": kind.version,
                    "kind": kind.kind,
                },
            }
        }
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.28.7"},
        "paths": paths,
        "components": {"schemas": {}},
    }


def root_document(kinds: Iterable[ServedKind]) -> dict[str, Any]:
    """The ``/openapi/v3`` index: each group-version's document URL, with a hash of its content."""
    by_group_version: dict[str, list[ServedKind]] = {}
    for kind in kinds:
        by_group_version.setdefault(kind.group_version_path, []).append(kind)
    paths = {}
    for path, members in sorted(by_group_version.items()):
        # Clients cache documents by URL, so the hash must change whenever a CRD adds or changes a kind.
        digest = hashlib.sha512(
            json.dumps(group_version_document(members), sort_keys=True).encode()
        ).hexdigest()
        paths[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={digest.upper()}"}
    return {"paths": paths}

"""Server-side printing: ``Table`` responses with a CRD's printer columns, as ``kubectl get`` wants them."""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

_NAME_DESCRIPTION = (
    "Name must be unique within a namespace. Is required when creating resources, although some resources "
    "may allow a client to request the generation of an appropriate name automatically. Name is primarily "
    "intended for creation idempotence and configuration definition. Cannot be updated. More info: "
    "https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names"
)
_PATH_TOKEN = re.compile(
    r"""\.(?P<field>[^.\[\]]+)
      | \[(?P<index>-?\d+|\*)\]
      | \[\?\(@\.(?P<filter>[\w.]+)\s*==\s*["'](?P<literal>[^"']*)["']\)\]""",
    re.VERBOSE,
)


def human_duration(seconds: float) -> str:
    """Format an age as apimachinery's ``duration.HumanDuration``: ``45s``, ``3m20s``, ``5h3m``, ``12d``."""
    whole = int(seconds)
    if whole < -1:
        return "<invalid>"
    if whole < 2 * 60:
        return f"{max(whole, 0)}s"
    minutes, hours, days = whole // 60, whole // 3600, whole // 86400
    if minutes < 10:
        return _with_remainder(minutes, "m", whole % 60, "s")
    if minutes < 3 * 60:
        return f"{minutes}m"
    if hours < 8:
        return _with_remainder(hours, "h", minutes % 60, "m")
    if hours < 48:
        return f"{hours}h"
    if days < 8:
        return _with_remainder(days, "d", hours % 24, "h")
    if days < 2 * 365:
        return f"{days}d"
    if days < 8 * 365:
        return _with_remainder(days // 365, "y", days % 365, "d")
    return f"{days // 365}y"


def _with_remainder(value: int, unit: str, remainder: int, remainder_unit: str) -> str:
    return f"{value}{unit}{remainder}{remainder_unit}" if remainder else f"{value}{unit}"


def json_path(obj: Any, path: str) -> list[Any]:
    """Evaluate the simple JSONPath of printer columns (``.a.b``, ``[0]``, ``[*]``, ``[?(@.k=="v")]``)."""
    results = [obj]
    position = 0
    expression = path.strip().removeprefix("{").removesuffix("}").strip()
    while position < len(expression):
        match = _PATH_TOKEN.match(expression, position)
        if match is None:
            return []
        position = match.end()
        results = [found for current in results for found in _step(current, match)]
    return results


def _step(current: Any, token: re.Match[str]) -> Iterable[Any]:
    if token["field"] is not None:
        if isinstance(current, Mapping) and token["field"] in current:
            yield current[token["field"]]
    elif token["index"] is not None:
        if isinstance(current, list):
            if token["index"] == "*":
                yield from current
            elif -len(current) <= int(token["index"]) < len(current):
                yield current[int(token["index"])]
    elif isinstance(current, list):
        for item in current:
            if json_path(item, "." + token["filter"]) == [token["literal"]]:
                yield item


@dataclass(frozen=True)
class PrinterColumn:
    """A Table column: a CRD's ``additionalPrinterColumns`` entry, or a built-in printer (``compute``)."""

    name: str
    type: str
    json_path: str
    description: str = ""
    format: str = ""
    priority: int = 0
    compute: Callable[[Mapping[str, Any]], Any] | None = None

    @classmethod
    def from_crd(cls, column: Mapping[str, Any]) -> PrinterColumn:
        """Read a column of ``spec.versions[].additionalPrinterColumns``."""
        path = str(column["jsonPath"])
        return cls(
            name=str(column["name"]),
            type=str(column.get("type", "string")),
            json_path=path,
            description=str(
                column.get("description") or f"Custom resource definition column (in JSONPath format): {path}"
            ),
            format=str(column.get("format", "")),
            priority=int(column.get("priority", 0)),
        )

    def cell(self, obj: Mapping[str, Any], now: datetime.datetime) -> Any:
        """This column's cell for ``obj``: the first JSONPath result, dates as ages, ``None`` if absent."""
        if self.compute is not None:
            return self.compute(obj)
        found = json_path(obj, self.json_path)
        if not found or found[0] is None:
            return None
        value = found[0]
        if self.type == "date":
            try:
                moment = datetime.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            except ValueError:
                return None
            return human_duration((now - moment).total_seconds())
        if self.type == "string" and not isinstance(value, str):
            return str(value)
        return value


AGE_COLUMN = PrinterColumn("Age", "date", ".metadata.creationTimestamp")


def table(
    objects: Iterable[Mapping[str, Any]],
    columns: Iterable[PrinterColumn],
    resource_version: str,
    include_object: str = "Metadata",
) -> dict[str, Any]:
    """Build a ``meta.k8s.io/v1`` Table of ``objects``; ``include_object`` is Object, Metadata or None."""
    columns = list(columns)
    now = datetime.datetime.now(datetime.UTC)
    definitions = [
        {"name": "Name", "type": "string", "format": "name", "description": _NAME_DESCRIPTION, "priority": 0}
    ]
    definitions += [
        {
            "name": c.name,
            "type": c.type,
            "format": c.format,
            "description": c.description,
            "priority": c.priority,
        }
        for c in columns
    ]
    rows = []
    for obj in objects:
        row: dict[str, Any] = {
            "cells": [obj["metadata"]["name"], *(column.cell(obj, now) for column in columns)]
        }
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            }
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": definitions,
        "rows": rows,
    }

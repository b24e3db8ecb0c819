"""The device messages between cloudcore and an edge node (CONTRACTS.md §3), built and read in one place.

Cloud -> edge: ``<ns>/devicemodel/<name>`` and ``<ns>/device/<name>`` (insert / update / delete, content =
the CR without its status, resourceversion = the CR's), and ``device/<ns>/<name>/twin/cloud_updated``
(desired values with versions, resourceversion = the Device's, so the link re-sends it until the edge has
it and a newer one replaces an unsent older one). Edge -> cloud: ``device/<ns>/<name>/twin/edge_updated``
and ``device/<ns>/<name>/state/update`` as devicetwin hands them over.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from cloudcore.errors import DeviceMessageError
from cloudsync import Group, Message, Operation, ResourceType
from device_models import MsgTwin, StateUpdateResult, TwinSync, new_event_id, now_ms

__all__ = [
    "CLOUD_UPDATED",
    "EDGE_UPDATED",
    "SOURCE",
    "STATE_UPDATE",
    "EdgeStateReport",
    "EdgeTwinReport",
    "cloud_twin_message",
    "is_device_resource",
    "object_message",
    "read_edge_message",
]

#: ``route.source`` of every message the DeviceController sends.
SOURCE = "devicecontroller"
CLOUD_UPDATED = "twin/cloud_updated"
EDGE_UPDATED = "twin/edge_updated"
STATE_UPDATE = "state/update"
_DEVICE_PREFIX = "device/"
_LEGACY_NAMESPACE = "default"
# Server-kept fields the edge has no use for: they only make every message larger.
_DROPPED_METADATA = ("managedFields",)


@dataclass(frozen=True)
class EdgeTwinReport:
    """``twin/edge_updated``: twins the edge wrote (reported values; desired values it holds; versions)."""

    device_id: str
    twins: Mapping[str, MsgTwin | None]


@dataclass(frozen=True)
class EdgeStateReport:
    """``state/update``: the device's state and, when online, the time it was last online."""

    device_id: str
    state: str
    last_online: str | None


def is_device_resource(resource: str) -> bool:
    """Whether an edge->cloud resource is a device's (``device/...``): the composition routes it here."""
    return resource.startswith(_DEVICE_PREFIX)


def object_message(
    operation: Operation, kind: ResourceType, obj: Mapping[str, Any], resource_version: str
) -> Message:
    """An insert / update / delete of a Device or DeviceModel CR for an edge node."""
    metadata = obj["metadata"]
    content = {key: value for key, value in obj.items() if key != "status"}
    content["metadata"] = {key: value for key, value in metadata.items() if key not in _DROPPED_METADATA}
    return Message.new(
        source=SOURCE,
        group=Group.TWIN,
        operation=operation,
        resource=f"{metadata['namespace']}/{kind.value}/{metadata['name']}",
        content=content,
        resource_version=resource_version,
    )


def cloud_twin_message(device_id: str, twins: Mapping[str, MsgTwin], resource_version: str) -> Message:
    """``device/<id>/twin/cloud_updated``: desired values with their versions."""
    content = TwinSync(event_id=new_event_id(), timestamp=now_ms(), twin=dict(twins)).to_dict()
    return Message.new(
        source=SOURCE,
        group=Group.TWIN,
        operation=Operation.UPDATE,
        resource=f"{_DEVICE_PREFIX}{device_id}/{CLOUD_UPDATED}",
        content=content,
        resource_version=resource_version,
    )


def read_edge_message(message: Message) -> EdgeTwinReport | EdgeStateReport:
    """Read an edge->cloud device message; raises :class:`DeviceMessageError` saying what is wrong."""
    resource = message.resource
    device_id, suffix = _split(resource)
    try:
        if suffix == EDGE_UPDATED:
            sync = TwinSync.model_validate(message.content)
            return EdgeTwinReport(device_id, sync.twin)
        if suffix == STATE_UPDATE:
            state = StateUpdateResult.model_validate(message.content)
            return EdgeStateReport(device_id, state.device.state, state.device.last_online_time)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(part) for part in first["loc"]) or "content"
        raise DeviceMessageError(resource, f"{where}: {first['msg']}") from exc
    raise DeviceMessageError(resource, f"{suffix!r} is not {EDGE_UPDATED} or {STATE_UPDATE}")


def _split(resource: str) -> tuple[str, str]:
    """``(<ns>/<name>, suffix)`` of ``device/<ns>/<name>/<a>/<b>``; a one-segment id is in ``default``."""
    parts = resource.split("/")
    if parts[0] != "device" or len(parts) not in (4, 5) or not all(parts):
        raise DeviceMessageError(resource, "is not device/<namespace>/<name>/<twin|state>/<operation>")
    if len(parts) == 4:  # KubeEdge's legacy device/<name>/... form
        return f"{_LEGACY_NAMESPACE}/{parts[1]}", "/".join(parts[2:])
    return f"{parts[1]}/{parts[2]}", "/".join(parts[3:])

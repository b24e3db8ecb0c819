"""The twin's link to the cloud: what it hands over (KubeEdge's resources, CONTRACTS.md §3) and to whom."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

#: The operation of every message the twin hands to the cloud.
UPDATE_OPERATION = "update"


class CloudSink(Protocol):
    """Where the twin hands messages for the cloud (edgecore's EdgeHub outbox); ``content`` is JSON-ready.

    The twin awaits each call before it handles the device's next change, so a sink that queues durably
    keeps the per-device order. An exception is logged and counted; the twin carries on.
    """

    async def send(self, resource: str, operation: str, content: dict[str, Any]) -> None:
        """Hand one message to the cloud link."""


def twin_edge_updated_resource(device_id: str) -> str:
    """``device/<ns>/<name>/twin/edge_updated``: twins written at the edge, with versions."""
    return f"device/{device_id}/twin/edge_updated"


def state_update_resource(device_id: str) -> str:
    """``device/<ns>/<name>/state/update``: the device's state (online, offline, ...)."""
    return f"device/{device_id}/state/update"


@dataclass(frozen=True)
class CloudUpdateResult:
    """What a cloud twin update did: properties applied, and those refused with the reason.

    For a property refused because the edge holds a newer twin, the edge's twin (with its versions) was sent
    back to the cloud sink.
    """

    applied: tuple[str, ...] = ()
    rejected: Mapping[str, str] = field(default_factory=dict)

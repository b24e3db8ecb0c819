"""Acknowledgements: who sends them, and where the cloud keeps what each edge node acknowledged.

The cloud remembers, per node and object, the last resourceVersion the node acknowledged.

cloudcore keeps it durably in the Kubernetes API (``cloudcore.objectsync``); :class:`MemoryAckStore` keeps
it in memory, for tests and benchmarks.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["CLOUD_LINK_SOURCE", "EDGE_LINK_SOURCE", "AckStore", "MemoryAckStore"]

CLOUD_LINK_SOURCE = "cloudhub"
"""``route.source`` of the cloud link's own messages: its acknowledgements."""
EDGE_LINK_SOURCE = "edgehub"
"""``route.source`` of the edge link's own messages: its acknowledgements and keepalives."""


class AckStore(Protocol):
    """Durable "last acknowledged resourceVersion per (node, resource)"; resources as on the wire."""

    async def load(self) -> dict[tuple[str, str], str]:
        """Every recorded version, read once when the link starts."""
        ...

    async def record(self, node: str, resource: str, version: str) -> None:
        """Remember that ``node`` acknowledged ``version`` of ``resource``."""
        ...

    async def forget_node(self, node: str) -> None:
        """Drop everything recorded for ``node`` (the node was deleted)."""
        ...


class MemoryAckStore:
    """An :class:`AckStore` in a dict: it survives a restart of the link object, not of the process."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, str], str] = {}

    async def load(self) -> dict[tuple[str, str], str]:
        """A copy of the recorded versions."""
        return dict(self.versions)

    async def record(self, node: str, resource: str, version: str) -> None:
        """Remember ``version``."""
        self.versions[node, resource] = version

    async def forget_node(self, node: str) -> None:
        """Drop the node's versions."""
        for key in [key for key in self.versions if key[0] == node]:
            del self.versions[key]

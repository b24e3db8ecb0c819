"""edgecore's side of the cloud link: routing cloud messages to the modules, and the device sync module.

:class:`EdgeRouter` is the EdgeLink's handler. Devices, DeviceModels and twin messages go to the device sync
(and Devices / DeviceModels also to the MetaManager, so that MetaServer serves them); every other object goes
to the MetaManager. On each (re)connect it announces the node (:class:`~edgecore.nodeinfo.NodeInfo`), which is
how cloudcore creates and updates the Node. :class:`DeviceSyncModule` runs :class:`~edgecore.devicesync.
DeviceSync` as a supervised module on the edge's database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from prometheus_client import CollectorRegistry, Counter

from cloudsync import EdgeLink, Message, ResourceType, resource_type
from devicetwin import DeviceTwin
from edgecore.devicesync import DeviceObjectStore, DeviceSync, LinkCloudSink
from edgecore.errors import EdgeCoreError, MetaMessageError
from edgecore.metamanager import MetaManager
from edgecore.nodeinfo import NodeInfo

__all__ = ["DeviceSyncModule", "EdgeRouter"]

log = logging.getLogger(__name__)

_DEVICE_OBJECTS = frozenset({ResourceType.DEVICE, ResourceType.DEVICE_MODEL})


class DeviceSyncModule:
    """The device sync on the edge database; applies to whatever twin ``twin`` returns at the time."""

    name = "devicesync"

    def __init__(
        self,
        database: Path,
        twin: Callable[[], DeviceTwin],
        link: EdgeLink,
        *,
        registry: CollectorRegistry,
    ) -> None:
        self._store = DeviceObjectStore(database)
        self.sync = DeviceSync(twin, self._store, LinkCloudSink(link), link, registry=registry)
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Open the store and declare the kept devices to the twin again."""
        self._stopped.clear()
        await self._store.open()
        try:
            await self.sync.start()
        except BaseException:
            await self._store.close()
            raise

    async def wait(self) -> None:
        """Return once stopped: nothing runs in the background, the link calls in."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Close the store."""
        self._stopped.set()
        await self._store.close()


class EdgeRouter:
    """The EdgeLink's handler: each cloud message to its modules; the node announced on connect."""

    def __init__(
        self,
        node: NodeInfo,
        *,
        registry: CollectorRegistry,
        meta: MetaManager | None = None,
        on_connected: Callable[[], None] | None = None,
    ) -> None:
        self._node = node
        self._meta = meta
        self._on_connected = on_connected
        self.link: EdgeLink | None = None
        """Set by edgecore once the link exists (the link needs the router first)."""
        self.devices: DeviceSyncModule | None = None
        """Set by edgecore when the twin runs (the device sync needs the link first)."""
        self._dropped = Counter(
            "edgetwin_edgecore_unrouted_messages",
            "Cloud messages no enabled edge module takes, by resource type",
            ["type"],
            registry=registry,
        )

    async def connected(self) -> None:
        """Announce the node (labels, taints, addresses, capacity), then let edgecore re-send pod statuses."""
        if self.link is None:
            raise EdgeCoreError("the router has no link to announce the node on")
        await self.link.send(await self._node.message())
        log.info("node announced to the cloud", extra={"node": self._node.name})
        if self._on_connected is not None:
            self._on_connected()

    async def disconnected(self) -> None:
        """The modules keep working from SQLite; the link reconnects by itself."""
        log.info("cloud link down; the edge keeps working from its local store")

    async def received(self, message: Message) -> None:
        """Hand one cloud message to its modules; returns once each has made it durable."""
        resource = message.resource
        kind = resource_type(resource)
        if resource.startswith("device/") or kind in _DEVICE_OBJECTS or kind == ResourceType.MEMBERSHIP:
            if self.devices is not None:
                await self.devices.sync.received(message)
            if self._meta is not None and kind in _DEVICE_OBJECTS:
                await _store_meta(self._meta, message)
            if self.devices is None and (self._meta is None or kind not in _DEVICE_OBJECTS):
                self._drop(message, kind or "device")
        elif self._meta is not None:
            await _store_meta(self._meta, message)
        else:
            self._drop(message, kind or "unknown")

    def _drop(self, message: Message, kind: str) -> None:
        self._dropped.labels(type=kind).inc()
        log.warning(
            "cloud message for no enabled module dropped",
            extra={"resource": message.resource, "operation": message.operation.value},
        )


async def _store_meta(meta: MetaManager, message: Message) -> None:
    try:
        await meta.received(message)
    except MetaMessageError as exc:
        # Refused for good (counted by MetaManager): acknowledged, or the cloud would re-send it forever.
        log.warning("cloud message refused: %s", exc, extra={"msg_id": message.msg_id})

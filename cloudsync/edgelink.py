"""Reliable delivery on the edge side: a durable outbox and applied versions over :class:`EdgeHub`.

Edge → cloud. :meth:`EdgeLink.send` writes the message to the SQLite outbox and returns once it is durable.
Messages leave in the order they were handed over, at most ``window`` unacknowledged at a time; each stays in
the outbox until the cloud acknowledges it (a ``response`` from ``cloudhub`` with ``parent_msg_id``), goes
again after ``ack_timeout`` and after every reconnect, and survives a restart of the edge (a new EdgeLink on
the same database sends what is left). The cloud drops duplicates by ``msg_id``.

Cloud → edge. Messages reach :meth:`EdgeLinkHandler.received` in order. An object message (one with a
``resourceversion``) whose version is not newer than the last one applied for its resource is acknowledged
without being handed over again; otherwise, once the handler returns, its version is recorded durably and
the message acknowledged (a ``response`` from ``edgehub``). If the handler raises, the message is not
acknowledged and the cloud sends it again. Messages without a version are handed over as they come.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry

from cloudsync.acks import CLOUD_LINK_SOURCE, EDGE_LINK_SOURCE
from cloudsync.edgehub import EdgeHub, EdgeHubSettings
from cloudsync.errors import LinkClosedError, LinkError
from cloudsync.message import Message, Operation
from cloudsync.metrics import LinkMetrics
from cloudsync.outbox import Outbox
from cloudsync.tasks import cancel_task
from cloudsync.versions import is_newer
from cloudsync.window import InFlight

__all__ = ["EdgeLink", "EdgeLinkHandler"]

log = logging.getLogger(__name__)


class EdgeLinkHandler(Protocol):
    """What edgecore does with the link's events (device sync, meta manager, node status)."""

    async def received(self, message: Message) -> None:
        """One cloud → edge message, in order: persist or apply it before returning; raise to refuse it."""
        ...

    async def connected(self) -> None:
        """The link to the cloud is (re)established."""
        ...

    async def disconnected(self) -> None:
        """The link to the cloud is down (it reconnects by itself)."""
        ...


class EdgeLink:
    """EdgeHub with a durable outbox; the supervised module edgecore runs.

    ``database`` is the SQLite file of the outbox and the applied versions (edgecore's own database file
    may be given: the tables are separate). ``ssl_context`` is called on every connect.
    """

    name = "edgehub"

    def __init__(
        self,
        settings: EdgeHubSettings,
        handler: EdgeLinkHandler,
        *,
        database: Path,
        ssl_context: Callable[[], ssl.SSLContext],
        registry: CollectorRegistry | None = None,
        ack_timeout: float = 10.0,
        window: int = 64,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._handler = handler
        self._window = window
        self._metrics = LinkMetrics(registry, "edge")
        self._hub = EdgeHub(settings, ssl_context, self, metrics=self._metrics)
        self._outbox = Outbox(database)
        self._pending: deque[Message] = deque()
        self._inflight = InFlight(ack_timeout)
        self._applied: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._sender: asyncio.Task[None] | None = None
        self._running = False

    @property
    def connected(self) -> bool:
        """True while a session with the cloud is up."""
        return self._hub.connected

    @property
    def last_error(self) -> LinkError | None:
        """Why the link is down (a refusal by the cloud, a TLS or network failure); ``None`` when up."""
        return self._hub.last_error

    @property
    def unacknowledged(self) -> int:
        """Messages in the outbox, not yet acknowledged by the cloud."""
        return len(self._pending) + len(self._inflight)

    async def start(self) -> None:
        """Open the outbox, then connect in the background (the edge works while the cloud is away)."""
        contents = await self._outbox.open()
        self._pending = deque(contents.messages)
        self._inflight.clear()
        self._applied = contents.applied
        self._metrics.acks_pending.inc(len(self._pending))
        self._running = True
        await self._hub.start()

    async def wait(self) -> None:
        """Return or raise when the connection loop or the outbox writer ends."""
        hub = asyncio.ensure_future(self._hub.wait())
        outbox = asyncio.ensure_future(self._outbox.wait())
        try:
            done, _ = await asyncio.wait({hub, outbox}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (hub, outbox):
                task.cancel()
        for task in done:
            task.result()

    async def stop(self) -> None:
        """Disconnect and close the outbox; unacknowledged messages stay in it for the next start."""
        self._running = False
        await self._hub.stop()
        await cancel_task(self._sender)
        self._sender = None
        await self._outbox.close()
        self._metrics.acks_pending.dec(self.unacknowledged)

    async def send(self, message: Message) -> None:
        """Hand ``message`` to the cloud: returns once it is in the outbox; delivered in order, once."""
        if not self._running:
            raise LinkClosedError("send a message to the cloud")
        await self._outbox.put(message)
        self._pending.append(message)
        self._metrics.acks_pending.inc()
        self._wake.set()

    # EdgeHubListener

    async def hub_connected(self) -> None:
        """Send what is unacknowledged again, then new messages; tell the handler."""
        await cancel_task(self._sender)
        unacknowledged = self._inflight.clear()
        self._metrics.resends.inc(len(unacknowledged))
        self._pending.extendleft(reversed(unacknowledged))
        self._sender = asyncio.create_task(self._deliver(), name="edgelink-sender")
        await self._tell(self._handler.connected)

    async def hub_disconnected(self) -> None:
        """Stop sending; tell the handler."""
        await cancel_task(self._sender)
        self._sender = None
        await self._tell(self._handler.disconnected)

    async def hub_received(self, message: Message) -> None:
        """An acknowledgement of the cloud, or a message for the handler."""
        if message.operation is Operation.RESPONSE and message.route.source == CLOUD_LINK_SOURCE:
            if self._inflight.pop(message.header.parent_msg_id) is not None:
                self._outbox.remove(message.header.parent_msg_id)
                self._metrics.acks_pending.dec()
                self._wake.set()
            return
        version = message.header.resource_version
        if version and not is_newer(version, self._applied.get(message.resource)):
            self._metrics.skipped.inc()
            await self._acknowledge(message)
            return
        try:
            await self._handler.received(message)
        except Exception:
            self._metrics.handler_errors.inc()
            log.exception(
                "cloud message not applied; not acknowledged",
                extra={"msg_id": message.msg_id, "resource": message.resource},
            )
            return
        if version:
            self._applied[message.resource] = version
            await self._outbox.record_applied(message.resource, version)
            await self._acknowledge(message)

    async def _acknowledge(self, message: Message) -> None:
        with contextlib.suppress(LinkError):  # gone: the cloud sends it again, and gets the ack then
            await self._hub.send(message.response(source=EDGE_LINK_SOURCE))

    async def _deliver(self) -> None:
        try:
            while True:
                self._wake.clear()
                while self._pending and len(self._inflight) < self._window:
                    message = self._pending.popleft()
                    self._inflight.add(message)
                    await self._hub.send(message)
                for message in await self._inflight.wait(self._wake):
                    self._metrics.resends.inc()
                    await self._hub.send(message)
        except LinkError:
            return  # the session is gone; hub_connected starts again with what is unacknowledged

    async def _tell(self, event: Callable[[], Awaitable[None]]) -> None:
        try:
            await event()
        except Exception:
            self._metrics.handler_errors.inc()
            log.exception("%s failed", getattr(event, "__name__", "handler"))

"""Reliable delivery on the cloud side: per-node queues over :class:`~cloudsync.cloudhub.CloudHub`.

Cloud → edge. :meth:`CloudLink.send` queues a message for its node and returns at once. A message carrying a
``resourceversion`` is an *object message*: it is sent (at most ``window`` unacknowledged per node), sent
again after ``ack_timeout`` and after every reconnect until the edge acknowledges it, and it is skipped when
its version is not newer than the one the node already acknowledged for the resource (an :class:`AckStore`
keeps those durably; they are loaded at start and cached). A newer version queued while an older one of the
same resource still waits unsent replaces it, at the newer one's place in the queue. A message without a
version is best effort: sent if the node is connected, dropped otherwise.

Edge → cloud. Every message is handed to :meth:`CloudLinkHandler.received` in the order of the session,
keepalives included. When the handler returns, the link acknowledges the message (a ``response`` from
``cloudhub`` with ``parent_msg_id``), unless it is a keepalive or itself an acknowledgement; if the handler
raises there is no acknowledgement and the edge sends the message again later. Message ids already handled
are remembered per node (the last ``dedup_window``), so a message the edge sends again after a lost
acknowledgement is acknowledged without being handled twice.

Acknowledgements are told apart by their source: a ``response`` whose ``route.source`` is ``edgehub`` (the
edge's link) acknowledges ``parent_msg_id``; responses from edge modules are ordinary messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry

from cloudsync.acks import CLOUD_LINK_SOURCE, EDGE_LINK_SOURCE, AckStore
from cloudsync.cloudhub import CloudHub, CloudHubSettings, HubSession
from cloudsync.errors import LinkError
from cloudsync.message import Message, Operation
from cloudsync.metrics import LinkMetrics
from cloudsync.tasks import cancel_task
from cloudsync.versions import is_newer
from cloudsync.window import InFlight

__all__ = ["CloudLink", "CloudLinkHandler"]

log = logging.getLogger(__name__)


class CloudLinkHandler(Protocol):
    """What cloudcore does with the link's events (node lifecycle, controllers)."""

    async def node_connected(self, node: str) -> None:
        """A node's session started (also after a reconnect)."""
        ...

    async def node_disconnected(self, node: str) -> None:
        """A node's session ended and no newer one replaced it."""
        ...

    async def received(self, node: str, message: Message) -> None:
        """One edge → cloud message, in order per node; raise to leave it unacknowledged."""
        ...


_Key = tuple[str, str]  # ("object", resource) or ("best-effort", msg_id)


@dataclass
class _NodeState:
    """What the link keeps per node across its sessions."""

    inflight: InFlight
    pending: OrderedDict[_Key, Message] = field(default_factory=OrderedDict)
    handled: OrderedDict[str, None] = field(default_factory=OrderedDict)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    session: HubSession | None = None
    sender: asyncio.Task[None] | None = None

    def unacked(self) -> int:
        return len(self.inflight) + sum(1 for kind, _ in self.pending if kind == "object")


class CloudLink:
    """CloudHub with reliable, ordered, resumable delivery; the supervised module cloudcore runs.

    ``registry`` receives the link's metrics (``cloudsync_*``; side ``cloud``). One CloudLink per registry:
    the ``acks_pending`` gauge reads this link.
    """

    name = "cloudhub"

    def __init__(
        self,
        handler: CloudLinkHandler,
        acks: AckStore,
        *,
        ssl_context: ssl.SSLContext,
        settings: CloudHubSettings | None = None,
        registry: CollectorRegistry | None = None,
        ack_timeout: float = 10.0,
        window: int = 64,
        dedup_window: int = 1024,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be at least 1, got {window}")
        self._handler = handler
        self._acks = acks
        self._ack_timeout = ack_timeout
        self._window = window
        self._dedup_window = dedup_window
        self._metrics = LinkMetrics(registry, "cloud")
        self._metrics.acks_pending.set_function(lambda: self.unacknowledged)
        self._hub = CloudHub(settings or CloudHubSettings(), ssl_context, self, metrics=self._metrics)
        self._nodes: dict[str, _NodeState] = {}
        self._acked: dict[tuple[str, str], str] = {}

    @property
    def hub(self) -> CloudHub:
        """The transport (its port, sessions, :meth:`CloudHub.disconnect`)."""
        return self._hub

    def connected_nodes(self) -> frozenset[str]:
        """The nodes with a live session."""
        return self._hub.connected_nodes()

    async def start(self) -> None:
        """Load the acknowledged versions, then listen."""
        self._acked = await self._acks.load()
        await self._hub.start()

    async def wait(self) -> None:
        """Return when the hub has stopped serving."""
        await self._hub.wait()

    async def stop(self) -> None:
        """Close every session and stop listening; queued messages stay queued for the next start."""
        await self._hub.stop()
        for state in self._nodes.values():
            await cancel_task(state.sender)
            state.sender = None

    async def send(self, node: str, message: Message) -> None:
        """Queue ``message`` for ``node`` and return at once; see the module docstring for the guarantees.

        A cloud-side resource ``node/<node>/<rest>`` goes on the wire as ``<rest>``.
        """
        prefix = f"node/{node}/"
        if message.resource.startswith(prefix):
            message = message.with_resource(message.resource.removeprefix(prefix))
        state = self._state(node)
        version = message.header.resource_version
        if not version:
            if state.session is None:
                self._metrics.dropped.inc()
                return
            state.pending["best-effort", message.msg_id] = message
        else:
            key = ("object", message.resource)
            queued = state.pending.get(key)
            if not is_newer(version, self._acked.get((node, message.resource))) or (
                queued is not None and not is_newer(version, queued.header.resource_version)
            ):
                self._metrics.skipped.inc()
                return
            state.pending.pop(key, None)
            state.pending[key] = message
        state.wake.set()

    async def forget_node(self, node: str) -> None:
        """Drop everything kept for ``node`` (a deleted node): queue, acknowledged versions, its session."""
        state = self._nodes.pop(node, None)
        if state is not None:
            await cancel_task(state.sender)
        for key in [key for key in self._acked if key[0] == node]:
            del self._acked[key]
        await self._acks.forget_node(node)
        await self._hub.disconnect(node, "node removed")

    # HubListener

    async def session_opened(self, session: HubSession) -> None:
        """Start delivering the node's queue on the new session, then tell the handler."""
        state = self._state(session.node)
        await cancel_task(state.sender)
        state.session = session
        state.sender = asyncio.create_task(self._deliver(state, session), name=f"cloudlink-{session.node}")
        self._metrics.connects.inc()
        await self._tell(self._handler.node_connected, session.node)

    async def session_closed(self, session: HubSession) -> None:
        """Stop delivering on the session; unless a newer session replaced it, tell the handler."""
        state = self._nodes.get(session.node)
        if state is None or state.session is not session:
            return
        await cancel_task(state.sender)
        state.sender, state.session = None, None
        best_effort = [key for key in state.pending if key[0] == "best-effort"]
        for key in best_effort:
            del state.pending[key]
        self._metrics.dropped.inc(len(best_effort))
        await self._tell(self._handler.node_disconnected, session.node)

    async def frame_received(self, session: HubSession, message: Message) -> None:
        """Handle one edge message: an acknowledgement, a keepalive, or a message for the handler."""
        node = session.node
        state = self._nodes.get(node)
        if state is None:
            return
        if message.operation is Operation.RESPONSE and message.route.source == EDGE_LINK_SOURCE:
            await self._acknowledged(node, state, message.header.parent_msg_id)
            return
        if message.operation is Operation.KEEPALIVE:
            self._metrics.keepalives.inc()
            await self._hand_over(node, message)
            return
        if message.msg_id in state.handled:
            self._metrics.duplicates.inc()
        elif not await self._hand_over(node, message):
            return
        else:
            state.handled[message.msg_id] = None
            if len(state.handled) > self._dedup_window:
                state.handled.popitem(last=False)
        with contextlib.suppress(LinkError):  # gone: the edge sends it again and gets the ack then
            await session.send(message.response(source=CLOUD_LINK_SOURCE))

    async def _hand_over(self, node: str, message: Message) -> bool:
        try:
            await self._handler.received(node, message)
        except Exception:
            self._metrics.handler_errors.inc()
            log.exception(
                "edge message not handled; not acknowledged",
                extra={"node": node, "msg_id": message.msg_id, "resource": message.resource},
            )
            return False
        return True

    async def _acknowledged(self, node: str, state: _NodeState, parent_msg_id: str) -> None:
        acked = state.inflight.pop(parent_msg_id)
        if acked is None:
            return  # a late answer to a message already acknowledged or superseded
        state.wake.set()
        resource, version = acked.resource, acked.header.resource_version
        if not is_newer(version, self._acked.get((node, resource))):
            return
        self._acked[node, resource] = version

        def superseded(message: Message) -> bool:
            return message.resource == resource and not is_newer(message.header.resource_version, version)

        state.inflight.discard(superseded)
        queued = state.pending.get(("object", resource))
        if queued is not None and superseded(queued):
            del state.pending["object", resource]
        try:
            await self._acks.record(node, resource, version)
        except Exception:
            # Kept in memory; after a restart the edge's own version check stops a second apply.
            log.exception(
                "acknowledged version not recorded",
                extra={"node": node, "resource": resource, "resource_version": version},
            )

    async def _deliver(self, state: _NodeState, session: HubSession) -> None:
        """Send the node's queue on ``session``: first what is unacknowledged, then new messages."""
        try:
            for message in state.inflight.messages():
                self._metrics.resends.inc()
                state.inflight.add(message)
                await session.send(message)
            while True:
                state.wake.clear()
                while state.pending and len(state.inflight) < self._window:
                    _, message = state.pending.popitem(last=False)
                    if message.header.resource_version:
                        state.inflight.add(message)
                    await session.send(message)
                for message in await state.inflight.wait(state.wake):
                    self._metrics.resends.inc()
                    await session.send(message)
        except LinkError:
            return  # the session is gone; what is in flight goes again on the next one

    async def _tell(self, event: Callable[[str], Awaitable[None]], node: str) -> None:
        try:
            await event(node)
        except Exception:
            self._metrics.handler_errors.inc()
            log.exception("%s failed", event.__name__, extra={"node": node})

    def _state(self, node: str) -> _NodeState:
        state = self._nodes.get(node)
        if state is None:
            state = self._nodes[node] = _NodeState(InFlight(self._ack_timeout))
        return state

    @property
    def unacknowledged(self) -> int:
        """Object messages queued or sent and not yet acknowledged, over all nodes."""
        return sum(state.unacked() for state in self._nodes.values())

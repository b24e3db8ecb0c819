"""EdgeHub: the edge end of the link, a websocket client that stays connected to CloudHub.

It connects to ``wss://<server>/<projectID>/<nodeName>/events`` with the headers ``node_id`` and
``project_id`` and a client certificate, sends a keepalive (operation ``keepalive``, resource ``node``,
source ``edgehub``) every ``heartbeat`` seconds, hands every incoming message to its
:class:`EdgeHubListener` in order, and reconnects with exponential backoff and jitter whenever the
connection fails or is lost. The TLS context comes from a factory called on every connect, so a rotated
certificate is used from the next connection on.

A refusal by the cloud (a certificate for another node, none at all) is logged, kept in :attr:`last_error`
as a :class:`~cloudsync.errors.LinkRefusedError` with the cloud's reason, and retried with backoff: a rotated
certificate may cure it. Websocket pings every ``heartbeat`` seconds notice a cloud that went away without
closing the connection.

The hub knows nothing of acknowledgements: :class:`~cloudsync.edgelink.EdgeLink` builds reliable delivery
on top of it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cloudsync.acks import EDGE_LINK_SOURCE
from cloudsync.dialer import dial, keep_connected
from cloudsync.errors import (
    LinkClosedError,
    LinkConnectionError,
    LinkError,
    MessageFormatError,
)
from cloudsync.message import MAX_FRAME, Group, Message, Operation, decode, encode
from cloudsync.metrics import LinkMetrics
from cloudsync.tasks import cancel_task
from eventbus import BackoffPolicy
from serving import host_of

__all__ = ["DEFAULT_PROJECT_ID", "EdgeHub", "EdgeHubListener", "EdgeHubSettings", "keepalive"]

log = logging.getLogger(__name__)

DEFAULT_PROJECT_ID = "e632aba927ea4ac2b575ec1603d56f10"
"""KubeEdge's default ``modules.edgeHub.projectID``."""


@dataclass(frozen=True)
class EdgeHubSettings:
    """Where and how the edge connects (seconds); KubeEdge's ``modules.edgeHub`` names and defaults."""

    server: str
    """CloudHub's ``host:port`` (``modules.edgeHub.websocket.server``)."""
    node_name: str
    project_id: str = DEFAULT_PROJECT_ID
    heartbeat: float = 15.0
    handshake_timeout: float = 30.0
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(minimum=1.0, maximum=30.0))
    close_timeout: float = 2.0

    @property
    def url(self) -> str:
        """The websocket URL of the node's session."""
        return f"wss://{self.server}/{self.project_id}/{self.node_name}/events"

    @property
    def host(self) -> str:
        """The server's host name, which its certificate must name."""
        return host_of(self.server)


def keepalive() -> Message:
    """The keepalive message the edge sends every ``heartbeat`` seconds."""
    return Message.new(
        source=EDGE_LINK_SOURCE, group=Group.RESOURCE, operation=Operation.KEEPALIVE, resource="node"
    )


class EdgeHubListener(Protocol):
    """What the hub tells about its connection; every ``hub_connected`` is followed by one disconnect."""

    async def hub_connected(self) -> None:
        """A connection is up: :meth:`EdgeHub.send` works until ``hub_disconnected``."""
        ...

    async def hub_received(self, message: Message) -> None:
        """One valid message from the cloud, in order."""
        ...

    async def hub_disconnected(self) -> None:
        """The connection is gone (the hub reconnects by itself)."""
        ...


class EdgeHub:
    """The websocket client; a supervised module (``start`` returns at once, the edge works offline)."""

    name = "edgehub"

    def __init__(
        self,
        settings: EdgeHubSettings,
        ssl_context: Callable[[], ssl.SSLContext],
        listener: EdgeHubListener,
        *,
        metrics: LinkMetrics,
    ) -> None:
        self.settings = settings
        self._ssl_context = ssl_context
        self._listener = listener
        self._metrics = metrics
        self._connection: ClientConnection | None = None
        self._runner: asyncio.Task[None] | None = None
        self.last_error: LinkError | None = None
        """Why the last connection attempt failed or the last session ended; ``None`` while connected."""

    @property
    def connected(self) -> bool:
        """True while a session with the cloud is up."""
        return self._connection is not None

    async def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"edgehub-{self.settings.node_name}")

    async def wait(self) -> None:
        """Return or raise if the connection loop ends (it only does on a bug)."""
        if self._runner is not None:
            # Shielded: whoever cancels this wait must not cancel the connection loop itself.
            await asyncio.shield(self._runner)

    async def stop(self) -> None:
        """Close the session and stop reconnecting; idempotent."""
        runner, self._runner = self._runner, None
        await cancel_task(runner)

    async def send(self, message: Message) -> None:
        """Send one message on the current session.

        Raises :class:`LinkClosedError` when not connected and :class:`LinkConnectionError` when the
        session breaks.
        """
        connection = self._connection
        if connection is None:
            raise LinkClosedError("send to the cloud while disconnected")
        try:
            await connection.send(encode(message))
        except ConnectionClosed as exc:
            raise LinkConnectionError(self.settings.url, f"session lost: {exc}") from exc
        self._metrics.sent.inc()

    async def _run(self) -> None:
        settings = self.settings
        await keep_connected(
            lambda: dial(
                settings.url,
                self._ssl_context,
                host=settings.host,
                headers={"node_id": settings.node_name, "project_id": settings.project_id},
                handshake_timeout=settings.handshake_timeout,
                ping_interval=settings.heartbeat,
                close_timeout=settings.close_timeout,
                max_size=MAX_FRAME + 64 * 1024,
            ),
            self._session,
            policy=settings.backoff,
            failed=self._failed,
            why=lambda: self.last_error,
            what="cloud link",
            extra={"node": settings.node_name, "url": settings.url},
        )

    def _failed(self, error: LinkError) -> None:
        self.last_error = error

    async def _session(self, connection: ClientConnection) -> None:
        self._connection = connection
        self.last_error = None
        self._metrics.connects.inc()
        log.info("connected to the cloud", extra={"node": self.settings.node_name, "url": self.settings.url})
        beats = asyncio.create_task(self._keepalives(connection), name="edgehub-keepalive")
        try:
            await self._listener.hub_connected()
            async for frame in connection:
                self._metrics.received.inc()
                try:
                    message = decode(frame)
                except MessageFormatError as exc:
                    self._metrics.frames_invalid.inc()
                    log.warning("invalid frame from the cloud dropped", extra={"reason": exc.reason})
                    continue
                try:
                    await self._listener.hub_received(message)
                except Exception:
                    # One message the edge fails on must not cut the link: the cloud sends it again.
                    log.exception("cloud message handling failed", extra={"msg_id": message.msg_id})
        except ConnectionClosed:
            pass  # reported below, from the connection's close code
        finally:
            self._connection = None
            await cancel_task(beats)
            await connection.close()
            self.last_error = LinkConnectionError(
                self.settings.url, f"session lost: code {connection.close_code} {connection.close_reason!r}"
            )
            await self._listener.hub_disconnected()

    async def _keepalives(self, connection: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat)
            try:
                await connection.send(encode(keepalive()))
            except ConnectionClosed:
                return
            self._metrics.sent.inc()
            self._metrics.keepalives.inc()

"""The edge end of the stream tunnel (KubeEdge's ``edgestream``): a websocket to cloudcore's tunnel port.

:class:`TunnelClient` keeps one connection to ``wss://<server>/v1/kubeedge/connect`` with the node
certificate, reconnecting with exponential backoff and jitter, like EdgeHub. Every session the cloud opens
runs as its own task in a :class:`TunnelHandler` (edgecore serves container logs and exec from the runtime),
which talks through a :class:`SessionChannel`: :meth:`~SessionChannel.accept` (or raise
:class:`~cloudsync.errors.StreamRejectedError` to refuse), :meth:`~SessionChannel.send`,
:meth:`~SessionChannel.receive`. A ``CLOSE`` from the cloud cancels the session's task; a lost tunnel
cancels them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from cloudsync.dialer import dial, keep_connected
from cloudsync.errors import LinkError, StreamRejectedError, TunnelFrameError, TunnelUnavailableError
from cloudsync.tasks import cancel_task
from cloudsync.tunnel import (
    TUNNEL_PATH,
    ExecRequest,
    Frame,
    FrameType,
    LogsRequest,
    Rejection,
    decode_frame,
    encode_frame,
    read_request,
)
from eventbus import BackoffPolicy
from serving import host_of

__all__ = ["SessionChannel", "TunnelClient", "TunnelClientSettings", "TunnelHandler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TunnelClientSettings:
    """Where and how the edge connects (seconds); KubeEdge's ``modules.edgeStream`` names."""

    server: str
    """The tunnel's ``host:port`` (``modules.edgeStream.server``)."""
    node_name: str
    handshake_timeout: float = 30.0
    ping_interval: float = 15.0
    """Websocket pings notice a cloud that went away without closing (``readDeadline``)."""
    backoff: BackoffPolicy = field(default_factory=lambda: BackoffPolicy(minimum=1.0, maximum=30.0))

    @property
    def url(self) -> str:
        """The tunnel's websocket URL."""
        return f"wss://{self.server}{TUNNEL_PATH}"

    @property
    def host(self) -> str:
        """The server's host name, which its certificate must name."""
        return host_of(self.server)


class SessionChannel:
    """The edge's end of one session: accept it, then send data and read what the cloud sends."""

    def __init__(self, session: int, connection: ClientConnection, node: str) -> None:
        self.session = session
        self._connection = connection
        self._node = node
        self._incoming: asyncio.Queue[bytes] = asyncio.Queue()
        self.accepted = False

    async def accept(self) -> None:
        """Tell the cloud the session runs (data may follow)."""
        if not self.accepted:
            await self._send(Frame(self.session, FrameType.ACCEPTED))
            self.accepted = True

    async def send(self, data: bytes) -> None:
        """Send data to the cloud (accepting the session first if needed)."""
        await self.accept()
        await self._send(Frame(self.session, FrameType.DATA, data))

    async def receive(self) -> bytes:
        """The next data the cloud sent (exec: a channel byte then stdin bytes); waits for it."""
        return await self._incoming.get()

    def deliver(self, data: bytes) -> None:
        """Queue data from the cloud (called by the client's reader)."""
        self._incoming.put_nowait(data)

    async def reject(self, code: int, reason: str) -> None:
        """Refuse the session (once accepted, it can only end: :meth:`finish`)."""
        if self.accepted:
            await self.finish()
            return
        answer = Rejection(code=code, reason=reason).model_dump_json().encode()
        with contextlib.suppress(TunnelUnavailableError):
            await self._send(Frame(self.session, FrameType.REJECTED, answer))

    async def finish(self) -> None:
        """End the session: everything was sent."""
        with contextlib.suppress(TunnelUnavailableError):
            await self.accept()
            await self._send(Frame(self.session, FrameType.CLOSE))

    async def _send(self, frame: Frame) -> None:
        try:
            await self._connection.send(encode_frame(frame))
        except ConnectionClosed as exc:
            raise TunnelUnavailableError(self._node, f"tunnel lost: {exc}") from exc


class TunnelHandler(Protocol):
    """What serves the sessions the cloud opens."""

    async def serve(self, request: LogsRequest | ExecRequest, channel: SessionChannel) -> None:
        """Serve one session: raise :class:`StreamRejectedError` before accepting to refuse it.

        Returning ends the session (the cloud gets ``CLOSE``); a cancellation means the cloud closed it.
        """
        ...


class TunnelClient:
    """The tunnel's websocket client; a supervised module (``start`` returns at once)."""

    name = "edgestream"

    def __init__(
        self,
        settings: TunnelClientSettings,
        ssl_context: Callable[[], ssl.SSLContext],
        handler: TunnelHandler,
        *,
        registry: CollectorRegistry,
    ) -> None:
        self.settings = settings
        self._ssl_context = ssl_context
        self._handler = handler
        self._runner: asyncio.Task[None] | None = None
        self._connected = False
        self.last_error: str | None = None
        """Why the last connection attempt failed or the tunnel was lost; ``None`` while connected."""
        self._sessions = Counter(
            "edgetwin_edgestream_sessions",
            "Logs / exec sessions the cloud opened on this edge, by outcome (served, rejected, failed)",
            ["outcome"],
            registry=registry,
        )
        self._up = Gauge(
            "edgetwin_edgestream_connected", "1 while the stream tunnel is up", registry=registry
        )

    @property
    def connected(self) -> bool:
        """True while the tunnel is up."""
        return self._connected

    async def start(self) -> None:
        """Start connecting (and reconnecting) in the background."""
        if self._runner is None or self._runner.done():
            self._runner = asyncio.create_task(self._run(), name=f"edgestream-{self.settings.node_name}")

    async def wait(self) -> None:
        """Return or raise if the connection loop ends (it only does on a bug)."""
        if self._runner is not None:
            await asyncio.shield(self._runner)

    async def stop(self) -> None:
        """Close the tunnel (its sessions end) and stop reconnecting; idempotent."""
        runner, self._runner = self._runner, None
        await cancel_task(runner)

    async def _run(self) -> None:
        settings = self.settings
        await keep_connected(
            lambda: dial(
                settings.url,
                self._ssl_context,
                host=settings.host,
                handshake_timeout=settings.handshake_timeout,
                ping_interval=settings.ping_interval,
                close_timeout=2.0,
            ),
            self._session,
            policy=settings.backoff,
            failed=self._failed,
            why=lambda: self.last_error,
            what="stream tunnel",
            extra={"node": settings.node_name, "url": settings.url},
        )

    def _failed(self, error: LinkError) -> None:
        self.last_error = str(error)

    async def _session(self, connection: ClientConnection) -> None:
        self._connected = True
        self._up.set(1)
        self.last_error = None
        log.info("stream tunnel open", extra={"node": self.settings.node_name, "url": self.settings.url})
        sessions: dict[int, tuple[SessionChannel, asyncio.Task[None]]] = {}
        try:
            async for message in connection:
                try:
                    frame = decode_frame(message)
                except TunnelFrameError as exc:
                    log.warning("invalid tunnel frame dropped", extra={"reason": exc.reason})
                    continue
                self._dispatch(connection, frame, sessions)
        except ConnectionClosed:
            pass
        finally:
            self._connected = False
            self._up.set(0)
            for _, task in list(sessions.values()):
                await cancel_task(task)
            await connection.close()
            self.last_error = f"tunnel lost: code {connection.close_code} {connection.close_reason!r}"

    def _dispatch(
        self,
        connection: ClientConnection,
        frame: Frame,
        sessions: dict[int, tuple[SessionChannel, asyncio.Task[None]]],
    ) -> None:
        if frame.type in (FrameType.LOGS, FrameType.EXEC):
            channel = SessionChannel(frame.session, connection, self.settings.node_name)
            task = asyncio.create_task(self._serve(channel, frame), name=f"edgestream-{frame.session}")
            sessions[frame.session] = (channel, task)
            task.add_done_callback(lambda _: sessions.pop(frame.session, None))
            return
        entry = sessions.get(frame.session)
        if entry is None:
            return  # the session ended meanwhile
        channel, task = entry
        if frame.type is FrameType.DATA:
            channel.deliver(frame.payload)
        elif frame.type is FrameType.CLOSE:
            task.cancel()

    async def _serve(self, channel: SessionChannel, frame: Frame) -> None:
        outcome = "served"
        try:
            request = read_request(frame)
            await self._handler.serve(request, channel)
        except (StreamRejectedError, TunnelFrameError) as exc:
            outcome = "rejected"
            code = exc.code if isinstance(exc, StreamRejectedError) else 400
            log.info("stream session refused", extra={"session": channel.session, "reason": exc.reason})
            await channel.reject(code, exc.reason)
        except TunnelUnavailableError:
            outcome = "failed"  # the tunnel is gone: nobody to tell
        except Exception:
            outcome = "failed"
            log.exception("stream session failed", extra={"session": channel.session})
            await channel.reject(500, "the edge failed to serve the request")
        else:
            await channel.finish()
        finally:
            self._sessions.labels(outcome=outcome).inc()

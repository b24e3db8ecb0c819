"""The cloud end of the stream tunnel: edge nodes connect here (10004), cloudcore opens sessions on them.

Each edge keeps one websocket to ``wss://<cloud>:10004/v1/kubeedge/connect``, authenticated by its node
certificate (mutual TLS, the cluster CA; the node is the certificate's ``CN=system:node:<node>``, as for
CloudHub). A newer tunnel of a node replaces the older one. :meth:`TunnelServer.open` starts a logs or exec
session on a node's tunnel and returns once the edge accepted it (see :mod:`cloudsync.tunnel` for the
frames). A session's incoming data waits in a bounded queue: a client that does not read fast enough loses
its session rather than stalling the other sessions of the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import ssl
from http import HTTPStatus

from prometheus_client import CollectorRegistry, Counter, Gauge
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cloudsync.errors import (
    CertificateError,
    StreamRejectedError,
    TunnelFrameError,
    TunnelServeError,
    TunnelUnavailableError,
)
from cloudsync.pki import load_certificate, node_name_of
from cloudsync.tunnel import (
    TUNNEL_PATH,
    ExecRequest,
    Frame,
    FrameType,
    LogsRequest,
    Rejection,
    decode_frame,
    encode_frame,
)
from serving import join_host_port

__all__ = ["TunnelServer", "TunnelSession"]

log = logging.getLogger(__name__)

_END = None  # queued after a session's last data


class TunnelSession:
    """One logs / exec session on a node's tunnel, seen from the cloud (see :meth:`TunnelServer.open`)."""

    def __init__(self, tunnel: _Tunnel, session_id: int, queue_size: int) -> None:
        self.node = tunnel.node
        self.id = session_id
        self._tunnel = tunnel
        self._incoming: asyncio.Queue[bytes | None] = asyncio.Queue(queue_size)
        self._answer: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._closed = False

    async def receive(self) -> bytes | None:
        """The next data from the edge; ``None`` once the session is over (ended by the edge, or lost)."""
        if self._closed and self._incoming.empty():
            return None
        return await self._incoming.get()

    async def send(self, data: bytes) -> None:
        """Send data to the edge (exec: a channel byte then stdin bytes); dropped once the session is over."""
        if not self._closed:
            await self._tunnel.send(Frame(self.id, FrameType.DATA, data))

    async def close(self) -> None:
        """End the session (the client went away, or it is complete); idempotent."""
        if self._closed:
            return
        self.abort(StreamRejectedError(499, "the session was closed by the cloud"))
        with contextlib.suppress(TunnelUnavailableError):
            await self._tunnel.send(Frame(self.id, FrameType.CLOSE))

    # -- driven by the server, from the tunnel's frames --------------------------------------------------

    async def answered(self) -> None:
        """Return once the edge accepted the session; raise why it did not."""
        await asyncio.shield(self._answer)

    def deliver(self, frame: Frame) -> bool:
        """Take one frame of the edge; False when the data queue is full (the caller ends the session)."""
        if frame.type is FrameType.ACCEPTED:
            if not self._answer.done():
                self._answer.set_result(None)
        elif frame.type is FrameType.REJECTED:
            self.abort(_rejection(frame.payload))
        elif frame.type is FrameType.CLOSE:
            self.abort(StreamRejectedError(502, "the edge ended the session without answering"))
        elif not self._closed:  # DATA
            try:
                self._incoming.put_nowait(frame.payload)
            except asyncio.QueueFull:
                return False
        return True

    def abort(self, error: Exception) -> None:
        """End the session on this side; ``error`` is raised by :meth:`answered` if it was still waiting."""
        if not self._answer.done():
            self._answer.set_exception(error)
            self._answer.exception()  # retrieved: nobody may wait for it any more
        if not self._closed:
            self._closed = True
            self._tunnel.sessions.pop(self.id, None)
            with contextlib.suppress(asyncio.QueueFull):  # a full queue ends in receive() once drained
                self._incoming.put_nowait(_END)


class _Tunnel:
    """The live tunnel of one node."""

    def __init__(self, node: str, connection: ServerConnection) -> None:
        self.node = node
        self.connection = connection
        self.sessions: dict[int, TunnelSession] = {}
        self.ids = itertools.count(1)

    async def send(self, frame: Frame) -> None:
        try:
            await self.connection.send(encode_frame(frame))
        except ConnectionClosed as exc:
            raise TunnelUnavailableError(self.node, f"tunnel lost: {exc}") from exc


class TunnelServer:
    """The tunnel's websocket server; a supervised module (``start`` returns once it listens).

    ``ssl_context`` must require client certificates of the cluster CA (see
    :func:`cloudsync.server_ssl_context`). ``accept_timeout``: seconds the edge has to accept or refuse a
    session; ``queue_size``: data frames a session may have waiting for its client.
    """

    name = "tunnelserver"

    def __init__(
        self,
        host: str,
        port: int,
        ssl_context: ssl.SSLContext,
        *,
        registry: CollectorRegistry,
        handshake_timeout: float = 30.0,
        accept_timeout: float = 10.0,
        queue_size: int = 1024,
        ping_interval: float = 20.0,
    ) -> None:
        self._host = host
        self._requested_port = port
        self._ssl = ssl_context
        self._handshake_timeout = handshake_timeout
        self._accept_timeout = accept_timeout
        self._queue_size = queue_size
        self._ping_interval = ping_interval
        self._server: Server | None = None
        self._tunnels: dict[str, _Tunnel] = {}
        self._connected = Gauge(
            "edgetwin_stream_tunnels", "Edge nodes with a stream tunnel open", registry=registry
        )
        self._refused = Counter(
            "edgetwin_stream_tunnel_refusals",
            "Tunnel connections refused, by reason",
            ["reason"],
            registry=registry,
        )
        self._dropped = Counter(
            "edgetwin_stream_frames_dropped",
            "Tunnel frames dropped, by reason (invalid, unknown session, client too slow)",
            ["reason"],
            registry=registry,
        )

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose when configured as 0)."""
        if self._server is None:
            raise TunnelServeError(f"{self._host}:{self._requested_port}", "the server is not started")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def connected_nodes(self) -> frozenset[str]:
        """The nodes with a tunnel open."""
        return frozenset(self._tunnels)

    async def start(self) -> None:
        """Listen; raises :class:`TunnelServeError` when the address cannot be bound."""
        try:
            self._server = await serve(
                self._serve,
                self._host,
                self._requested_port,
                ssl=self._ssl,
                process_request=self._check,
                compression=None,
                ping_interval=self._ping_interval,
                ping_timeout=self._ping_interval,
                open_timeout=self._handshake_timeout,
                close_timeout=2.0,
            )
        except OSError as exc:
            address = join_host_port(self._host, self._requested_port)
            raise TunnelServeError(address, exc.strerror or str(exc)) from exc
        log.info("stream tunnel listening", extra={"host": self._host, "port": self.port})

    async def wait(self) -> None:
        """Return when the server has closed."""
        if self._server is not None:
            await self._server.wait_closed()

    async def stop(self) -> None:
        """Close every tunnel (their sessions end) and stop listening; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()

    async def open(self, node: str, request: LogsRequest | ExecRequest) -> TunnelSession:
        """Start a session on ``node``'s tunnel; return it once the edge accepted it.

        Raises :class:`TunnelUnavailableError` when the node has no tunnel (or it breaks, or the edge does
        not answer within ``accept_timeout``) and :class:`StreamRejectedError` when the edge refuses.
        """
        tunnel = self._tunnels.get(node)
        if tunnel is None:
            raise TunnelUnavailableError(node, "the node is not connected (is modules.edgeStream enabled?)")
        session = TunnelSession(tunnel, next(tunnel.ids), self._queue_size)
        tunnel.sessions[session.id] = session
        kind = FrameType.LOGS if isinstance(request, LogsRequest) else FrameType.EXEC
        try:
            await tunnel.send(Frame(session.id, kind, request.model_dump_json(by_alias=True).encode()))
            async with asyncio.timeout(self._accept_timeout):
                await session.answered()
        except TimeoutError as exc:
            await session.close()
            raise TunnelUnavailableError(node, f"no answer within {self._accept_timeout:g}s") from exc
        except BaseException:
            await session.close()
            raise
        return session

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse a handshake on another path, or whose certificate is not a node's."""
        if request.path.partition("?")[0] != TUNNEL_PATH:
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "path", f"the path must be {TUNNEL_PATH}")
        try:
            _certified_node(connection)
        except CertificateError as exc:
            return self._refuse(connection, HTTPStatus.FORBIDDEN, "not_a_node_certificate", str(exc))
        return None

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, reason: str, text: str) -> Response:
        self._refused.labels(reason=reason).inc()
        log.warning("stream tunnel refused a connection: %s", text, extra={"reason": reason})
        return connection.respond(status, text + "\n")

    async def _serve(self, connection: ServerConnection) -> None:
        node = _certified_node(connection)  # _check let only node certificates through
        tunnel = _Tunnel(node, connection)
        previous = self._tunnels.get(node)
        self._tunnels[node] = tunnel
        self._connected.set(len(self._tunnels))
        if previous is not None:
            await previous.connection.close(reason="replaced by a newer tunnel of the node")
        log.info("stream tunnel open", extra={"node": node})
        try:
            async for message in connection:
                await self._dispatch(tunnel, message)
        except ConnectionClosed:
            pass
        finally:
            if self._tunnels.get(node) is tunnel:
                del self._tunnels[node]
                self._connected.set(len(self._tunnels))
            lost = TunnelUnavailableError(node, "tunnel closed")
            for session in list(tunnel.sessions.values()):
                session.abort(lost)
            log.info("stream tunnel closed", extra={"node": node, "code": connection.close_code})

    async def _dispatch(self, tunnel: _Tunnel, message: bytes | str) -> None:
        try:
            frame = decode_frame(message)
        except TunnelFrameError as exc:
            self._dropped.labels(reason="invalid").inc()
            log.warning("invalid tunnel frame dropped", extra={"node": tunnel.node, "reason": exc.reason})
            return
        session = tunnel.sessions.get(frame.session)
        if session is None:
            self._dropped.labels(reason="unknown_session").inc()  # the session ended meanwhile
            return
        if not session.deliver(frame):
            self._dropped.labels(reason="slow_client").inc()
            log.warning(
                "stream client too slow: session ended", extra={"node": tunnel.node, "session": session.id}
            )
            await session.close()


def _certified_node(connection: ServerConnection) -> str:
    """The node named by the peer's certificate; raises :class:`CertificateError` for anything else."""
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        raise CertificateError("no client certificate")
    return node_name_of(load_certificate(der, "client certificate"))


def _rejection(payload: bytes) -> StreamRejectedError:
    try:
        rejection = Rejection.model_validate_json(payload)
    except ValueError:
        return StreamRejectedError(502, "the edge refused the session with an unreadable answer")
    return StreamRejectedError(rejection.code, rejection.reason)

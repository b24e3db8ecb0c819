"""CloudHub: the cloud end of the link, a websocket server over mutual TLS (CONTRACTS.md §3).

Edge nodes connect to ``wss://<host>:10000/<projectID>/<nodeName>/events`` with the headers ``node_id`` and
``project_id``, presenting the client certificate the cloud's CA issued them (``CN=system:node:<node>``).
The server's TLS context verifies a presented certificate against the CA but lets a connection without one
through the TLS handshake (``CERT_OPTIONAL``), so that the HTTP handshake can refuse it with a status and a
sentence a person can act on: 401 without a certificate, 403 when the certificate names another node than
the URL, 400 when the URL and the headers disagree. A certificate of another CA fails the TLS handshake.

One session per node: a new connection of a node replaces the old one, which is closed. A session silent for
``keepalive_timeout`` seconds (no frame at all, keepalives included) is dropped. Frames of a session are
decoded and handed to the :class:`HubListener` one after the other, so a node's messages keep their order; a
frame that is not a valid message is logged, counted and dropped, and the session goes on.

The hub knows nothing of acknowledgements: :class:`~cloudsync.cloudlink.CloudLink` builds reliable delivery
on top of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol
from urllib.parse import urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from cloudsync.errors import CertificateError, HubServeError, LinkConnectionError, MessageFormatError
from cloudsync.message import MAX_FRAME, Message, decode, encode
from cloudsync.metrics import LinkMetrics
from cloudsync.pki import load_certificate, node_name_of
from serving import join_host_port

__all__ = ["CloudHub", "CloudHubSettings", "HubListener", "HubSession"]

log = logging.getLogger(__name__)

# websockets' own frame limit sits above the codec's, so that an oversized message reaches decode() and is
# dropped with a reason rather than ending the session with "message too big".
_WS_MAX_SIZE = MAX_FRAME + 64 * 1024


@dataclass(frozen=True)
class CloudHubSettings:
    """Where CloudHub listens and how long it waits (seconds); KubeEdge's defaults."""

    host: str = "0.0.0.0"
    """All interfaces by default: edge nodes connect from other machines."""
    port: int = 10000
    keepalive_timeout: float = 30.0
    """A session with no frame for this long is dropped (the edge sends a keepalive every ``heartbeat``)."""
    handshake_timeout: float = 30.0
    """TLS plus HTTP upgrade must complete within this."""
    close_timeout: float = 2.0
    """How long a closing handshake may take before the connection is cut."""


class HubSession:
    """The live connection of one edge node."""

    def __init__(self, node: str, connection: ServerConnection, metrics: LinkMetrics) -> None:
        self.node = node
        self._connection = connection
        self._metrics = metrics
        self.peer = _peer(connection)

    @property
    def closed(self) -> bool:
        """True once the connection is closing or closed."""
        return self._connection.close_code is not None

    async def send(self, message: Message) -> None:
        """Send one message; raises :class:`LinkConnectionError` when the connection is gone."""
        try:
            await self._connection.send(encode(message))
        except ConnectionClosed as exc:
            raise LinkConnectionError(self.peer, f"session of node {self.node} closed: {exc}") from exc
        self._metrics.sent.inc()

    async def close(self, reason: str) -> None:
        """Close the session (a normal closure carrying ``reason``)."""
        await self._connection.close(reason=reason)


class HubListener(Protocol):
    """What the hub tells about sessions; every opened session is closed exactly once."""

    async def session_opened(self, session: HubSession) -> None:
        """A node connected (a session it had before was replaced and will be reported closed)."""
        ...

    async def frame_received(self, session: HubSession, message: Message) -> None:
        """One valid message of the session, in the order the node sent it."""
        ...

    async def session_closed(self, session: HubSession) -> None:
        """The session ended (closed by the node, dropped for silence, replaced, or the hub stopped)."""
        ...


class CloudHub:
    """The websocket server; a supervised module (``start`` returns once it listens)."""

    name = "cloudhub"

    def __init__(
        self,
        settings: CloudHubSettings,
        ssl_context: ssl.SSLContext,
        listener: HubListener,
        *,
        metrics: LinkMetrics,
    ) -> None:
        self.settings = settings
        self._ssl = ssl_context
        self._listener = listener
        self._metrics = metrics
        self._server: Server | None = None
        self._sessions: dict[str, HubSession] = {}
        self._closing: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The port the hub listens on (the one chosen by the OS when configured as 0)."""
        if self._server is None:
            raise RuntimeError("CloudHub.port read before start()")
        return int(next(iter(self._server.sockets)).getsockname()[1])

    def connected_nodes(self) -> frozenset[str]:
        """The nodes with a live session."""
        return frozenset(self._sessions)

    def session(self, node: str) -> HubSession | None:
        """The live session of ``node``, if it has one."""
        return self._sessions.get(node)

    async def start(self) -> None:
        """Listen; raises :class:`HubServeError` when the address cannot be bound."""
        settings = self.settings
        try:
            self._server = await serve(
                self._serve,
                settings.host,
                settings.port,
                ssl=self._ssl,
                process_request=self._check,
                # The edge's keepalives show a session is alive; websocket pings from the server would only
                # add a frame per node and interval.
                ping_interval=None,
                # permessage-deflate keeps two zlib streams per connection (100s of kB): too much per node.
                compression=None,
                max_size=_WS_MAX_SIZE,
                open_timeout=settings.handshake_timeout,
                close_timeout=settings.close_timeout,
            )
        except OSError as exc:
            raise HubServeError(
                join_host_port(settings.host, settings.port), exc.strerror or str(exc)
            ) from exc
        log.info("CloudHub listening", extra={"host": settings.host, "port": self.port})

    async def wait(self) -> None:
        """Return when the server has closed."""
        if self._server is not None:
            await self._server.wait_closed()

    async def stop(self) -> None:
        """Close every session (each is reported closed) and stop listening; idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
            await server.wait_closed()
        closing, self._closing = self._closing, set()
        for task in closing:
            with contextlib.suppress(Exception):
                await task

    async def disconnect(self, node: str, reason: str = "disconnected by the cloud") -> None:
        """Close the session of ``node`` if it has one (the node will reconnect)."""
        session = self._sessions.get(node)
        if session is not None:
            await session.close(reason)

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse, with a clear status and reason, a handshake whose node is not the certificate's."""
        refusal = _refusal(connection, request)
        if refusal is None:
            return None
        status, reason, text = refusal
        self._metrics.refused(reason)
        log.warning(
            "CloudHub refused a connection: %s",
            text,
            extra={"peer": _peer(connection), "path": request.path, "status": status.value, "reason": reason},
        )
        return connection.respond(status, text + "\n")

    async def _serve(self, connection: ServerConnection) -> None:
        node = _path_node(connection.request.path if connection.request else "")
        if node is None:  # _check let only well-formed paths through
            return
        session = HubSession(node, connection, self._metrics)
        previous = self._sessions.get(node)
        self._sessions[node] = session
        self._metrics.connected_nodes.set(len(self._sessions))
        if previous is not None:
            log.info("node reconnected: the older session is closed", extra={"node": node})
            task = asyncio.create_task(previous.close("replaced by a newer connection of the node"))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)
        log.info("node connected", extra={"node": node, "peer": session.peer})
        try:
            await self._listener.session_opened(session)
            await self._read(session, connection)
        finally:
            if self._sessions.get(node) is session:
                del self._sessions[node]
                self._metrics.connected_nodes.set(len(self._sessions))
            log.info(
                "node disconnected",
                extra={"node": node, "code": connection.close_code, "close_reason": connection.close_reason},
            )
            await self._listener.session_closed(session)

    async def _read(self, session: HubSession, connection: ServerConnection) -> None:
        timeout = self.settings.keepalive_timeout
        while True:
            try:
                async with asyncio.timeout(timeout):
                    frame = await connection.recv()
            except TimeoutError:
                log.warning(
                    "node silent: session dropped", extra={"node": session.node, "timeout_s": timeout}
                )
                await session.close(f"no keepalive for {timeout:g}s")
                return
            except ConnectionClosed:
                return
            self._metrics.received.inc()
            try:
                message = decode(frame)
            except MessageFormatError as exc:
                self._metrics.frames_invalid.inc()
                # The reason names the wrong field, never the content: frames may carry Secrets.
                log.warning(
                    "invalid frame dropped",
                    extra={"node": session.node, "reason": exc.reason, "bytes": len(frame)},
                )
                continue
            try:
                await self._listener.frame_received(session, message)
            except Exception:
                # A listener bug on one message must not cut the node off: the next frames still count.
                log.exception(
                    "message handling failed", extra={"node": session.node, "msg_id": message.msg_id}
                )


def _path_node(path: str) -> str | None:
    parts = urlsplit(path).path.split("/")
    if len(parts) != 4 or parts[0] or not parts[1] or not parts[2] or parts[3] != "events":
        return None
    return parts[2]


def _refusal(connection: ServerConnection, request: Request) -> tuple[HTTPStatus, str, str] | None:
    """``(status, reason label, sentence)`` when the handshake must be refused, else ``None``."""
    node = _path_node(request.path)
    if node is None:
        return HTTPStatus.NOT_FOUND, "path", "the path must be /<projectID>/<nodeName>/events"
    project = urlsplit(request.path).path.split("/")[1]
    mismatch = _header_mismatch(request.headers, node=node, project=project)
    if mismatch is not None:
        return HTTPStatus.BAD_REQUEST, "headers", mismatch
    ssl_object = connection.transport.get_extra_info("ssl_object")
    der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
    if not der:
        return HTTPStatus.UNAUTHORIZED, "no_certificate", "client certificate required"
    try:
        certified = node_name_of(load_certificate(der, "client certificate"))
    except CertificateError as exc:
        return HTTPStatus.FORBIDDEN, "not_a_node_certificate", f"client certificate refused: {exc}"
    if certified != node:
        return HTTPStatus.FORBIDDEN, "wrong_node", f"certificate is for node {certified}, not {node}"
    return None


def _header_mismatch(headers: Headers, *, node: str, project: str) -> str | None:
    for header, expected in (("node_id", node), ("project_id", project)):
        value = headers.get(header)
        if value is None:
            return f"header {header} is missing"
        if value != expected:
            return f"header {header}={value!r} does not match the URL's {expected!r}"
    return None


def _peer(connection: ServerConnection) -> str:
    address = connection.remote_address
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)

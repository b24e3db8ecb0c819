"""The async MQTT client of the edge and of the mappers: MQTT 3.1.1 on an asyncio transport.

Why not paho-mqtt or aiomqtt: the edge needs ``publish_nowait`` — hand a message to the connection
synchronously, in call order, and get a future that completes at PUBACK — while aiomqtt's ``publish`` is one
coroutine per message (a task per message to fire and forget, and no ordering between tasks). Driving paho
from the loop did that, but its per-packet work (three ``recv`` calls, a ``send`` per packet, reason-code and
property objects per acknowledgement, locks) took about half of edgecore's CPU per twin update. Here the
packets are encoded and decoded by :mod:`eventbus.packets`, with no task per message:

* one :class:`asyncio.Protocol` per connection (TCP or TLS through the loop's own transports); the packets
  written during one loop iteration leave in one ``send`` (write coalescing);
* a supervisor that reconnects with jittered exponential backoff, re-subscribes what the broker's session
  lacks, re-sends the unacknowledged messages in order (DUP set) and then what was published meanwhile;
* one future per message id, completed at PUBACK (QoS 1) or PUBCOMP (QoS 2), and a bounded window of
  unacknowledged messages: :meth:`MqttClient.publish` waits while it is full.

The protocol is MQTT 3.1.1, as KubeEdge's mappers and apps speak it, with ``clean_session=False``: after a
drop the broker resumes the session (subscriptions, QoS 1 messages queued for us), and after a broker restart
without persistence the client re-subscribes by itself. A client without an explicit ``client_id`` ends its
session when stopped (it reconnects once with ``clean_session=True``); one that dies without :meth:`stop`
leaves its session to the broker (MQTT 3.1.1 sessions do not expire by themselves: mosquitto's
``persistent_client_expiration`` bounds them).
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self, cast

from prometheus_client import CollectorRegistry

from eventbus.backoff import Backoff, BackoffPolicy
from eventbus.errors import (
    EventBusClosedError,
    EventBusConnectionError,
    EventBusPublishError,
    EventBusSubscribeError,
)
from eventbus.metrics import ClientMetrics
from eventbus.packets import (
    DISCONNECT,
    PINGREQ,
    SUBACK_FAILURE,
    MalformedPacketError,
    Packet,
    PacketReader,
    PacketType,
    decode_connack,
    decode_mid,
    decode_publish,
    decode_suback,
    encode_ack,
    encode_connect,
    encode_publish,
    encode_subscribe,
    encode_unsubscribe,
)
from eventbus.settings import BrokerSettings

__all__ = ["MqttClient", "MqttMessage"]

log = logging.getLogger(__name__)

_MAX_PAYLOAD = 268_435_455
# CONNACK return codes (§3.2.2.3) no retry can fix: protocol level, client id, credentials, authorisation.
_CONNACK_REASONS = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}
_PERMANENT_CONNACK = frozenset({1, 2, 4, 5})
_AUTH_CONNACK = frozenset({4, 5})
_CONNECT_TIMEOUT = 10.0
# Packet ids are 16 bits: a window this size leaves some for SUBSCRIBE / UNSUBSCRIBE.
_MAX_WINDOW = 65_000
_SHUTDOWN_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """A received (or to be published) MQTT message."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


@dataclass(slots=True)
class _Outgoing:
    topic: str
    encoded_topic: bytes
    payload: bytes
    qos: int
    retain: bool
    future: asyncio.Future[None]
    #: QoS 2: PUBREC received, PUBREL sent (a reconnect re-sends the PUBREL, not the message).
    released: bool = False


class _ConnectionLost(Exception):
    """Internal: the connection dropped while a SUBACK / UNSUBACK was awaited (the request is retried)."""


class _AttemptFailed(Exception):
    """Internal: one connection attempt failed; ``permanent`` ones are not worth retrying at start."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _Connection(asyncio.Protocol):
    """One transport: hands each received packet to ``on_packet`` and coalesces what is sent.

    Packets sent during one loop iteration are written together by a flush scheduled with ``call_soon``:
    one ``send`` for a burst of PUBACKs and replies instead of one per packet.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        on_packet: Callable[[_Connection, Packet], None],
        on_lost: Callable[[_Connection, str], None],
    ) -> None:
        self._loop = loop
        self._on_packet = on_packet
        self._on_lost = on_lost
        self._reader = PacketReader()
        self._transport: asyncio.Transport | None = None
        self._out: list[bytes] = []
        self._flush_scheduled = False
        # QoS 0 publishes complete once written (they have no acknowledgement): (future, topic).
        self._written: list[tuple[asyncio.Future[None], str]] = []
        self._abort_reason: str | None = None
        self.last_out = loop.time()
        self.closed: asyncio.Future[str] = loop.create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (create_connection makes a stream transport: TCP or TLS)."""
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        """Decode what arrived and hand over each complete packet, in order."""
        try:
            packets = self._reader.feed(data)
        except MalformedPacketError as exc:
            self.abort(f"malformed packet from the broker: {exc}")
            return
        for packet in packets:
            if self.closed.done():
                return
            self._on_packet(self, packet)
        # The acknowledgements of what arrived leave now rather than behind the work queued on the loop:
        # the broker holds back further messages while 20 of ours (mosquitto's default) are unacknowledged.
        self.flush()

    def eof_received(self) -> bool:
        """The broker closed its side: close ours too."""
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        """Fail what was never written and tell the client why the connection ended."""
        if self._abort_reason is not None:
            reason = self._abort_reason
        else:
            reason = "closed by the broker" if exc is None else str(exc) or type(exc).__name__
        self._out.clear()
        for future, topic in self._written:
            if not future.done():
                future.set_exception(
                    EventBusPublishError(topic, "connection lost before the message was sent")
                )
        self._written.clear()
        if not self.closed.done():
            self.closed.set_result(reason)
        self._on_lost(self, reason)

    @property
    def open(self) -> bool:
        """True until the transport closes."""
        return self._transport is not None and not self._transport.is_closing()

    def send(self, packet: bytes, written: tuple[asyncio.Future[None], str] | None = None) -> None:
        """Queue ``packet`` for the next flush.

        ``written`` (a QoS 0 publish's future and topic) completes once the packet is handed to the transport,
        or fails if the connection is lost before.
        """
        self._out.append(packet)
        if written is not None:
            self._written.append(written)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write every queued packet at once."""
        self._flush_scheduled = False
        transport = self._transport
        if not self._out or transport is None or transport.is_closing():
            return
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        transport.write(data)
        self.last_out = self._loop.time()
        if self._written:
            for future, _topic in self._written:
                if not future.done():
                    future.set_result(None)
            self._written.clear()

    def close(self) -> None:
        """Flush, then close gracefully (the transport writes what it holds first)."""
        self.flush()
        if self._transport is not None:
            self._transport.close()

    def abort(self, reason: str) -> None:
        """Drop the connection at once (a protocol error or a dead broker)."""
        if self._abort_reason is None:
            self._abort_reason = reason
        if not self.closed.done():
            self.closed.set_result(reason)
        if self._transport is not None:
            self._transport.abort()


class MqttClient:
    """An MQTT client that stays connected: reconnects, re-subscribes and keeps unacknowledged messages.

    Use as ``async with MqttClient(settings) as client:`` or with :meth:`start` / :meth:`stop`. Received
    messages of every subscription come out of :meth:`messages`, in arrival order, for one consumer.
    """

    def __init__(
        self,
        settings: BrokerSettings,
        *,
        client_id: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.settings = settings
        self._address = settings.address
        self._url = self._address.url
        self._ssl = settings.ssl_context()
        # A generated id cannot be resumed by anyone else: its session ends with the client.
        self._ephemeral = client_id is None
        self.client_id = client_id or f"edgetwin-{uuid.uuid4().hex[:12]}"
        self._window_size = min(settings.max_inflight, _MAX_WINDOW)
        self._metrics = ClientMetrics(registry, self.client_id, self._outstanding)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: _Connection | None = None
        self._started = False
        self._stopped = False
        self._online = False  # CONNACK received: messages may be handed to the connection
        self._connected = False  # online and every remembered filter subscribed
        self._ever_connected = False
        self._last_error = "no connection attempt yet"
        self._ping_sent: float | None = None

        self._subscriptions: dict[str, int] = {}
        # Filters the broker's session holds, as far as we know: kept across a drop, since the session is.
        self._active: set[str] = set()
        self._acks: dict[int, asyncio.Future[list[int]]] = {}
        self._resubscribe: tuple[asyncio.Future[list[int]], list[str]] | None = None
        self._connack: asyncio.Future[bool] | None = None
        # Unacknowledged QoS 1 / 2 messages by packet id, in the order they were first sent.
        self._inflight: dict[int, _Outgoing] = {}
        # Received QoS 2 messages awaiting PUBREL: a re-sent PUBLISH with one of these ids is a duplicate.
        self._awaiting_release: set[int] = set()
        self._last_mid = 0
        self._backlog: deque[_Outgoing] = deque()
        self._messages: asyncio.Queue[MqttMessage | None] = asyncio.Queue()

        self._connected_event = asyncio.Event()
        self._lost = asyncio.Event()
        self._window = asyncio.Event()
        self._window.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._first: asyncio.Future[None] | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._keepalive_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "connected" if self._connected else "stopped" if self._stopped else "disconnected"
        return f"<MqttClient {self.client_id} {self._url} {state}>"

    # ------------------------------------------------------------------ lifecycle

    async def start(self, *, connect_timeout: float = 10.0) -> None:
        """Connect for the first time; raises :class:`EventBusConnectionError` if that fails or times out.

        A refused login ("not authorised") or an untrusted broker certificate fails at once; an unreachable
        broker is retried until ``connect_timeout``.
        """
        if self._stopped:
            raise EventBusClosedError("start again (create a new client)")
        if self._started:
            await self.wait_connected(connect_timeout)
            return
        self._started = True
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._first = loop.create_future()
        self._supervisor = loop.create_task(self._supervise(), name=f"mqtt-supervisor-{self.client_id}")
        self._keepalive_task = loop.create_task(self._keepalive(), name=f"mqtt-keepalive-{self.client_id}")
        try:
            async with asyncio.timeout(connect_timeout):
                await asyncio.shield(self._first)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped and task is not None and not task.cancelling():
                raise EventBusClosedError("finish connecting (stopped meanwhile)") from None
            raise
        except TimeoutError:
            await self.stop()
            raise EventBusConnectionError(
                self._url, f"no connection within {connect_timeout:g}s (last error: {self._last_error})"
            ) from None
        except EventBusConnectionError:
            await self.stop()
            raise

    async def stop(self, *, drain_timeout: float = 2.0) -> None:
        """Disconnect and end :meth:`messages`; idempotent.

        While connected, first waits up to ``drain_timeout`` seconds for unacknowledged publishes; those still
        pending afterwards fail with :class:`EventBusPublishError`.
        """
        if self._stopped:
            return
        if self._online and not self._idle.is_set() and drain_timeout > 0:
            try:
                async with asyncio.timeout(drain_timeout):
                    await self._idle.wait()
            except TimeoutError:
                log.warning(
                    "mqtt stop: %d publishes not acknowledged client=%s", self._outstanding(), self.client_id
                )
        self._stopped = True
        for task in (self._supervisor, self._keepalive_task):
            if task is not None:
                task.cancel()
        for task in (self._supervisor, self._keepalive_task):
            if task is not None:
                await asyncio.gather(task, return_exceptions=True)
        if self._first is not None and not self._first.done():
            self._first.cancel()
        was_online = self._online
        await self._close_connection()
        if self._ephemeral and was_online:
            await self._end_session()
        self._fail_everything()
        self._messages.put_nowait(None)
        # Wake whoever waits for a connection or a window slot: they find the client stopped.
        self._connected_event.set()
        self._window.set()
        self._metrics.close()
        log.info("mqtt client stopped client=%s url=%s", self.client_id, self._url)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def connected(self) -> bool:
        """True while connected with every remembered subscription in place."""
        return self._connected

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until :attr:`connected`; :class:`EventBusConnectionError` after ``timeout`` seconds."""
        self._check_running("wait for a connection")
        if self._connected:
            return
        try:
            async with asyncio.timeout(timeout):
                await self._connected_event.wait()
        except TimeoutError:
            raise EventBusConnectionError(
                self._url, f"not connected within {timeout:g}s (last error: {self._last_error})"
            ) from None
        self._check_running("wait for a connection")

    # ------------------------------------------------------------------ subscriptions and messages

    async def subscribe(self, topic_filter: str, *, qos: int = 1) -> None:
        """Subscribe, and remember the filter: it is subscribed again whenever the broker lost the session.

        Returns once the broker granted it (waiting for a connection if there is none).
        """
        self._check_running("subscribe")
        if not topic_filter:
            raise EventBusSubscribeError(topic_filter, "empty topic filter")
        if qos not in (0, 1, 2):
            raise EventBusSubscribeError(topic_filter, f"QoS must be 0, 1 or 2, not {qos!r}")
        self._subscriptions[topic_filter] = qos
        while topic_filter not in self._active:
            await self.wait_connected()
            if topic_filter not in self._subscriptions or topic_filter in self._active:
                return
            try:
                codes = await self._request(lambda mid: encode_subscribe(mid, [(topic_filter, qos)]))
            except _ConnectionLost:
                continue
            if not codes or codes[0] == SUBACK_FAILURE:
                self._subscriptions.pop(topic_filter, None)
                raise EventBusSubscribeError(topic_filter, "refused by the broker (SUBACK failure)")
            self._active.add(topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Forget a filter and unsubscribe from it (waiting for a connection if there is none)."""
        self._check_running("unsubscribe")
        self._subscriptions.pop(topic_filter, None)
        self._active.discard(topic_filter)
        while topic_filter not in self._subscriptions:
            await self.wait_connected()
            try:
                await self._request(lambda mid: encode_unsubscribe(mid, [topic_filter]))
            except _ConnectionLost:
                continue
            return

    async def messages(self) -> AsyncIterator[MqttMessage]:
        """Every message received on every subscription, in order; ends when the client stops."""
        while (message := await self._messages.get()) is not None:
            yield message
        # Leave the end mark for any other iterator.
        self._messages.put_nowait(None)

    # ------------------------------------------------------------------ publishing

    async def publish(self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False) -> None:
        """Publish and return when the broker acknowledged it (QoS 1 PUBACK; QoS 0: written to the socket).

        Waits while the in-flight window is full, and while disconnected until the reconnect delivers it.
        """
        while self._outstanding() >= self._window_size:
            self._check_running("publish")
            self._window.clear()
            await self._window.wait()
        await asyncio.shield(self.publish_nowait(topic, payload, qos=qos, retain=retain))

    def publish_nowait(
        self, topic: str, payload: bytes | str, *, qos: int = 1, retain: bool = False
    ) -> asyncio.Future[None]:
        """Hand a message to the connection now, in call order; the future completes at PUBACK.

        Successive calls reach the wire in call order, also across a reconnect. This does not wait for the
        in-flight window: a caller publishing in bulk awaits the futures (or uses :meth:`publish`).
        """
        self._check_running("publish")
        data = payload.encode() if isinstance(payload, str) else payload
        if not topic or "+" in topic or "#" in topic:
            raise EventBusPublishError(topic, "a topic must be non-empty and free of the wildcards + and #")
        if qos not in (0, 1, 2):
            raise EventBusPublishError(topic, f"QoS must be 0, 1 or 2, not {qos!r}")
        encoded_topic = topic.encode()
        if len(encoded_topic) > 0xFFFF or "\x00" in topic:
            raise EventBusPublishError(topic, "a topic must be at most 65535 bytes of UTF-8, without NUL")
        if len(data) > _MAX_PAYLOAD - len(encoded_topic) - 4:
            raise EventBusPublishError(topic, f"payload of {len(data)} bytes exceeds the MQTT limit")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outgoing = _Outgoing(topic, encoded_topic, data, qos, retain, future)
        conn = self._conn
        if (
            self._online
            and conn is not None
            and not self._backlog
            and len(self._inflight) < self._window_size
        ):
            self._hand_over(conn, outgoing)
            if qos:
                self._idle.clear()
        else:
            self._backlog.append(outgoing)
            self._idle.clear()
        return future

    def _outstanding(self) -> int:
        return len(self._inflight) + len(self._backlog)

    def _pump(self) -> None:
        """Hand the backlog to the connection, in order, as far as the window allows."""
        conn = self._conn
        while self._backlog and self._online and conn is not None and len(self._inflight) < self._window_size:
            self._hand_over(conn, self._backlog.popleft())
        self._check_idle()

    def _hand_over(self, conn: _Connection, outgoing: _Outgoing) -> None:
        if outgoing.qos == 0:
            conn.send(
                encode_publish(outgoing.encoded_topic, outgoing.payload, 0, outgoing.retain, 0),
                (outgoing.future, outgoing.topic),
            )
            outgoing.future.add_done_callback(self._qos0_done)
            return
        mid = self._next_mid()
        self._inflight[mid] = outgoing
        conn.send(
            encode_publish(outgoing.encoded_topic, outgoing.payload, outgoing.qos, outgoing.retain, mid)
        )

    def _qos0_done(self, future: asyncio.Future[None]) -> None:
        if future.cancelled() or future.exception() is not None:
            self._metrics.publish_errors.inc()
        else:
            self._metrics.published.inc()

    def _next_mid(self) -> int:
        mid = self._last_mid
        while True:
            mid = mid % 0xFFFF + 1
            if mid not in self._inflight and mid not in self._acks:
                self._last_mid = mid
                return mid

    def _publish_failed(self, future: asyncio.Future[None], topic: str, reason: str) -> None:
        self._metrics.publish_errors.inc()
        if not future.done():
            future.set_exception(EventBusPublishError(topic, reason))

    def _acknowledged(self, mid: int) -> None:
        outgoing = self._inflight.pop(mid, None)
        if outgoing is None:
            return
        self._metrics.published.inc()
        if not outgoing.future.done():
            outgoing.future.set_result(None)
        if self._backlog:
            self._pump()
        if not self._window.is_set() and self._outstanding() < self._window_size:
            self._window.set()
        self._check_idle()

    def _check_idle(self) -> None:
        if not self._inflight and not self._backlog:
            self._idle.set()

    async def _request(self, build: Callable[[int], bytes]) -> list[int]:
        """Send a SUBSCRIBE / UNSUBSCRIBE built for a fresh packet id; the return codes of its ack."""
        conn = self._conn
        if conn is None or not self._online:
            raise _ConnectionLost
        mid = self._next_mid()
        future: asyncio.Future[list[int]] = self._require_loop().create_future()
        self._acks[mid] = future
        conn.send(build(mid))
        return await future

    # ------------------------------------------------------------------ incoming packets

    def _on_packet(self, conn: _Connection, packet: Packet) -> None:
        if conn is not self._conn:
            return
        try:
            self._handle(conn, packet)
        except MalformedPacketError as exc:
            conn.abort(f"malformed packet from the broker: {exc}")

    def _handle(self, conn: _Connection, packet: Packet) -> None:
        kind = packet.type
        if kind == PacketType.PUBLISH:
            self._on_publish(conn, packet)
        elif kind == PacketType.PUBACK:
            self._acknowledged(decode_mid(packet.body))
        elif kind == PacketType.PUBREC:
            mid = decode_mid(packet.body)
            outgoing = self._inflight.get(mid)
            if outgoing is not None:
                outgoing.released = True
            conn.send(encode_ack(PacketType.PUBREL, mid))
        elif kind == PacketType.PUBCOMP:
            self._acknowledged(decode_mid(packet.body))
        elif kind == PacketType.PUBREL:
            mid = decode_mid(packet.body)
            self._awaiting_release.discard(mid)
            conn.send(encode_ack(PacketType.PUBCOMP, mid))
        elif kind == PacketType.SUBACK:
            mid, codes = decode_suback(packet.body)
            self._complete_request(mid, codes)
        elif kind == PacketType.UNSUBACK:
            self._complete_request(decode_mid(packet.body), [])
        elif kind == PacketType.PINGRESP:
            self._ping_sent = None
        elif kind == PacketType.CONNACK:
            self._on_connack(conn, *decode_connack(packet.body))
        else:
            raise MalformedPacketError(f"unexpected packet type {kind} from the broker")

    def _on_publish(self, conn: _Connection, packet: Packet) -> None:
        message = decode_publish(packet.flags, packet.body)
        if message.qos == 2:
            duplicate = message.mid in self._awaiting_release
            self._awaiting_release.add(message.mid)
            conn.send(encode_ack(PacketType.PUBREC, message.mid))
            if duplicate:
                return
        elif message.qos == 1:
            conn.send(encode_ack(PacketType.PUBACK, message.mid))
        self._messages.put_nowait(MqttMessage(message.topic, message.payload, message.qos, message.retain))
        self._metrics.received.inc()

    def _complete_request(self, mid: int, codes: list[int]) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(codes)

    def _on_connack(self, conn: _Connection, session_present: bool, code: int) -> None:
        connack = self._connack
        if code:
            reason = _CONNACK_REASONS.get(code, f"refused with return code {code}")
            text = f"not authorised: {reason} (check username/password)" if code in _AUTH_CONNACK else reason
            if connack is not None and not connack.done():
                connack.set_exception(_AttemptFailed(text, permanent=code in _PERMANENT_CONNACK))
            return
        log.debug("mqtt CONNACK client=%s session_present=%s", self.client_id, session_present)
        if not session_present:
            self._active.clear()
            self._awaiting_release.clear()
        # Subscribe before re-sending and before the backlog: the broker then has the subscriptions when those
        # messages arrive (a client may get its own). Filters the resumed session holds are not subscribed
        # again: MQTT 3.1.1 would deliver their retained messages once more.
        missing = [(name, qos) for name, qos in self._subscriptions.items() if name not in self._active]
        if missing:
            mid = self._next_mid()
            future: asyncio.Future[list[int]] = self._require_loop().create_future()
            self._acks[mid] = future
            self._resubscribe = (future, [name for name, _qos in missing])
            conn.send(encode_subscribe(mid, missing))
        for mid, outgoing in self._inflight.items():
            if outgoing.released:
                conn.send(encode_ack(PacketType.PUBREL, mid))
            else:
                packet = encode_publish(
                    outgoing.encoded_topic, outgoing.payload, outgoing.qos, outgoing.retain, mid, dup=True
                )
                conn.send(packet)
        self._online = True
        self._pump()
        if connack is not None and not connack.done():
            connack.set_result(session_present)

    def _on_lost(self, conn: _Connection, reason: str) -> None:
        if conn is not self._conn:
            return
        self._conn = None
        self._online = False
        self._connected = False
        self._connected_event.clear()
        self._metrics.set_connected(False)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(_ConnectionLost())
        self._acks.clear()
        # Its future was failed just above; the supervisor, which awaits it, sees the loss.
        self._resubscribe = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(_AttemptFailed(f"connection closed before CONNACK ({reason})"))
        # Unwritten QoS 0 messages die with the connection (failed by it); QoS > 0 ones stay in flight.
        self._last_error = f"connection lost ({reason})"
        self._lost.set()

    # ------------------------------------------------------------------ connection supervision

    async def _supervise(self) -> None:
        backoff = Backoff(
            BackoffPolicy(minimum=self.settings.reconnect_min, maximum=self.settings.reconnect_max)
        )
        while True:
            try:
                await self._connect_once()
            except _AttemptFailed as exc:
                self._last_error = exc.reason
                if exc.permanent and not self._ever_connected:
                    if self._first is not None and not self._first.done():
                        self._first.set_exception(EventBusConnectionError(self._url, exc.reason))
                    return
                # Before the first connection start() reports the failure; afterwards each one is logged.
                level = (
                    logging.DEBUG
                    if not self._ever_connected
                    else logging.ERROR
                    if exc.permanent
                    else logging.WARNING
                )
                log.log(
                    level,
                    "mqtt connect failed client=%s url=%s reason=%s",
                    self.client_id,
                    self._url,
                    exc.reason,
                )
            except Exception as exc:
                # A bug must not end the supervision silently: log it, drop the connection, try again.
                self._last_error = repr(exc)
                log.exception("mqtt connection attempt crashed client=%s url=%s", self.client_id, self._url)
                await self._close_connection()
            else:
                backoff.reset()
                await self._lost.wait()
                log.warning(
                    "mqtt connection lost client=%s url=%s reason=%s",
                    self.client_id,
                    self._url,
                    self._last_error,
                )
            await asyncio.sleep(backoff.next_delay())

    async def _open(
        self, on_packet: Callable[[_Connection, Packet], None], *, clean_session: bool
    ) -> _Connection:
        """Open a transport to the broker and send CONNECT on it."""
        loop = self._require_loop()
        host, port = self._address.host, self._address.port
        try:
            async with asyncio.timeout(_CONNECT_TIMEOUT):
                _transport, conn = await loop.create_connection(
                    lambda: _Connection(loop, on_packet, self._on_lost),
                    host,
                    port,
                    ssl=self._ssl,
                    server_hostname=host if self._ssl is not None else None,
                )
        except ssl.SSLCertVerificationError as exc:
            raise _AttemptFailed(
                f"TLS certificate verification failed: {exc.verify_message}", permanent=True
            ) from exc
        except TimeoutError:
            raise _AttemptFailed(f"cannot connect: no answer within {_CONNECT_TIMEOUT:g}s") from None
        except ssl.SSLError as exc:
            raise _AttemptFailed(f"cannot connect: TLS: {exc}") from exc
        except OSError as exc:
            # asyncio words a refusal "Connect call failed (...)": say what happened, as the OS does.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise _AttemptFailed(f"cannot connect: {reason}") from exc
        conn.send(
            encode_connect(
                self.client_id,
                clean_session=clean_session,
                keepalive=int(self.settings.keepalive),
                username=self.settings.username,
                password=self.settings.password,
            )
        )
        return conn

    async def _connect_once(self) -> None:
        loop = self._require_loop()
        self._lost.clear()
        self._ping_sent = None
        self._connack = loop.create_future()
        try:
            self._conn = conn = await self._open(self._on_packet, clean_session=False)
            if conn.closed.done():  # lost before it became the current connection: _on_lost ignored it
                self._on_lost(conn, conn.closed.result())
            async with asyncio.timeout(max(self.settings.keepalive, 5.0)):
                await self._connack
            await self._await_resubscribed()
            self._raise_if_lost()
        except TimeoutError:
            await self._close_connection()
            raise _AttemptFailed("no answer from the broker (CONNACK / SUBACK timeout)") from None
        except _AttemptFailed:
            await self._close_connection()
            raise
        finally:
            self._connack = None
        if self._ever_connected:
            self._metrics.reconnects.inc()
        self._ever_connected = True
        self._connected = True
        self._connected_event.set()
        self._metrics.set_connected(True)
        self._last_error = "none"
        log.info("mqtt connected client=%s url=%s", self.client_id, self._url)
        if self._first is not None and not self._first.done():
            self._first.set_result(None)

    def _raise_if_lost(self) -> None:
        if self._lost.is_set():
            raise _AttemptFailed(self._last_error)

    async def _await_resubscribed(self) -> None:
        if self._resubscribe is None:
            return
        future, filters = self._resubscribe
        try:
            codes = await future
        except _ConnectionLost:
            raise _AttemptFailed("connection lost while re-subscribing") from None
        finally:
            self._resubscribe = None
        for name, code in zip(filters, codes, strict=False):
            if code == SUBACK_FAILURE:
                log.error("mqtt re-subscribe refused client=%s filter=%s", self.client_id, name)
            elif name in self._subscriptions:  # not unsubscribed in the meantime
                self._active.add(name)

    async def _close_connection(self) -> None:
        """Send DISCONNECT and close (forcibly if the broker does not let go in time)."""
        conn = self._conn
        if conn is None:
            return
        if conn.open:
            conn.send(DISCONNECT)
            conn.close()
        try:
            async with asyncio.timeout(_SHUTDOWN_GRACE):
                await asyncio.shield(conn.closed)
        except TimeoutError:
            conn.abort("no close within the shutdown grace")
        # connection_lost may not have run yet (an aborted transport reports it on the next iteration).
        self._on_lost(conn, "closed by the client")

    async def _end_session(self) -> None:
        """Reconnect once with ``clean_session=True``: the broker drops the session of this generated id."""
        loop = self._require_loop()
        connack: asyncio.Future[None] = loop.create_future()

        def on_packet(_conn: _Connection, packet: Packet) -> None:
            if packet.type == PacketType.CONNACK and not connack.done():
                connack.set_result(None)

        conn: _Connection | None = None
        try:
            async with asyncio.timeout(_SHUTDOWN_GRACE):
                conn = await self._open(on_packet, clean_session=True)
                await connack
                conn.send(DISCONNECT)
                conn.close()
                await conn.closed
        except (_AttemptFailed, TimeoutError) as exc:
            log.debug("mqtt session of client=%s not ended: %s", self.client_id, exc)
            if conn is not None:
                conn.abort("session end abandoned")

    async def _keepalive(self) -> None:
        interval = self.settings.keepalive
        loop = self._require_loop()
        while True:
            await asyncio.sleep(min(1.0, interval / 2))
            conn = self._conn
            if conn is None or not self._online:
                continue
            now = loop.time()
            if self._ping_sent is not None:
                if now - self._ping_sent > interval:
                    conn.abort(f"no PINGRESP within {interval:g}s")
            elif now - conn.last_out >= interval:
                self._ping_sent = now
                conn.send(PINGREQ)

    def _fail_everything(self) -> None:
        for outgoing in self._inflight.values():
            self._publish_failed(
                outgoing.future, outgoing.topic, "client stopped before the broker acknowledged the message"
            )
        self._inflight.clear()
        while self._backlog:
            outgoing = self._backlog.popleft()
            self._publish_failed(
                outgoing.future, outgoing.topic, "client stopped before the message was sent"
            )
        for ack in self._acks.values():
            if not ack.done():
                ack.set_exception(EventBusClosedError("wait for the broker's acknowledgement"))
        self._acks.clear()
        self._idle.set()

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EventBusClosedError("run before start()")
        return self._loop

    def _check_running(self, operation: str) -> None:
        if self._stopped:
            raise EventBusClosedError(operation)

"""The async MQTT client of the edge and of the mappers: paho-mqtt 2.x driven by the asyncio loop.

Why paho directly and not aiomqtt: the edge needs ``publish_nowait`` — hand a message to the connection
synchronously, in call order, and get a future that completes at PUBACK — while aiomqtt's ``publish`` is one
coroutine per message (a task per message to fire and forget, and no ordering between tasks). It also needs
reconnection with resubscription that keeps the unacknowledged messages, which aiomqtt leaves to the caller
(re-entering its context manager loses the in-flight futures). paho already keeps QoS 1 messages until their
PUBACK and re-sends them, in order, after a reconnect; this module adds what is missing, with no task per
message:

* an asyncio socket adapter (paho's ``loop_read`` / ``loop_write`` / ``loop_misc`` on ``add_reader`` /
  ``add_writer``, as paho documents for external event loops); only the blocking TCP/TLS connect runs in an
  executor, and paho is never touched from the loop while it does;
* a supervisor that reconnects with jittered exponential backoff, re-subscribes every remembered filter on
  each connection and flushes what was published while disconnected, after paho's own re-sends;
* one future per message id, completed by paho's ``on_publish`` (at PUBACK for QoS 1), and a bounded window of
  unacknowledged messages: :meth:`MqttClient.publish` waits while it is full.

The connection is MQTT 5 with ``clean_start=False`` and a session expiry: after a short drop the broker
resumes the session (subscriptions and QoS 1 messages queued for us); after a broker restart without
persistence the client re-subscribes by itself. A client without an explicit ``client_id`` ends its session
when stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
import ssl
import threading
import uuid
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, Self

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import CollectorRegistry

from eventbus.errors import (
    EventBusClosedError,
    EventBusConnectionError,
    EventBusPublishError,
    EventBusSubscribeError,
)
from eventbus.metrics import ClientMetrics
from eventbus.settings import BrokerSettings

__all__ = ["MqttClient", "MqttMessage"]

log = logging.getLogger(__name__)

_MAX_PAYLOAD = 268_435_455
# CONNACK reasons that no retry can fix: credentials, authorisation, a refused client id or protocol.
_PERMANENT_CONNACK = frozenset({0x84, 0x85, 0x86, 0x87, 0x8A, 0x8C})
_AUTH_CONNACK = frozenset({0x86, 0x87, 0x8A, 0x8C})
_SHUTDOWN_GRACE = 1.0


@dataclass(frozen=True, slots=True)
class MqttMessage:
    """A received (or to be published) MQTT message."""

    topic: str
    payload: bytes
    qos: int = 0
    retain: bool = False


class _Outgoing(NamedTuple):
    topic: str
    payload: bytes
    qos: int
    retain: bool
    future: asyncio.Future[None]


class _ConnectionLost(Exception):
    """Internal: the connection dropped while a SUBACK / UNSUBACK was awaited (the request is retried)."""


class _AttemptFailed(Exception):
    """Internal: one connection attempt failed; ``permanent`` ones are not worth retrying at start."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the TLS handshake fails: paho's connect() would leave it open (a leaked socket)."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def _properties(packet_type: int) -> Properties:
    return Properties(packet_type)  # type: ignore[no-untyped-call]  # paho leaves this constructor unannotated


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
        # A generated id cannot be resumed by anyone else: its session ends with the client.
        self._ephemeral = client_id is None
        self.client_id = client_id or f"edgetwin-{uuid.uuid4().hex[:12]}"
        self._paho = self._make_paho()
        self._metrics = ClientMetrics(registry, self.client_id, self._outstanding)

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._started = False
        self._stopped = False
        self._online = False  # CONNACK received: paho may be given messages
        self._connected = False  # online and every remembered filter re-subscribed
        self._ever_connected = False
        self._last_error = "no connection attempt yet"
        self._fd: int | None = None
        # Messages on the wire awaiting PUBACK: the window, capped by the broker's Receive Maximum (CONNACK).
        self._wire_limit = settings.max_inflight

        self._subscriptions: dict[str, int] = {}
        self._active: set[str] = set()
        self._acks: dict[int, asyncio.Future[list[ReasonCode]]] = {}
        self._resubscribe: tuple[asyncio.Future[list[ReasonCode]], list[str]] | None = None
        self._pending: dict[int, tuple[asyncio.Future[None], str, int]] = {}
        self._backlog: deque[_Outgoing] = deque()
        self._messages: asyncio.Queue[MqttMessage | None] = asyncio.Queue()

        self._connected_event = asyncio.Event()
        self._lost = asyncio.Event()
        self._socket_closed = asyncio.Event()
        self._window = asyncio.Event()
        self._window.set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._connack: asyncio.Future[None] | None = None
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
        self._loop_thread = threading.get_ident()
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
        await self._close_connection(end_session=self._ephemeral)
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
        """Subscribe, and remember the filter: it is re-subscribed on every reconnect.

        Returns once the broker granted it (waiting for a connection if there is none).
        """
        self._check_running("subscribe")
        if not topic_filter:
            raise EventBusSubscribeError(topic_filter, "empty topic filter")
        self._subscriptions[topic_filter] = qos
        while topic_filter not in self._active:
            await self.wait_connected()
            if topic_filter not in self._subscriptions or topic_filter in self._active:
                return
            options = SubscribeOptions(qos=qos, retainHandling=SubscribeOptions.RETAIN_SEND_IF_NEW_SUB)
            try:
                codes = await self._acknowledged(self._paho.subscribe(topic_filter, options=options))
            except _ConnectionLost:
                continue
            if codes[0].is_failure:
                self._subscriptions.pop(topic_filter, None)
                raise EventBusSubscribeError(topic_filter, str(codes[0]))
            self._active.add(topic_filter)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Forget a filter and unsubscribe from it (waiting for a connection if there is none)."""
        self._check_running("unsubscribe")
        self._subscriptions.pop(topic_filter, None)
        self._active.discard(topic_filter)
        while topic_filter not in self._subscriptions:
            await self.wait_connected()
            try:
                await self._acknowledged(self._paho.unsubscribe(topic_filter))
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
        while self._outstanding() >= self.settings.max_inflight:
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
        if len(data) > _MAX_PAYLOAD:
            raise EventBusPublishError(topic, f"payload of {len(data)} bytes exceeds the MQTT limit")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        outgoing = _Outgoing(topic, data, qos, retain, future)
        self._idle.clear()
        if self._online and not self._backlog and len(self._pending) < self._wire_limit:
            self._hand_over(outgoing)
        else:
            self._backlog.append(outgoing)
        return future

    def _outstanding(self) -> int:
        return len(self._pending) + len(self._backlog)

    def _pump(self) -> None:
        """Hand the backlog to paho, in order, as far as the wire limit allows."""
        while self._backlog and self._online and len(self._pending) < self._wire_limit:
            self._hand_over(self._backlog.popleft())

    def _hand_over(self, outgoing: _Outgoing) -> None:
        topic, data, qos, retain, future = outgoing
        try:
            info = self._paho.publish(topic, data, qos, retain)
        except ValueError as exc:
            self._publish_failed(future, topic, str(exc))
            return
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (
            info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0
        ):
            # NO_CONN with QoS > 0: paho keeps the message and sends it after the reconnect.
            self._pending[info.mid] = (future, topic, qos)
        else:
            self._publish_failed(future, topic, paho.error_string(info.rc))

    def _publish_failed(self, future: asyncio.Future[None], topic: str, reason: str) -> None:
        self._metrics.publish_errors.inc()
        if not future.done():
            future.set_exception(EventBusPublishError(topic, reason))

    # ------------------------------------------------------------------ paho callbacks (on the loop thread)

    def _make_paho(self) -> paho.Client:
        client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        if self.settings.username is not None:
            client.username_pw_set(self.settings.username, self.settings.password)
        context = self.settings.ssl_context()
        if context is not None:
            context.sslsocket_class = _ClosingSSLSocket
            client.tls_set_context(context)
        # The window is enforced here (see _pump), where it can follow the broker's Receive Maximum; paho
        # cannot resize its own on an open connection, so it gets none.
        client.max_inflight_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_ack
        client.on_unsubscribe = self._on_ack
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write
        return client

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        payload = message.payload if isinstance(message.payload, bytes) else bytes(message.payload)
        self._messages.put_nowait(MqttMessage(message.topic, payload, message.qos, bool(message.retain)))
        self._metrics.received.inc()

    def _on_publish(
        self, _client: paho.Client, _userdata: Any, mid: int, reason: ReasonCode, _props: Properties
    ) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        future, topic, _qos = entry
        if reason.is_failure:
            self._publish_failed(future, topic, str(reason))
        else:
            self._metrics.published.inc()
            if not future.done():
                future.set_result(None)
        if self._backlog:
            self._pump()
        if not self._window.is_set() and self._outstanding() < self.settings.max_inflight:
            self._window.set()
        if not self._pending and not self._backlog:
            self._idle.set()

    def _on_ack(
        self,
        _client: paho.Client,
        _userdata: Any,
        mid: int,
        reasons: list[ReasonCode],
        _props: Properties | None,
    ) -> None:
        future = self._acks.pop(mid, None)
        if future is not None and not future.done():
            future.set_result(reasons)

    async def _acknowledged(self, sent: tuple[MQTTErrorCode, int | None]) -> list[ReasonCode]:
        rc, mid = sent
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
            raise _ConnectionLost
        future: asyncio.Future[list[ReasonCode]] = asyncio.get_running_loop().create_future()
        self._acks[mid] = future
        return await future

    def _on_connect(
        self,
        _client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason: ReasonCode,
        properties: Properties | None,
    ) -> None:
        connack = self._connack
        if not reason.is_failure:
            receive_maximum = getattr(properties, "ReceiveMaximum", 65535)
            self._wire_limit = min(self.settings.max_inflight, receive_maximum)
            log.debug("mqtt CONNACK client=%s session_present=%s", self.client_id, flags.session_present)
            # Subscribe here, before paho re-sends unacknowledged messages and before the backlog goes out:
            # the broker then has the subscriptions when those messages arrive (a client may get its own).
            if self._subscriptions:
                filters = list(self._subscriptions)
                options = SubscribeOptions.RETAIN_SEND_IF_NEW_SUB
                rc, mid = self._paho.subscribe(
                    [
                        (name, SubscribeOptions(qos=qos, retainHandling=options))
                        for name, qos in self._subscriptions.items()
                    ]
                )
                if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
                    future: asyncio.Future[list[ReasonCode]] = self._require_loop().create_future()
                    self._acks[mid] = future
                    self._resubscribe = (future, filters)
        if connack is not None and not connack.done():
            if reason.is_failure:
                permanent = reason.value in _PERMANENT_CONNACK
                text = (
                    f"not authorised: {reason} (check username/password)"
                    if reason.value in _AUTH_CONNACK
                    else str(reason)
                )
                connack.set_exception(_AttemptFailed(text, permanent=permanent))
            else:
                connack.set_result(None)

    def _on_disconnect(
        self,
        _client: paho.Client,
        _userdata: Any,
        _flags: paho.DisconnectFlags,
        reason: ReasonCode,
        _props: Properties | None,
    ) -> None:
        self._online = False
        self._connected = False
        self._connected_event.clear()
        self._active.clear()
        self._metrics.set_connected(False)
        for future in self._acks.values():
            if not future.done():
                future.set_exception(_ConnectionLost())
        self._acks.clear()
        if self._resubscribe is not None:
            # Its future was failed just above; the supervisor, which awaits it, sees the loss.
            self._resubscribe = None
        if self._connack is not None and not self._connack.done():
            self._connack.set_exception(_AttemptFailed(f"connection closed before CONNACK ({reason})"))
        # Unwritten QoS 0 messages die with the connection; QoS > 0 ones stay with paho until acknowledged.
        for mid, (published, topic, qos) in list(self._pending.items()):
            if qos == 0:
                del self._pending[mid]
                self._publish_failed(published, topic, "connection lost before the message was sent")
        self._last_error = f"connection lost ({reason})"
        self._lost.set()

    def _on_socket_open(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        # paho opens sockets inside connect(), which runs in an executor: _connect_once registers the socket
        # once connect() returned, so that the loop never touches paho while the executor thread does.
        if self._in_loop_thread():
            self._watch(sock.fileno())

    def _on_socket_close(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        fd = sock.fileno()
        if self._in_loop_thread():
            # The socket still owns fd: whatever is registered for it is ours.
            self._unwatch(fd, owned=True)
        elif self._loop is not None:
            # Closed by the executor (a stale socket): fd may be reused before this runs, so only our own.
            self._loop.call_soon_threadsafe(self._unwatch, fd)

    def _on_socket_register_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if self._in_loop_thread() and self._loop is not None:
            self._loop.add_writer(sock.fileno(), self._writable)

    def _on_socket_unregister_write(self, _client: paho.Client, _userdata: Any, sock: Any) -> None:
        if self._in_loop_thread() and self._loop is not None:
            self._loop.remove_writer(sock.fileno())

    def _in_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise EventBusClosedError("run before start()")
        return self._loop

    def _watch(self, fd: int) -> None:
        self._fd = fd
        self._socket_closed.clear()
        self._require_loop().add_reader(fd, self._readable)

    def _unwatch(self, fd: int, *, owned: bool = False) -> None:
        if fd < 0 or (fd != self._fd and not owned):
            return
        loop = self._require_loop()
        loop.remove_reader(fd)
        loop.remove_writer(fd)
        if fd == self._fd:
            self._fd = None
            self._socket_closed.set()

    def _readable(self) -> None:
        rc = self._paho.loop_read()
        # TLS may hold decrypted bytes the selector cannot see: drain them now.
        sock = self._paho.socket()
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, ssl.SSLSocket) and sock.pending():
            rc = self._paho.loop_read()

    def _writable(self) -> None:
        self._paho.loop_write()

    # ------------------------------------------------------------------ connection supervision

    async def _supervise(self) -> None:
        attempt = 0
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
                await self._close_connection(end_session=False)
            else:
                attempt = 0
                await self._lost.wait()
                log.warning(
                    "mqtt connection lost client=%s url=%s reason=%s",
                    self.client_id,
                    self._url,
                    self._last_error,
                )
            delay = min(self.settings.reconnect_max, self.settings.reconnect_min * 2**attempt)
            attempt = min(attempt + 1, 32)
            await asyncio.sleep(random.uniform(delay / 2, delay))

    async def _connect_once(self) -> None:
        loop = self._require_loop()
        self._lost.clear()
        self._connack = loop.create_future()
        properties = _properties(PacketTypes.CONNECT)
        properties.SessionExpiryInterval = int(self.settings.session_expiry)
        connecting = loop.run_in_executor(
            None,
            lambda: self._paho.connect(
                self._address.host,
                self._address.port,
                keepalive=int(self.settings.keepalive),
                clean_start=False,
                properties=properties,
            ),
        )
        try:
            await asyncio.shield(connecting)
        except asyncio.CancelledError:
            # The blocking connect cannot be interrupted: let it finish so that stop() can close its socket.
            await asyncio.wait([connecting])
            self._register_socket()
            raise
        except ssl.SSLCertVerificationError as exc:
            raise _AttemptFailed(
                f"TLS certificate verification failed: {exc.verify_message}", permanent=True
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise _AttemptFailed(f"cannot connect: {exc}") from exc
        self._register_socket()
        try:
            async with asyncio.timeout(max(self.settings.keepalive, 5.0)):
                await self._connack
            self._online = not self._lost.is_set()
            # paho re-sent its unacknowledged messages while handling CONNACK: the backlog goes after them.
            self._pump()
            await self._await_resubscribed()
            self._raise_if_lost()
        except TimeoutError:
            await self._close_connection(end_session=False)
            raise _AttemptFailed("no answer from the broker (CONNACK / SUBACK timeout)") from None
        except _AttemptFailed:
            await self._close_connection(end_session=False)
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

    def _register_socket(self) -> None:
        sock = self._paho.socket()
        if sock is None or sock.fileno() < 0:
            return
        # Twin requests and replies are small: Nagle + delayed ACK would add ~40 ms to each round trip.
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._watch(sock.fileno())
        if self._paho.want_write():
            # paho asked the executor thread to register for writing; do it here, on the loop.
            self._require_loop().add_writer(sock.fileno(), self._writable)

    async def _await_resubscribed(self) -> None:
        if self._resubscribe is None:
            return
        future, filters = self._resubscribe
        try:
            reasons = await future
        except _ConnectionLost:
            raise _AttemptFailed("connection lost while re-subscribing") from None
        finally:
            self._resubscribe = None
        for name, reason in zip(filters, reasons, strict=False):
            if reason.is_failure:
                log.error(
                    "mqtt re-subscribe refused client=%s filter=%s reason=%s", self.client_id, name, reason
                )
            elif name in self._subscriptions:  # not unsubscribed in the meantime
                self._active.add(name)

    async def _close_connection(self, *, end_session: bool) -> None:
        """Send DISCONNECT and close the socket (forcibly if the broker does not let go in time)."""
        if self._paho.socket() is None:
            return
        properties = None
        if end_session:
            properties = _properties(PacketTypes.DISCONNECT)
            properties.SessionExpiryInterval = 0
        self._paho.disconnect(properties=properties)
        self._paho.loop_write()
        try:
            async with asyncio.timeout(_SHUTDOWN_GRACE):
                await self._socket_closed.wait()
        except TimeoutError:
            sock = self._paho.socket()
            if sock is not None:
                self._unwatch(sock.fileno())
                sock.close()
                self._on_disconnect(
                    self._paho, None, paho.DisconnectFlags(False), ReasonCode(PacketTypes.DISCONNECT), None
                )

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            if self._online:
                self._paho.loop_misc()

    def _fail_everything(self) -> None:
        for future, topic, _qos in self._pending.values():
            self._publish_failed(future, topic, "client stopped before the broker acknowledged the message")
        self._pending.clear()
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

    def _check_running(self, operation: str) -> None:
        if self._stopped:
            raise EventBusClosedError(operation)

"""Test-side MQTT helpers: :class:`MqttProbe`, an outside app speaking plain paho as KubeEdge apps do, and
:class:`BrokerLogin`, a broker with the credentials it requires.

The probe runs paho's own network thread, so a test can use it from sync code (``wait_message``) or from a
coroutine without blocking the event loop that runs the component under test (``wait_message_async``).
"""

from __future__ import annotations

import json
import socket
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from types import TracebackType
from typing import Any, Self, cast

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from edgetwin.testing.waiting import WaitTimeout, wait_for, wait_for_sync
from eventbus import BrokerSettings, MosquittoBroker, parse_broker_url

__all__ = ["BrokerLogin", "MqttProbe", "ProbeMessage"]


@dataclass(frozen=True)
class ProbeMessage:
    """A message the probe received."""

    topic: str
    payload: bytes
    qos: int
    retain: bool

    @property
    def text(self) -> str:
        """The payload as UTF-8 text."""
        return self.payload.decode()

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


Predicate = Callable[[ProbeMessage], bool]


class MqttProbe:
    """A plain paho MQTT 3.1.1 client that records every message it receives.

    ``wait_message(filter, predicate)`` returns the oldest recorded message matching the topic filter and the
    predicate that no earlier wait returned, so successive waits walk through successive matches.
    """

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        timeout: float = 5.0,
    ) -> None:
        self.address = parse_broker_url(url)
        self.timeout = timeout
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"probe-{uuid.uuid4().hex[:8]}",
            protocol=MQTTProtocolVersion.MQTTv311,
        )
        if username is not None:
            self._client.username_pw_set(username, password)
        self._client.on_message = self._on_message
        self._client.on_subscribe = self._on_subscribe
        self._lock = threading.Lock()
        self._messages: list[ProbeMessage] = []
        self._taken: set[int] = set()
        self._subacks: dict[int, list[ReasonCode]] = {}
        self._running = False

    def __enter__(self) -> Self:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        """Connect and start paho's network thread; raises on failure."""
        self._client.connect(self.address.host, self.address.port)
        sock = self._client.socket()
        if isinstance(sock, socket.socket):
            # As an app's latency would be measured: no Nagle delay on small request/reply messages.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client.loop_start()
        self._running = True
        wait_for_sync(self._client.is_connected, self.timeout, what=f"probe connected to {self.address.url}")

    def close(self) -> None:
        """Disconnect and join paho's thread; idempotent."""
        if self._running:
            self._running = False
            self._client.disconnect()
            self._client.loop_stop()

    def subscribe(self, *topic_filters: str, qos: int = 1) -> None:
        """Subscribe to each filter and wait for the broker's SUBACK."""
        for topic_filter in topic_filters:
            result, mid = self._client.subscribe(topic_filter, qos)
            if result != MQTTErrorCode.MQTT_ERR_SUCCESS or mid is None:
                raise WaitTimeout(f"probe: cannot subscribe to {topic_filter!r}: {paho.error_string(result)}")
            acked = wait_for_sync(
                partial(self._suback, mid), self.timeout, what=f"SUBACK for {topic_filter!r}"
            )
            codes = cast(list[ReasonCode], acked)  # wait_for_sync only returns a truthy value
            if codes[0].is_failure:
                raise WaitTimeout(f"probe: subscription to {topic_filter!r} refused: {codes[0]}")

    def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], *, qos: int = 1, retain: bool = False
    ) -> None:
        """Publish (a dict is sent as JSON) and wait until it is acknowledged."""
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        info = self._client.publish(topic, data, qos, retain)
        info.wait_for_publish(self.timeout)
        if not info.is_published():
            raise WaitTimeout(f"probe: publish to {topic!r} not acknowledged ({paho.error_string(info.rc)})")

    @property
    def messages(self) -> list[ProbeMessage]:
        """Every message received so far, in order."""
        with self._lock:
            return list(self._messages)

    def received(self, topic_filter: str | None = None) -> list[ProbeMessage]:
        """The messages received so far on topics matching ``topic_filter``; every one when it is ``None``.

        Not ``#`` by default: by MQTT's rules ``#`` never matches topics starting with ``$`` (``$hw/...``).
        """
        messages = self.messages
        if topic_filter is None:
            return messages
        return [m for m in messages if paho.topic_matches_sub(topic_filter, m.topic)]

    def clear(self) -> None:
        """Forget every message received so far."""
        with self._lock:
            self._messages.clear()
            self._taken.clear()

    def wait_message(
        self, topic_filter: str, predicate: Predicate | None = None, timeout: float | None = None
    ) -> ProbeMessage:
        """Block until a message matching ``topic_filter`` (and ``predicate``) is there, and return it."""
        found = wait_for_sync(
            partial(self._take, topic_filter, predicate),
            timeout or self.timeout,
            what=f"a message on {topic_filter!r}",
        )
        return cast(ProbeMessage, found)  # wait_for_sync only returns a truthy value

    async def wait_message_async(
        self, topic_filter: str, predicate: Predicate | None = None, timeout: float | None = None
    ) -> ProbeMessage:
        """:meth:`wait_message` for coroutines: polls without blocking the event loop."""
        found = await wait_for(
            partial(self._take, topic_filter, predicate),
            timeout or self.timeout,
            what=f"a message on {topic_filter!r}",
        )
        return cast(ProbeMessage, found)  # wait_for only returns a truthy value

    def _take(self, topic_filter: str, predicate: Predicate | None) -> ProbeMessage | None:
        with self._lock:
            for index, message in enumerate(self._messages):
                if index in self._taken or not paho.topic_matches_sub(topic_filter, message.topic):
                    continue
                if predicate is None or _matches(predicate, message):
                    self._taken.add(index)
                    return message
        return None

    def _suback(self, mid: int) -> list[ReasonCode] | None:
        with self._lock:
            return self._subacks.pop(mid, None)

    def _on_subscribe(
        self, _client: paho.Client, _userdata: Any, mid: int, codes: list[ReasonCode], _props: Any
    ) -> None:
        with self._lock:
            self._subacks[mid] = codes

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        received = ProbeMessage(message.topic, bytes(message.payload), message.qos, bool(message.retain))
        with self._lock:
            self._messages.append(received)


def _matches(predicate: Predicate, message: ProbeMessage) -> bool:
    try:
        return predicate(message)
    except (ValueError, KeyError, TypeError, IndexError):
        # A predicate reading fields of an unrelated message (not JSON, another shape) means "not this one".
        return False


@dataclass(frozen=True)
class BrokerLogin:
    """A broker that requires a login, with the credentials a test should use."""

    broker: MosquittoBroker
    username: str
    password: str = field(repr=False)

    @property
    def url(self) -> str:
        """The broker's URL."""
        return self.broker.url

    @property
    def port(self) -> int:
        """The broker's port."""
        return self.broker.port

    def settings(self, **overrides: Any) -> BrokerSettings:
        """Client settings with these credentials; ``overrides`` replace any field."""
        fields: dict[str, Any] = {"url": self.url, "username": self.username, "password": self.password}
        return BrokerSettings(**(fields | overrides))

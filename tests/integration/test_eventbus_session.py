"""MqttClient's MQTT 3.1.1 session against a real mosquitto, through a TCP relay a test can hold or cut.

The relay stands for the network: cutting it drops the connection while the broker keeps running (so the
broker keeps the session), holding it stops the broker's bytes from reaching the client.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import uuid
from collections.abc import AsyncIterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from edgetwin.testing import free_port, wait_for, wait_for_sync
from edgetwin.testing.mosquitto import MqttProbe
from eventbus import BrokerSettings, MosquittoBroker, MqttClient, MqttMessage


class Cable:
    """A TCP relay to the broker: :meth:`cut` drops every connection (and refuses new ones until
    :meth:`mend`); :meth:`hold` keeps the broker's bytes from the client until :meth:`release`."""

    def __init__(self, broker_port: int) -> None:
        self.broker_port = broker_port
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    @property
    def url(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    async def mend(self) -> None:
        self._server = await asyncio.start_server(self._connect, "127.0.0.1", self.port)

    async def cut(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    async def close(self) -> None:
        await self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _connect(
        self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter
    ) -> None:
        try:
            broker_reader, broker_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            client_writer.transport.abort()
            return
        self._writers |= {client_writer, broker_writer}
        for source, sink, gated in (
            (client_reader, broker_writer, False),
            (broker_reader, client_writer, True),
        ):
            task = asyncio.create_task(self._pump(source, sink, gated))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, gated: bool) -> None:
        with contextlib.suppress(OSError):
            while data := await source.read(65536):
                if gated:
                    await self._flowing.wait()
                sink.write(data)
        sink.transport.abort()


@pytest.fixture
async def cable(mosquitto_private: MosquittoBroker) -> AsyncIterator[Cable]:
    relay = Cable(mosquitto_private.port)
    await relay.mend()
    try:
        yield relay
    finally:
        await relay.close()


def quick(url: str, **fields: Any) -> BrokerSettings:
    return BrokerSettings(url=url, reconnect_min=0.05, reconnect_max=0.2, **fields)


async def take(client: MqttClient, count: int, timeout: float = 10.0) -> list[MqttMessage]:
    received: list[MqttMessage] = []

    async def collect() -> None:
        async for message in client.messages():
            received.append(message)
            if len(received) == count:
                return

    await asyncio.wait_for(collect(), timeout)
    return received


def session_present(url_port: int, client_id: str) -> bool:
    """Whether the broker holds a session for ``client_id``; the look leaves no session behind."""
    flags: list[bool] = []
    connected = threading.Event()

    def on_connect(
        _client: paho.Client, _userdata: Any, connect_flags: Any, _reason: Any, _props: Any
    ) -> None:
        flags.append(connect_flags.session_present)
        connected.set()

    look = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=False,
    )
    look.on_connect = on_connect
    look.connect("127.0.0.1", url_port)
    look.loop_start()
    try:
        wait_for_sync(connected.is_set, 5, what="CONNACK")
    finally:
        look.disconnect()
        look.loop_stop()
    # Drop the session the look itself left (clean session on connect discards it).
    cleanup = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=MQTTProtocolVersion.MQTTv311,
        clean_session=True,
    )
    cleanup.connect("127.0.0.1", url_port)
    cleanup.loop_start()
    try:
        wait_for_sync(cleanup.is_connected, 5, what="cleanup CONNACK")
    finally:
        cleanup.disconnect()
        cleanup.loop_stop()
    return flags[0]


async def test_speaks_mqtt_311_with_a_persistent_session(mosquitto_private: MosquittoBroker) -> None:
    async with MqttClient(quick(mosquitto_private.url), client_id=f"c-{uuid.uuid4().hex[:8]}") as client:
        client_id = client.client_id
    # mosquitto logs the protocol (p2 = MQTT 3.1.1) and the clean-session flag of each connection.
    assert f"as {client_id} (p2, c0, k30)" in mosquitto_private.log_tail(50)


async def test_messages_queued_during_a_drop_arrive_after_it_and_retained_ones_only_once(
    cable: Cable, mosquitto_private: MosquittoBroker
) -> None:
    root = f"s/{uuid.uuid4().hex[:8]}"
    with MqttProbe(mosquitto_private.url) as app:
        app.publish(f"{root}/retained", "kept", retain=True)
        async with MqttClient(quick(cable.url)) as client:
            await client.subscribe(f"{root}/#")
            (retained,) = await take(client, 1)
            assert (retained.payload, retained.retain) == (b"kept", True)

            await cable.cut()
            await wait_for(lambda: not client.connected, what="the client to notice the cut")
            for i in range(3):
                app.publish(f"{root}/queued", str(i))  # acknowledged by the broker: kept for the session
            await cable.mend()
            await client.wait_connected(timeout=10)
            app.publish(f"{root}/marker", "end")

            received = await take(client, 4)
    # The session was resumed: nothing re-subscribed, so the retained message did not come again.
    assert [(m.topic.rsplit("/", 1)[1], m.payload) for m in received] == [
        ("queued", b"0"),
        ("queued", b"1"),
        ("queued", b"2"),
        ("marker", b"end"),
    ]


async def test_an_unacknowledged_publish_is_sent_again_after_a_reconnect(
    cable: Cable, mosquitto_private: MosquittoBroker
) -> None:
    root = f"s/{uuid.uuid4().hex[:8]}"
    with MqttProbe(mosquitto_private.url) as app:
        app.subscribe(f"{root}/#")
        async with MqttClient(quick(cable.url)) as client:
            cable.hold()  # the broker's PUBACK never reaches the client
            delivered = client.publish_nowait(f"{root}/x", "once")
            await wait_for(lambda: app.received(f"{root}/#"), what="the broker to get the message")
            assert not delivered.done()

            await cable.cut()
            cable.release()
            await cable.mend()
            await asyncio.wait_for(delivered, 10)  # sent again (DUP) and acknowledged this time
        # At least once: the app may see the message twice, never anything else.
        assert {m.payload for m in app.received(f"{root}/#")} == {b"once"}


async def test_a_generated_client_id_ends_its_session_on_stop(mosquitto_private: MosquittoBroker) -> None:
    named_id = f"named-{uuid.uuid4().hex[:8]}"
    async with MqttClient(quick(mosquitto_private.url), client_id=named_id) as named:
        await named.subscribe("s/named/#")
    async with MqttClient(quick(mosquitto_private.url)) as generated:
        await generated.subscribe("s/generated/#")
        generated_id = generated.client_id

    assert await asyncio.to_thread(session_present, mosquitto_private.port, named_id)
    assert not await asyncio.to_thread(session_present, mosquitto_private.port, generated_id)


async def test_qos2_both_ways(mosquitto: MosquittoBroker) -> None:
    root = f"s/{uuid.uuid4().hex[:8]}"
    async with MqttClient(quick(mosquitto.url)) as client:
        await client.subscribe(f"{root}/#", qos=2)
        await asyncio.wait_for(
            client.publish(f"{root}/x", "exactly once", qos=2), 5
        )  # PUBREC, PUBREL, PUBCOMP
        (message,) = await take(client, 1)
    assert (message.payload, message.qos) == (b"exactly once", 2)


async def test_a_silent_broker_is_dropped_after_the_keepalive(cable: Cable) -> None:
    async with MqttClient(quick(cable.url, keepalive=1)) as client:
        cable.hold()  # no PINGRESP comes back
        await wait_for(lambda: not client.connected, timeout=6, what="the keepalive to drop the connection")
        cable.release()
        await client.wait_connected(timeout=10)

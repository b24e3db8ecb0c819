"""MqttClient against a real mosquitto: round trips, QoS 1, ordering, login, backpressure, broker restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from edgetwin.testing import free_port, wait_for
from edgetwin.testing.mosquitto import BrokerLogin, MqttProbe
from eventbus import (
    BrokerSettings,
    EventBusClosedError,
    EventBusConnectionError,
    EventBusPublishError,
    MosquittoBroker,
    MqttClient,
    MqttMessage,
)
from tests.fixtures.mqtt import ProbeFactory


def fast(url: str, **fields: Any) -> BrokerSettings:
    """Settings that reconnect quickly, so restart tests stay short."""
    return BrokerSettings(url=url, reconnect_min=0.05, reconnect_max=0.2, **fields)


def topic_root() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


async def collect(client: MqttClient, count: int, timeout: float = 10.0) -> list[MqttMessage]:
    """The next ``count`` messages of the client."""
    received: list[MqttMessage] = []

    async def take() -> None:
        async for message in client.messages():
            received.append(message)
            if len(received) == count:
                return

    try:
        await asyncio.wait_for(take(), timeout)
    except TimeoutError:
        pytest.fail(f"received {len(received)} of {count} messages: {received[-3:]}")
    return received


@pytest.fixture
async def client(mosquitto: MosquittoBroker) -> AsyncIterator[MqttClient]:
    async with MqttClient(fast(mosquitto.url)) as client:
        yield client


async def test_publish_subscribe_round_trip(client: MqttClient) -> None:
    root = topic_root()
    await client.subscribe(f"{root}/#")
    await client.publish(f"{root}/a", b"\x00binary")
    await client.publish(f"{root}/b", "text", qos=0)
    first, second = await collect(client, 2)
    assert first == MqttMessage(f"{root}/a", b"\x00binary", qos=1, retain=False)
    assert (second.topic, second.payload, second.qos) == (f"{root}/b", b"text", 0)


async def test_qos1_publish_returns_once_the_broker_has_it(
    client: MqttClient, mqtt_probe: ProbeFactory
) -> None:
    root = topic_root()
    probe = mqtt_probe(f"{root}/#")
    await client.publish(f"{root}/x", "hello", qos=1)
    message = await probe.wait_message_async(f"{root}/x")
    assert (message.text, message.qos) == ("hello", 1)

    future = client.publish_nowait(f"{root}/y", "later")
    assert not future.done()  # handed to the connection, not yet acknowledged
    await future
    assert (await probe.wait_message_async(f"{root}/y")).text == "later"


async def test_thousand_publish_nowait_arrive_in_call_order(
    client: MqttClient, mqtt_probe: ProbeFactory
) -> None:
    root = topic_root()
    probe = mqtt_probe(f"{root}/#")
    await client.subscribe(f"{root}/#")
    # Three topics interleaved, as a twin publishes result → document → delta.
    kinds = ("result", "document", "delta")
    futures = [client.publish_nowait(f"{root}/{kinds[i % 3]}", str(i)) for i in range(1000)]
    await asyncio.gather(*futures)

    own = await collect(client, 1000)
    assert [int(m.payload) for m in own] == list(range(1000))
    assert [m.topic.rsplit("/", 1)[1] for m in own[:3]] == list(kinds)
    await wait_for(lambda: len(probe.received(f"{root}/#")) == 1000, what="the probe to see 1000 messages")
    assert [int(m.payload) for m in probe.received(f"{root}/#")] == list(range(1000))


async def test_unsubscribe_stops_delivery(client: MqttClient) -> None:
    root = topic_root()
    await client.subscribe(f"{root}/muted")
    await client.subscribe(f"{root}/marker")
    await client.unsubscribe(f"{root}/muted")
    await client.publish(f"{root}/muted", "dropped")
    await client.publish(f"{root}/marker", "end")
    (message,) = await collect(client, 1)
    assert message.topic == f"{root}/marker"


async def test_right_credentials_connect(mosquitto_auth: BrokerLogin) -> None:
    root = topic_root()
    async with MqttClient(mosquitto_auth.settings()) as client:
        assert client.connected
        await client.subscribe(f"{root}/#")
        await client.publish(f"{root}/x", "authorised")
        (message,) = await collect(client, 1)
        assert message.payload == b"authorised"


@pytest.mark.parametrize(("username", "password"), [("edgetwin", "wrong"), ("nobody", "x"), (None, None)])
async def test_wrong_credentials_fail_at_once_as_not_authorised(
    mosquitto_auth: BrokerLogin, username: str | None, password: str | None
) -> None:
    client = MqttClient(BrokerSettings(url=mosquitto_auth.url, username=username, password=password))
    started = time.monotonic()
    with pytest.raises(EventBusConnectionError) as info:
        await client.start(connect_timeout=10)
    assert "not authorised" in info.value.reason
    assert info.value.url == mosquitto_auth.url
    assert time.monotonic() - started < 5, "a refused login must not be retried until the timeout"
    assert not client.connected
    if password:
        assert password not in str(info.value)


async def test_unreachable_broker_times_out_with_the_last_error() -> None:
    client = MqttClient(fast(f"tcp://127.0.0.1:{free_port()}"))
    with pytest.raises(EventBusConnectionError) as info:
        await client.start(connect_timeout=0.5)
    assert "no connection within 0.5s" in info.value.reason
    assert "refused" in info.value.reason.lower()


async def test_broker_restart_mid_stream(
    mosquitto_private: MosquittoBroker, mqtt_probe: ProbeFactory
) -> None:
    root = topic_root()
    registry = CollectorRegistry()
    settings = fast(mosquitto_private.url)
    async with MqttClient(settings, registry=registry) as client:
        await client.subscribe(f"{root}/#")
        for i in range(20):
            client.publish_nowait(f"{root}/before", str(i))
        before = await collect(client, 20)
        assert [int(m.payload) for m in before] == list(range(20))

        await mosquitto_private.stop()
        await wait_for(lambda: not client.connected, what="the client to notice the broker is gone")
        # Published while disconnected: handed over after the reconnect, acknowledged then.
        while_down = [asyncio.ensure_future(client.publish(f"{root}/while-down", str(i))) for i in range(5)]
        await asyncio.sleep(0)
        assert not any(task.done() for task in while_down)

        await mosquitto_private.start()
        await client.wait_connected(timeout=10)
        await asyncio.gather(*while_down)
        # An outside app publishing after the restart reaches the client: it re-subscribed by itself.
        probe = mqtt_probe(url=mosquitto_private.url)
        probe.publish(f"{root}/after", "from-outside")

        received = await collect(client, 6)
        assert [m.payload.decode() for m in received if m.topic.endswith("while-down")] == [
            "0",
            "1",
            "2",
            "3",
            "4",
        ]
        assert [m.payload for m in received if m.topic.endswith("after")] == [b"from-outside"]
        assert registry.get_sample_value("edgetwin_mqtt_reconnects_total", {"client": client.client_id}) == 1
        assert registry.get_sample_value("edgetwin_mqtt_connected", {"client": client.client_id}) == 1


async def test_subscribe_while_disconnected_takes_effect_on_reconnect(
    mosquitto_private: MosquittoBroker,
) -> None:
    root = topic_root()
    async with MqttClient(fast(mosquitto_private.url)) as client:
        await mosquitto_private.stop()
        await wait_for(lambda: not client.connected)
        subscribing = asyncio.ensure_future(client.subscribe(f"{root}/#"))
        await mosquitto_private.start()
        await asyncio.wait_for(subscribing, 10)
        with MqttProbe(mosquitto_private.url) as probe:
            probe.publish(f"{root}/x", "hi")
        (message,) = await collect(client, 1)
        assert message.payload == b"hi"


async def test_full_window_makes_publish_wait(mosquitto_private: MosquittoBroker) -> None:
    root = topic_root()
    settings = fast(mosquitto_private.url, max_inflight=5)
    async with MqttClient(settings) as client:
        await client.subscribe(f"{root}/#")
        await mosquitto_private.stop()
        await wait_for(lambda: not client.connected)
        futures = [client.publish_nowait(f"{root}/x", str(i)) for i in range(5)]
        sixth = asyncio.ensure_future(client.publish(f"{root}/x", "5"))
        for _ in range(5):
            await asyncio.sleep(
                0
            )  # let the task run up to where it waits (only a reconnect can free the window)
        assert not sixth.done(), "publish must wait while the in-flight window is full"
        # publish_nowait never waits: it queues behind the window (after "0".."4", before the waiting "5").
        extra = client.publish_nowait(f"{root}/x", "6")

        await mosquitto_private.start()
        await asyncio.wait_for(asyncio.gather(*futures, sixth, extra), 10)
        received = await collect(client, 7)
        assert [int(m.payload) for m in received] == [0, 1, 2, 3, 4, 6, 5]


async def test_stop_ends_iteration_and_fails_later_use(mosquitto: MosquittoBroker) -> None:
    client = MqttClient(BrokerSettings(url=mosquitto.url))
    await client.start()

    async def drain() -> list[MqttMessage]:
        return [message async for message in client.messages()]

    iteration = asyncio.ensure_future(drain())
    await client.stop()
    await client.stop()  # idempotent
    assert await asyncio.wait_for(iteration, 5) == []
    assert not client.connected
    with pytest.raises(EventBusClosedError):
        await client.publish("test/x", "late")
    with pytest.raises(EventBusClosedError):
        await client.subscribe("test/#")


async def test_invalid_publish_is_refused_synchronously(client: MqttClient) -> None:
    for topic in ("", "a/+/b", "a/#"):
        with pytest.raises(EventBusPublishError):
            client.publish_nowait(topic, "x")


async def test_metrics_count_messages(mosquitto: MosquittoBroker) -> None:
    registry = CollectorRegistry()
    root = topic_root()
    async with MqttClient(BrokerSettings(url=mosquitto.url), registry=registry) as c:
        await c.subscribe(f"{root}/#")
        for i in range(3):
            await c.publish(f"{root}/x", str(i))
        await collect(c, 3)
        labels = {"client": c.client_id}
        assert registry.get_sample_value("edgetwin_mqtt_messages_published_total", labels) == 3
        assert registry.get_sample_value("edgetwin_mqtt_messages_received_total", labels) == 3
        assert registry.get_sample_value("edgetwin_mqtt_publish_errors_total", labels) == 0
        assert registry.get_sample_value("edgetwin_mqtt_inflight", labels) == 0

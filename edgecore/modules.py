"""edgecore's supervised modules: the managed mosquitto, the EventBus connection and the DeviceTwin.

Each module builds what it runs afresh in ``start()`` and releases it in ``stop()``, so a restart after a
crash begins from a clean state; what must outlive a restart (twins, subscribed topics) is in SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter

from devicetwin import CloudSink, DeviceTwin, TwinDevice, TwinStore
from edgecore.errors import EdgeCoreError
from edgecore.subtopics import SubTopicStore
from eventbus import BrokerSettings, MosquittoBroker, MqttClient, MqttMessage, parse_broker_url, topics

__all__ = [
    "BrokerExitedError",
    "DeviceTwinModule",
    "EventBusModule",
    "MosquittoModule",
    "UploadSink",
]

log = logging.getLogger(__name__)

# How often the mosquitto module looks whether its process is still alive (a child cannot be awaited
# from asyncio without owning it through asyncio's subprocess API, which MosquittoBroker does not use).
BROKER_POLL_SECONDS = 0.2


class BrokerExitedError(EdgeCoreError):
    """The managed mosquitto process exited; ``log_tail`` is the end of its log."""

    def __init__(self, url: str, log_tail: str) -> None:
        super().__init__(f"mosquitto {url} exited; log tail:\n{log_tail}")
        self.url = url
        self.log_tail = log_tail


class UploadSink(Protocol):
    """Where uploads and messages on extra topics go, as they are (the cloud link, when there is one)."""

    async def upload(self, topic: str, payload: bytes) -> None:
        """Hand one MQTT message to the cloud."""


class MosquittoModule:
    """The broker edgecore runs itself in internal mode (``mqttMode: 0``), on ``mqttServerInternal``.

    ``workdir`` (its configuration, log and pid file) is the same at every start of the same edgecore, so a
    restarted edgecore stops the broker its predecessor left running when it was killed (``kill -9``),
    instead of failing forever on a port that broker still holds.
    """

    name = "mosquitto"

    def __init__(self, url: str, *, workdir: Path, users: dict[str, str] | None = None) -> None:
        address = parse_broker_url(url)
        self._host, self._port, self._users = address.host, address.port, users
        self._workdir = workdir
        self._broker: MosquittoBroker | None = None

    @property
    def pid(self) -> int | None:
        """The broker's process id while it runs."""
        return self._broker.pid if self._broker is not None else None

    async def start(self) -> None:
        """Start mosquitto (after stopping one a killed predecessor left) and wait until it accepts
        connections."""
        self._broker = MosquittoBroker(self._port, host=self._host, workdir=self._workdir, users=self._users)
        await self._broker.start()
        log.info("internal mosquitto running", extra={"url": self._broker.url, "pid": self._broker.pid})

    async def wait(self) -> None:
        """Raise :class:`BrokerExitedError` when mosquitto dies."""
        broker = self._broker
        if broker is None:
            return
        while broker.running:  # noqa: ASYNC110 - a Popen child gives no event to wait on
            await asyncio.sleep(BROKER_POLL_SECONDS)
        raise BrokerExitedError(broker.url, broker.log_tail(10))

    async def stop(self) -> None:
        """Stop mosquitto (its directory stays, with the log)."""
        broker, self._broker = self._broker, None
        if broker is not None:
            await broker.stop()


class EventBusModule:
    """edgecore's own MQTT connection: uploads and the extra topics of ``sub_topics``, handed on as they are.

    With no upload sink (no cloud yet) each message is counted and logged.
    """

    name = "eventbus"

    def __init__(
        self,
        settings: BrokerSettings,
        sub_topics: SubTopicStore,
        *,
        qos: int,
        client_id: str | None,
        registry: CollectorRegistry,
        uploads: UploadSink | None,
    ) -> None:
        self._settings = settings
        self._sub_topics = sub_topics
        self._qos = qos
        self._client_id = client_id
        self._registry = registry
        self._uploads = uploads
        self._client: MqttClient | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._forwarded = Counter(
            "edgetwin_edgecore_uploads",
            "Messages on upload topics and extra subscriptions, by kind and what became of them",
            ["kind", "result"],
            registry=registry,
        )

    async def start(self) -> None:
        """Connect, subscribe the upload topics and every stored extra topic, and start forwarding."""
        client = MqttClient(self._settings, client_id=self._client_id, registry=self._registry)
        await client.start()
        self._client = client
        try:
            for topic_filter in (
                topics.UPLOAD_FILTER,
                topics.UPLOAD_RECORDS,
                *await self._sub_topics.topics(),
            ):
                await client.subscribe(topic_filter, qos=self._qos)
        except BaseException:
            await self.stop()
            raise
        self._dispatcher = asyncio.create_task(self._dispatch(client), name="edgecore-eventbus")

    async def wait(self) -> None:
        """Return or raise when forwarding stops on its own."""
        if self._dispatcher is not None:
            await self._dispatcher

    async def stop(self) -> None:
        """Stop forwarding and disconnect."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is not None:
            dispatcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await dispatcher
        client, self._client = self._client, None
        if client is not None:
            await client.stop()

    async def subscribe(self, topic_filter: str) -> None:
        """Subscribe an extra topic now (it is subscribed at every start once stored)."""
        if self._client is not None:
            await self._client.subscribe(topic_filter, qos=self._qos)

    async def unsubscribe(self, topic_filter: str) -> None:
        """Drop an extra topic now."""
        if self._client is not None:
            await self._client.unsubscribe(topic_filter)

    async def _dispatch(self, client: MqttClient) -> None:
        async for message in client.messages():
            await self._forward(message)

    async def _forward(self, message: MqttMessage) -> None:
        parsed = topics.parse_topic(message.topic)
        kind = parsed.kind.value if parsed is not None else "sub_topic"
        extra = {"topic": message.topic, "bytes": len(message.payload)}
        if self._uploads is None:
            self._forwarded.labels(kind, "no_cloud").inc()
            log.info("upload not forwarded: no cloud configured", extra=extra)
            return
        try:
            await self._uploads.upload(message.topic, message.payload)
        except Exception:
            # One message the cloud link refuses must not stop the forwarding of the next ones.
            self._forwarded.labels(kind, "failed").inc()
            log.exception("upload to the cloud failed", extra=extra)
        else:
            self._forwarded.labels(kind, "forwarded").inc()


class DeviceTwinModule:
    """The twin with its SQLite store and its own MQTT connection; declares the devices at each start."""

    name = "devicetwin"

    def __init__(
        self,
        database: Path,
        settings: BrokerSettings,
        node_name: str,
        *,
        client_id: str | None,
        registry: CollectorRegistry,
        cloud: CloudSink | None,
    ) -> None:
        self._database = database
        self._settings = settings
        self._node_name = node_name
        self.devices: Sequence[TwinDevice] = ()
        """The devices declared to the twin at each start (from the devices directory)."""
        self._client_id = client_id
        self._registry = registry
        self._cloud = cloud
        self._twin: DeviceTwin | None = None
        self._resources = contextlib.AsyncExitStack()

    @property
    def twin(self) -> DeviceTwin | None:
        """The running twin (None while the module is stopped)."""
        return self._twin

    async def start(self) -> None:
        """Open the store, connect, start the twin and declare the devices of the devices directory."""
        async with contextlib.AsyncExitStack() as stack:
            store = await TwinStore.open(self._database, registry=self._registry)
            stack.push_async_callback(store.close)
            client = MqttClient(self._settings, client_id=self._client_id, registry=self._registry)
            await client.start()
            stack.push_async_callback(client.stop)
            twin = DeviceTwin(store, client, self._node_name, registry=self._registry, cloud=self._cloud)
            await twin.start()
            stack.push_async_callback(twin.stop)
            # Declared together, so the store commits them in a few transactions rather than one each.
            await asyncio.gather(*(twin.upsert_device(device) for device in self.devices))
            self._resources = stack.pop_all()
        self._twin = twin

    async def wait(self) -> None:
        """Return or raise when the twin stops serving (its consumer ended or crashed)."""
        if self._twin is not None:
            await self._twin.wait()

    async def stop(self) -> None:
        """Stop the twin (queued work finishes), disconnect, then flush and close the store."""
        self._twin = None
        resources, self._resources = self._resources, contextlib.AsyncExitStack()
        await resources.aclose()

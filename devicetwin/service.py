"""DeviceTwin: the edge's device state, served over KubeEdge's ``$hw/events`` topics and a typed Python API.

Each device has a serial lane (:mod:`devicetwin.lanes`): its MQTT requests and API calls run one after another
in arrival order, while other devices are served side by side. A write is committed to SQLite before anything
about it is published; then come, in this order, the result, the document (if something changed), the delta
(if a desired value differs from the reported one) and the hand-over to the cloud sink.

A device's ``twin/update`` requests that queue up while its lane is busy are served together: applied one
after another, in order, and committed in one write, so that a steady stream of one device's updates does not
wait for one commit each. Such a group is committed whole or not at all (each update builds on the one
before); any other request or API call closes the group, so that the arrival order holds.

Replies mirror the request's topic form (a legacy one-segment id is answered on the legacy topic). Messages
the edge originates for a device (delta after a cloud change, ``updated``) use the form the device's apps
used last, the namespaced one by default.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TypeVar

from prometheus_client import CollectorRegistry

from device_models import (
    AttributesUpdated,
    DeviceStateInfo,
    EdgetwinError,
    MembershipDevice,
    MembershipGetRequest,
    MembershipGetResult,
    MembershipUpdated,
    MsgAttr,
    MsgTwin,
    StateUpdateRequest,
    StateUpdateResult,
    TwinGetRequest,
    TwinGetResult,
    TwinSync,
    TwinUpdateRequest,
    TwinValidationError,
    WireModel,
    new_event_id,
    now_ms,
)
from devicetwin.cloud import (
    UPDATE_OPERATION,
    CloudSink,
    CloudUpdateResult,
    state_update_resource,
    twin_edge_updated_resource,
)
from devicetwin.devices import DeviceSnapshot, TwinDevice
from devicetwin.errors import DeviceNotFoundError, DeviceTwinError, TwinRequestError, TwinStoreError
from devicetwin.lanes import SerialLanes
from devicetwin.metrics import TwinMetrics
from devicetwin.state import (
    TwinChange,
    apply_cloud_update,
    apply_edge_update,
    apply_state,
    check_update_request,
    declare_device,
    delta_of,
)
from devicetwin.store import DeleteDevice, PutDevice, TwinStore, WriteOp, coalesce
from devicetwin.wire import (
    decode_request,
    encode_delta,
    encode_document,
    encode_update_result,
    error_result,
    peek_event_id,
)
from eventbus import EventBusError, MqttClient, MqttMessage, TopicError, topics
from eventbus.topics import Topic, TopicKind

logger = logging.getLogger(__name__)

#: How long :meth:`DeviceTwin.stop` lets queued work finish before cancelling it.
STOP_GRACE = 5.0

_ERROR_KINDS = (DeviceTwinError, TwinValidationError)

T = TypeVar("T")


class DeviceTwin:
    """The edge's device twin: state in SQLite, handlers for every ``$hw/events`` topic, a Python API.

    ``store`` and ``client`` belong to the caller (open / started before :meth:`start`, closed after
    :meth:`stop`). ``cloud`` receives ``device/<id>/twin/edge_updated`` after edge writes and
    ``device/<id>/state/update`` after state changes.
    """

    def __init__(
        self,
        store: TwinStore,
        client: MqttClient,
        node_name: str,
        *,
        registry: CollectorRegistry | None = None,
        cloud: CloudSink | None = None,
    ) -> None:
        """Wire the twin; nothing runs before :meth:`start`."""
        self.name = "devicetwin"
        self.node_name = node_name
        self._store = store
        self._client = client
        self._cloud = cloud
        self._metrics = TwinMetrics.for_registry(registry)
        self._devices: dict[str, DeviceSnapshot] = {}
        # Devices whose apps last used the legacy one-segment topics (edge-originated messages follow them).
        self._legacy: set[str] = set()
        self._lanes = SerialLanes(on_depth=self._metrics.queue_depth.labels("devices").set)
        # Per device, the twin/update requests of a queued job that has not started yet: later ones join it.
        self._open_updates: dict[str, list[tuple[Topic, bytes]]] = {}
        self._consumer: asyncio.Task[None] | None = None
        self._handlers = {
            TopicKind.TWIN_GET: self._on_twin_get,
            TopicKind.STATE_UPDATE: self._on_state_update,
        }
        # The counters' children, looked up once: a labels() call costs more than the increment.
        self._counted_in = {kind: self._metrics.messages_in.labels(kind.value) for kind in TopicKind}
        self._counted_out = {kind: self._metrics.messages_out.labels(kind.value) for kind in TopicKind}

    @property
    def subscriptions(self) -> tuple[str, ...]:
        """The topic filters the twin serves: device requests in both id forms, the node's membership."""
        device_kinds = (TopicKind.TWIN_UPDATE, TopicKind.TWIN_GET, TopicKind.STATE_UPDATE)
        return (
            *(topic_filter for kind in device_kinds for topic_filter in topics.device_filters(kind)),
            topics.node_filter(TopicKind.MEMBERSHIP_GET, self.node_name),
        )

    async def start(self) -> None:
        """Load every device from the store, subscribe, and start serving requests."""
        if self._consumer is not None:
            return
        self._devices = {device.id: device for device in await self._store.load()}
        for topic_filter in self.subscriptions:
            await self._client.subscribe(topic_filter, qos=1)
        self._consumer = asyncio.get_running_loop().create_task(self._consume(), name="devicetwin-consumer")
        logger.info("device twin started with %d devices", len(self._devices), extra={"node": self.node_name})

    async def wait(self) -> None:
        """Return (or raise) when the running twin has stopped serving: its client's messages ended.

        This is how edgecore's supervisor learns that the module needs a restart.
        """
        if self._consumer is None:
            raise RuntimeError("DeviceTwin.wait() called before start()")
        await asyncio.shield(self._consumer)

    async def stop(self) -> None:
        """Stop taking requests, let queued ones finish (up to :data:`STOP_GRACE` s), cancel the rest."""
        consumer, self._consumer = self._consumer, None
        if consumer is None:
            return
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        try:
            await asyncio.wait_for(self._lanes.wait_idle(), STOP_GRACE)
        except TimeoutError:
            logger.warning("device twin stopped with work still queued", extra={"node": self.node_name})
        await self._lanes.cancel()
        # Groups whose jobs were dropped: after a restart, new requests must start jobs of their own.
        self._open_updates.clear()

    # --- Python API -------------------------------------------------------------------------------------

    async def upsert_device(self, device: TwinDevice) -> None:
        """Add ``device`` or update it; it is known to the twin (``twin/get``, ``twin/update``) on return.

        Publishes ``membership/updated`` when the device is new or its description, attributes, spec or model
        changed, ``updated`` when attributes changed, a document for changed properties and a delta when a
        desired value differs from the reported one. Raises :class:`TwinRequestError` or
        :class:`TwinValidationError` for an invalid declaration, :class:`TwinStoreError` if the store fails.
        """
        try:
            device_id = topics.device_id(device.namespace, device.name)
        except TopicError as exc:
            raise TwinRequestError(f"invalid device id {device.id!r}: {exc}") from exc
        await self._run(device_id, partial(self._upsert, device))

    async def remove_device(self, device_id: str) -> None:
        """Remove a device with its twins and attributes; publishes ``membership/updated`` (removed).

        Raises :class:`DeviceNotFoundError` if the device is not known.
        """
        await self._run(device_id, partial(self._remove, device_id))

    async def apply_cloud_update(
        self, device_id: str, twins: Mapping[str, MsgTwin | None], *, event_id: str | None = None
    ) -> CloudUpdateResult:
        """Apply a twin update from the cloud (``twin/cloud_updated``, twins with versions).

        Properties whose local versions are newer are refused, and the edge's twin goes back to the cloud sink
        as ``twin/edge_updated``. Publishes a document for what changed and a delta if one is due.
        """
        return await self._run(device_id, partial(self._cloud_update, device_id, twins, event_id))

    async def get_twin(self, device_id: str) -> dict[str, MsgTwin]:
        """The device's live properties, with versions; raises :class:`DeviceNotFoundError`."""
        return self._device(device_id).live_twins()

    def list_devices(self) -> list[DeviceSnapshot]:
        """Every device known to the twin, ordered by id."""
        return [self._devices[device_id] for device_id in sorted(self._devices)]

    # --- MQTT side --------------------------------------------------------------------------------------

    async def _consume(self) -> None:
        async for message in self._client.messages():
            try:
                self._dispatch(message)
            except Exception:  # one message must never end the service
                logger.exception("cannot dispatch a message on %s", message.topic)
        logger.warning("the MQTT client stopped delivering messages", extra={"node": self.node_name})

    def _dispatch(self, message: MqttMessage) -> None:
        topic = topics.parse_topic(message.topic)
        kind = topic.kind if topic is not None else TopicKind.UNKNOWN
        self._counted_in[kind].inc()
        handler = self._handlers.get(kind)
        if topic is not None and kind is TopicKind.TWIN_UPDATE and topic.device_id is not None:
            self._queue_update(topic, topic.device_id, message.payload)
        elif topic is not None and handler is not None and topic.device_id is not None:
            self._submit(topic.device_id, partial(handler, topic, topic.device_id, message.payload))
        elif topic is not None and kind is TopicKind.MEMBERSHIP_GET and topic.node == self.node_name:
            job = partial(self._on_membership_get, topic, message.payload)
            self._lanes.submit(f"node:{self.node_name}", job)
        else:
            logger.debug("ignored message on %s", message.topic)

    def _queue_update(self, topic: Topic, device_id: str, payload: bytes) -> None:
        """Add a ``twin/update`` to the device's open group, or start a group with a job of its own."""
        group = self._open_updates.get(device_id)
        if group is None:
            group = self._open_updates[device_id] = []
            self._lanes.submit(device_id, partial(self._on_twin_updates, device_id, group))
        group.append((topic, payload))

    def _submit(self, device_id: str, job: Callable[[], Awaitable[None]]) -> None:
        """Queue any other job on the device's lane; ``twin/update`` requests after it queue behind it."""
        self._open_updates.pop(device_id, None)
        self._lanes.submit(device_id, job)

    async def _run(self, device_id: str, job: Callable[[], Awaitable[T]]) -> T:
        """:meth:`_submit` for API calls, which wait for their job's result."""
        self._open_updates.pop(device_id, None)
        return await self._lanes.run(device_id, job)

    async def _on_twin_updates(self, device_id: str, group: list[tuple[Topic, bytes]]) -> None:
        """Apply a group of ``twin/update`` requests in order, commit them in one write, then answer each."""
        if self._open_updates.get(device_id) is group:
            del self._open_updates[device_id]  # from now on, new requests start a group of their own
        device = self._devices.get(device_id)
        outcomes: list[tuple[Topic, str, TwinChange | EdgetwinError]] = []
        writes: list[WriteOp] = []
        for topic, payload in group:
            event_id = ""
            try:
                request = decode_request(payload, TwinUpdateRequest)
                event_id = request.event_id
                if request.twin is None:
                    raise TwinRequestError("the update has no twin")
                check_update_request(request.twin)
                if device is None:
                    raise DeviceNotFoundError(device_id)
                change = apply_edge_update(device, request.twin, now_ms())
            except _ERROR_KINDS as exc:
                outcomes.append((topic, event_id or peek_event_id(payload), exc))
                continue
            device = change.device
            writes.extend(change.writes)
            outcomes.append((topic, event_id, change))
        if writes and device is not None:
            try:
                await self._store.write(coalesce(writes))
            except TwinStoreError as exc:
                # Each update builds on the one before it: none of the group was kept.
                outcomes = [
                    (topic, event_id, exc if isinstance(outcome, TwinChange) else outcome)
                    for topic, event_id, outcome in outcomes
                ]
            else:
                self._devices[device_id] = device
        for topic, event_id, outcome in outcomes:
            self._note_form(topic, device_id)
            if isinstance(outcome, EdgetwinError):
                self._answer_error(topic, TopicKind.TWIN_UPDATE_RESULT, event_id, outcome)
            else:
                await self._answer_update(topic, device_id, event_id, outcome)

    async def _answer_update(self, topic: Topic, device_id: str, event_id: str, change: TwinChange) -> None:
        """Result, document, delta and cloud sync of one committed update."""
        result = encode_update_result(event_id, now_ms(), change.result)
        self._publish_bytes(topic.reply(TopicKind.TWIN_UPDATE_RESULT), TopicKind.TWIN_UPDATE_RESULT, result)
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "twin updated: %s",
                ", ".join(change.result),
                extra={"device": device_id, "event_id": event_id},
            )
        await self._announce(change, event_id)
        if change.sync and self._cloud is not None:
            await self._send_cloud(
                device_id,
                twin_edge_updated_resource(device_id),
                TwinSync(event_id=new_event_id(), timestamp=now_ms(), twin=change.sync),
            )

    async def _on_twin_get(self, topic: Topic, device_id: str, payload: bytes) -> None:
        self._note_form(topic, device_id)
        event_id = ""
        try:
            request = decode_request(payload, TwinGetRequest)
            event_id = request.event_id
            twins = self._device(device_id).live_twins()
        except _ERROR_KINDS as exc:
            self._answer_error(topic, TopicKind.TWIN_GET_RESULT, event_id or peek_event_id(payload), exc)
            return
        result = TwinGetResult(event_id=event_id, timestamp=now_ms(), twin=twins)
        self._publish(topic.reply(TopicKind.TWIN_GET_RESULT), TopicKind.TWIN_GET_RESULT, result)

    async def _on_state_update(self, topic: Topic, device_id: str, payload: bytes) -> None:
        self._note_form(topic, device_id)
        event_id = ""
        try:
            request = decode_request(payload, StateUpdateRequest)
            event_id = request.event_id
            device = apply_state(self._device(device_id), request.state)
            await self._store.write([PutDevice(device.record)])
            self._devices[device_id] = device
        except _ERROR_KINDS as exc:
            self._answer_error(topic, TopicKind.STATE_UPDATE_RESULT, event_id or peek_event_id(payload), exc)
            return
        info = DeviceStateInfo(
            name=device.name, state=device.record.state, lastOnlineTime=device.record.last_online or None
        )
        # KubeEdge answers with a fresh event id, not the request's.
        result = StateUpdateResult(event_id=new_event_id(), timestamp=now_ms(), device=info)
        self._publish(topic.reply(TopicKind.STATE_UPDATE_RESULT), TopicKind.STATE_UPDATE_RESULT, result)
        logger.info("device state %s", device.record.state, extra={"device": device_id, "event_id": event_id})
        await self._send_cloud(device_id, state_update_resource(device_id), result)

    async def _on_membership_get(self, topic: Topic, payload: bytes) -> None:
        event_id = ""
        try:
            event_id = decode_request(payload, MembershipGetRequest).event_id
        except _ERROR_KINDS as exc:
            self._answer_error(topic, TopicKind.MEMBERSHIP_GET_RESULT, peek_event_id(payload), exc)
            return
        devices = [_membership_entry(device) for device in self.list_devices()]
        result = MembershipGetResult(event_id=event_id, timestamp=now_ms(), devices=devices)
        self._publish(topic.reply(TopicKind.MEMBERSHIP_GET_RESULT), TopicKind.MEMBERSHIP_GET_RESULT, result)

    # --- API work, on the device's lane -----------------------------------------------------------------

    async def _upsert(self, device: TwinDevice) -> None:
        declaration = declare_device(self._devices.get(device.id), device, now_ms())
        change = declaration.change
        if not change.writes:
            return
        await self._commit(change)
        logger.info("device %s", "added" if declaration.is_new else "updated", extra={"device": device.id})
        if declaration.membership_changed:
            entry = _membership_entry(change.device, with_twin=True)
            updated = MembershipUpdated(event_id=new_event_id(), timestamp=now_ms(), added_devices=[entry])
            self._publish_membership(updated)
        if declaration.attributes:
            attributes = AttributesUpdated(
                event_id=new_event_id(), timestamp=now_ms(), attributes=declaration.attributes
            )
            self._publish_device(TopicKind.DEVICE_UPDATED, device.id, attributes)
        await self._announce(change, new_event_id())

    async def _remove(self, device_id: str) -> None:
        device = self._device(device_id)
        await self._store.write([DeleteDevice(device_id)])
        del self._devices[device_id]
        self._legacy.discard(device_id)
        logger.info("device removed", extra={"device": device_id})
        removed = MembershipDevice(id=device_id, name=device.name)
        self._publish_membership(
            MembershipUpdated(event_id=new_event_id(), timestamp=now_ms(), removed_devices=[removed])
        )

    async def _cloud_update(
        self, device_id: str, twins: Mapping[str, MsgTwin | None], event_id: str | None
    ) -> CloudUpdateResult:
        change = apply_cloud_update(self._device(device_id), twins, now_ms())
        await self._commit(change)
        if change.rejected:
            logger.warning(
                "cloud twin update refused for %s", ", ".join(change.rejected), extra={"device": device_id}
            )
        await self._announce(change, event_id or new_event_id())
        if change.sync:
            # The edge holds newer twins: they win and go back to the cloud.
            await self._send_cloud(
                device_id,
                twin_edge_updated_resource(device_id),
                TwinSync(event_id=new_event_id(), timestamp=now_ms(), twin=change.sync),
            )
        return CloudUpdateResult(applied=tuple(change.document), rejected=dict(change.rejected))

    # --- helpers ----------------------------------------------------------------------------------------

    def _device(self, device_id: str) -> DeviceSnapshot:
        device = self._devices.get(device_id)
        if device is None:
            raise DeviceNotFoundError(device_id)
        return device

    async def _commit(self, change: TwinChange) -> None:
        """Make ``change`` durable, then visible: the cache follows the store, never leads it."""
        if change.writes:
            await self._store.write(change.writes)
        self._devices[change.device.id] = change.device

    async def _announce(self, change: TwinChange, event_id: str) -> None:
        """Publish the document of a committed change, then the device's delta if one is due."""
        if not change.document:
            return
        device_id = change.device.id
        document = encode_document(event_id, now_ms(), change.document)
        self._publish_device(TopicKind.TWIN_UPDATE_DOCUMENT, device_id, document)
        delta = delta_of(change.device)
        if delta:
            message = encode_delta(new_event_id(), now_ms(), change.device.live_twins(), delta)
            self._publish_device(TopicKind.TWIN_UPDATE_DELTA, device_id, message)

    def _note_form(self, topic: Topic, device_id: str) -> None:
        """Remember the topic form the device's apps use (called on the device's lane, in request order)."""
        if topic.legacy and device_id in self._devices:
            self._legacy.add(device_id)
        else:
            self._legacy.discard(device_id)

    def _publish_device(self, kind: TopicKind, device_id: str, message: WireModel | bytes) -> None:
        """Publish an edge-originated message about a device, on the topic form its apps use."""
        namespace, name = topics.split_device_id(device_id)
        topic = topics.device_topic(kind, namespace, name, legacy=device_id in self._legacy)
        self._publish_bytes(topic, kind, message if isinstance(message, bytes) else message.to_json())

    def _answer_error(self, topic: Topic, kind: TopicKind, event_id: str, error: EdgetwinError) -> None:
        result = error_result(event_id, error)
        self._metrics.errors.labels(str(result.code)).inc()
        logger.info(
            "request refused (%d): %s",
            result.code,
            result.reason,
            extra={"device": topic.device_id, "event_id": event_id, "topic": topic.topic},
        )
        self._publish(topic.reply(kind), kind, result)

    def _publish_membership(self, message: MembershipUpdated) -> None:
        topic = topics.node_topic(TopicKind.MEMBERSHIP_UPDATED, self.node_name)
        self._publish(topic, TopicKind.MEMBERSHIP_UPDATED, message)

    def _publish(self, topic: str, kind: TopicKind, message: WireModel) -> None:
        """Hand ``message`` to the client in call order: result, document, delta keep theirs on the wire."""
        self._publish_bytes(topic, kind, message.to_json())

    def _publish_bytes(self, topic: str, kind: TopicKind, payload: bytes) -> None:
        """:meth:`_publish` of a message already written as JSON."""
        try:
            delivered = self._client.publish_nowait(topic, payload, qos=1)
        except EventBusError:
            logger.exception("cannot publish on %s", topic)
            return
        delivered.add_done_callback(partial(_log_publish_failure, topic))
        self._counted_out[kind].inc()

    async def _send_cloud(self, device_id: str, resource: str, message: WireModel) -> None:
        if self._cloud is None:
            return
        try:
            await self._cloud.send(resource, UPDATE_OPERATION, message.to_dict())
        except Exception:
            logger.exception("cloud sink refused %s", resource, extra={"device": device_id})


def _log_publish_failure(topic: str, delivered: asyncio.Future[None]) -> None:
    if not delivered.cancelled() and delivered.exception() is not None:
        logger.warning("publish on %s failed: %s", topic, delivered.exception())


def _membership_entry(device: DeviceSnapshot, *, with_twin: bool = False) -> MembershipDevice:
    """The device as membership messages list it; empty fields are left out, as KubeEdge does."""
    attributes: dict[str, MsgAttr] = dict(device.attributes)
    return MembershipDevice(
        id=device.id,
        name=device.name,
        description=device.record.description or None,
        state=device.record.state or None,
        last_online=device.record.last_online or None,
        attributes=attributes or None,
        twin=dict(device.live_twins()) if with_twin else None,
        spec=dict(device.record.spec) if device.record.spec is not None else None,
        model=dict(device.record.model) if device.record.model is not None else None,
    )

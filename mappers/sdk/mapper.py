"""A mapper: learns its devices, runs one :class:`~mappers.sdk.runner.DeviceRunner` each, speaks MQTT only.

Devices come from the edge (``membership/get`` -> ``membership/get/result``, then ``membership/updated`` on
``$hw/events/node/<node>/...``), so devices created before the mapper started are picked up (KubeEdge #5021),
or from Device / DeviceModel files given at start (standalone). An entry that arrives again unchanged (the
edge repeats membership after state changes) leaves its device running: only a changed spec or model
restarts it (KubeEdge #6269). No rate limiter sits between devices and the broker (KubeEdge #5892).

Topics (CONTRACTS.md §1), for device ``<ns>/<name>``:

* publishes ``twin/update`` (reported ``actual`` values with ``metadata.type``), ``state/update`` (online,
  unhealthy, offline), ``twin/get`` (once per device, to learn desired values set before it started), and,
  with ``push_data``, ``$ke/events/device/<ns>/<name>/data/update``;
* subscribes ``twin/update/delta`` (desired values to write) and ``twin/get/result``.

**[ext] Refused desired values** are answered on the device's ``twin/update/result`` topic, where the app
that set the value already listens: ``{event_id, timestamp, code, reason, property}`` with the delta's
``event_id``; code 400 when the value is refused (ReadOnly, wrong type, outside minimum..maximum, does not fit
the register) and the device is left untouched, 500 when the device failed the write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry

from device_models import (
    ErrorResult,
    MembershipDevice,
    MembershipGetRequest,
    MembershipGetResult,
    MembershipUpdated,
    MsgTwin,
    StateUpdateRequest,
    TwinDelta,
    TwinGetRequest,
    TwinGetResult,
    TwinUpdateRequest,
    TwinValue,
    TypeMetadata,
    ValueMetadata,
    canonical_protocol_name,
    new_event_id,
    now_ms,
)
from eventbus import (
    Backoff,
    BackoffPolicy,
    BrokerSettings,
    EventBusError,
    MqttClient,
    MqttMessage,
    TopicKind,
    parse_topic,
    topics,
)
from mappers.sdk.devices import membership_config, membership_protocol
from mappers.sdk.driver import DeviceConfig, ProtocolPlugin
from mappers.sdk.errors import MapperConfigError, PropertyError, ValueRefusedError
from mappers.sdk.metrics import MapperMetrics
from mappers.sdk.runner import DeviceRunner, DeviceState, Report

log = logging.getLogger(__name__)

# Reports are state, not events: when the broker is away this long, newer reports beat queued ones.
_MAX_UNACKNOWLEDGED = 10_000
_MEMBERSHIP_RETRY = BackoffPolicy(minimum=2.0, maximum=30.0)


class Mapper:
    """One protocol's mapper for one edge node. ``await start()``, then ``await stop()``."""

    def __init__(
        self,
        plugin: ProtocolPlugin,
        broker: BrokerSettings,
        *,
        node: str,
        devices: Sequence[DeviceConfig] | None = None,
        registry: CollectorRegistry | None = None,
        push_data: bool = False,
        reconnect: BackoffPolicy | None = None,
    ) -> None:
        """``devices`` given: drive exactly those (standalone); else ask the edge for the node's devices."""
        self.node = node
        self._plugin = plugin
        self._protocol = canonical_protocol_name(plugin.name)
        self._client = MqttClient(broker, registry=registry)
        self._metrics = MapperMetrics(registry)
        self._static = devices
        self._push_data = push_data
        self._reconnect = reconnect or BackoffPolicy()
        self._runners: dict[str, DeviceRunner] = {}
        self._refused: dict[str, str] = {}
        self._asked: set[str] = set()
        self._membership_known = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._unacknowledged = 0

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up."""
        return self._client.connected

    @property
    def devices(self) -> dict[str, DeviceState | None]:
        """The devices being driven and their last reported state (``None`` before the first one)."""
        return {device: runner.state for device, runner in self._runners.items()}

    @property
    def refused(self) -> dict[str, str]:
        """Devices that cannot be driven, with the reason (the field to fix)."""
        return dict(self._refused)

    async def start(self) -> None:
        """Connect to the broker, subscribe, then start driving devices (raises ``EventBusError``)."""
        await self._client.start()
        filters = [
            *topics.device_filters(TopicKind.TWIN_UPDATE_DELTA),
            *topics.device_filters(TopicKind.TWIN_GET_RESULT),
        ]
        if self._static is None:
            filters += [
                topics.node_topic(TopicKind.MEMBERSHIP_GET_RESULT, self.node),
                topics.node_topic(TopicKind.MEMBERSHIP_UPDATED, self.node),
            ]
        for topic_filter in filters:
            await self._client.subscribe(topic_filter)
        self._tasks.append(asyncio.create_task(self._listen(), name="mapper listener"))
        if self._static is None:
            self._tasks.append(asyncio.create_task(self._ask_membership(), name="mapper membership"))
        else:
            for device in self._static:
                await self._attach(device)
        log.info("%s mapper started", self._protocol, extra={"node": self.node})

    async def stop(self) -> None:
        """Stop every device (closing its connection) and disconnect from the broker."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        await asyncio.gather(*(runner.stop() for runner in self._runners.values()))
        self._runners.clear()
        await self._client.stop()
        log.info("%s mapper stopped", self._protocol, extra={"node": self.node})

    async def wait_membership(self, timeout: float | None = None) -> None:
        """Wait until the edge answered ``membership/get`` (at once in standalone mode)."""
        if self._static is None:
            async with asyncio.timeout(timeout):
                await self._membership_known.wait()

    # ------------------------------------------------------------------ devices

    async def _ask_membership(self) -> None:
        backoff = Backoff(_MEMBERSHIP_RETRY)
        topic = topics.node_topic(TopicKind.MEMBERSHIP_GET, self.node)
        while not self._membership_known.is_set():
            request = MembershipGetRequest(event_id=new_event_id(), timestamp=now_ms())
            self._asked.add(request.event_id)
            await self._client.publish(topic, request.to_json())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(backoff.next_delay()):
                    await self._membership_known.wait()

    async def _sync_membership(self, entries: Iterable[MembershipDevice]) -> None:
        mine = {entry.id: entry for entry in entries if membership_protocol(entry) == self._protocol}
        ids = {_canonical_id(entry_id) for entry_id in mine}
        for device in [*self._runners, *self._refused]:
            if device not in ids:
                await self._detach(device)
        for entry in mine.values():
            await self._attach_entry(entry)

    async def _attach_entry(self, entry: MembershipDevice) -> None:
        try:
            config = membership_config(entry)
        except MapperConfigError as exc:
            self._refuse_device(exc)
            return
        await self._attach(config)

    async def _attach(self, device: DeviceConfig) -> None:
        runner = self._runners.get(device.id)
        if runner is not None and runner.device == device:
            return
        if runner is not None:
            log.info("device changed; restarting it", extra={"device": device.id})
            await self._detach(device.id)
        try:
            driver = self._plugin.create_driver(device, self._metrics.requests.labels(device.id).observe)
        except MapperConfigError as exc:
            self._refuse_device(exc)
            return
        self._refused.pop(device.id, None)
        runner = DeviceRunner(device, driver, self, self._metrics, self._reconnect)
        self._runners[device.id] = runner
        runner.start()
        log.info("device added (%d properties)", len(device.properties), extra={"device": device.id})
        request = TwinGetRequest(event_id=new_event_id(), timestamp=now_ms())
        self._send(device.id, TopicKind.TWIN_GET, request.to_json())

    def _refuse_device(self, error: MapperConfigError) -> None:
        if self._refused.get(error.device) == str(error):
            return
        self._refused[error.device] = str(error)
        self._metrics.error(error.device, error)
        log.error("device not driven: %s", error, extra={"device": error.device})
        self.state(error.device, DeviceState.UNHEALTHY)

    async def _detach(self, device: str) -> None:
        self._refused.pop(device, None)
        runner = self._runners.pop(device, None)
        if runner is not None:
            await runner.stop()
            log.info("device removed", extra={"device": device})
        self._metrics.forget(device)

    # ------------------------------------------------------------------ incoming messages

    async def _listen(self) -> None:
        async for message in self._client.messages():
            try:
                await self._handle(message)
            except ValueError as exc:  # pydantic's ValidationError included: a body of the wrong shape
                log.warning("ignored a malformed message on %s: %s", message.topic, exc)
            except Exception:  # one bad message must not stop the mapper from listening
                log.exception("failed to handle a message on %s", message.topic)

    async def _handle(self, message: MqttMessage) -> None:
        topic = parse_topic(message.topic)
        if topic is None:
            return
        if topic.kind is TopicKind.MEMBERSHIP_GET_RESULT:
            result = MembershipGetResult.model_validate_json(message.payload)
            if result.event_id in self._asked:
                self._asked.clear()
                await self._sync_membership(result.devices)
                self._membership_known.set()
        elif topic.kind is TopicKind.MEMBERSHIP_UPDATED:
            updated = MembershipUpdated.model_validate_json(message.payload)
            for entry in updated.removed_devices:
                await self._detach(_canonical_id(entry.id))
            for entry in updated.added_devices:
                if membership_protocol(entry) == self._protocol:
                    await self._attach_entry(entry)
        elif topic.kind is TopicKind.TWIN_UPDATE_DELTA:
            runner = self._runners.get(topic.device_id or "")
            if runner is not None:
                delta = TwinDelta.model_validate_json(message.payload)
                for name, value in delta.delta.items():
                    runner.desire(name, value, delta.event_id)
        elif topic.kind is TopicKind.TWIN_GET_RESULT:
            runner = self._runners.get(topic.device_id or "")
            if runner is not None:
                self._desire_from_twin(runner, TwinGetResult.model_validate_json(message.payload))

    @staticmethod
    def _desire_from_twin(runner: DeviceRunner, result: TwinGetResult) -> None:
        for name, twin in result.twin.items():
            expected = twin.expected_value
            if expected is not None and expected != twin.actual_value:
                runner.desire(name, expected, result.event_id)

    # ------------------------------------------------------------------ Reporter: outgoing messages

    def report(self, device: str, values: Mapping[str, Report]) -> None:
        """Publish reported values in one ``twin/update`` (and the data push when enabled)."""
        now = now_ms()
        twin: dict[str, MsgTwin | None] = {
            name: MsgTwin(
                actual=TwinValue(value=report.value, metadata=ValueMetadata(timestamp=now)),
                metadata=TypeMetadata(type=report.type),
            )
            for name, report in values.items()
        }
        update = TwinUpdateRequest(event_id=new_event_id(), timestamp=now, twin=twin)
        self._send(device, TopicKind.TWIN_UPDATE, update.to_json())
        if self._push_data:
            data = {
                name: {"value": report.value, "metadata": {"type": report.type, "timestamp": now}}
                for name, report in values.items()
            }
            body = {"event_id": new_event_id(), "timestamp": now, "data": data}
            self._send(device, TopicKind.DATA_UPDATE, json.dumps(body).encode())

    def state(self, device: str, state: DeviceState) -> None:
        """Publish the device's new state on ``state/update``."""
        request = StateUpdateRequest(event_id=new_event_id(), timestamp=now_ms(), state=state.value)
        self._send(device, TopicKind.STATE_UPDATE, request.to_json())

    def refuse(self, device: str, error: PropertyError, event_id: str) -> None:
        """Answer a refused (400) or failed (500) desired value on ``twin/update/result`` [ext]."""
        code = 400 if isinstance(error, ValueRefusedError) else 500
        result = ErrorResult(
            event_id=event_id, timestamp=now_ms(), code=code, reason=str(error), property=error.property
        )
        self._send(device, TopicKind.TWIN_UPDATE_RESULT, result.to_json())

    def _send(self, device: str, kind: TopicKind, payload: bytes) -> None:
        namespace, name = topics.split_device_id(device)
        topic = topics.device_topic(kind, namespace, name)
        if self._unacknowledged >= _MAX_UNACKNOWLEDGED:
            log.warning("broker not acknowledging; dropped a message on %s", topic, extra={"device": device})
            return
        try:
            future = self._client.publish_nowait(topic, payload)
        except EventBusError as exc:  # stopping, or a topic the broker cannot take
            log.warning("cannot publish on %s: %s", topic, exc, extra={"device": device})
            return
        self._unacknowledged += 1
        future.add_done_callback(self._acknowledged)

    def _acknowledged(self, future: asyncio.Future[None]) -> None:
        self._unacknowledged -= 1
        if not future.cancelled() and future.exception() is not None:
            log.warning("publish failed: %s", future.exception())


def _canonical_id(entry_id: str) -> str:
    """``<namespace>/<name>`` for a membership id, also for a legacy ``<name>``."""
    return topics.device_id(*topics.split_device_id(entry_id))

"""The DeviceController: Device / DeviceModel CRs <-> the edge nodes' twins (issue 9).

Downstream, it lists and watches Devices and DeviceModels (resuming from the last resourceVersion, listing
again after 410 Gone and diffing against what each node has), checks each Device
(:mod:`~cloudcore.devices.validation`) and hands the node of ``spec.nodeName`` its DeviceModel, the Device,
and the desired values as a versioned ``twin/cloud_updated``. A Device moved to another node or deleted is
deleted on its old node. Only a change of the spec (``metadata.generation``) goes to the edge: the
controller's own status patches do not echo back.

Upstream, :meth:`DeviceController.received` reads the nodes' ``twin/edge_updated`` and ``state/update``
and queues reported values, observed desired values, state and ``lastOnlineTime`` for the coalescing
:class:`~cloudcore.devices.status.StatusWriter`.

Twin versions (CONTRACTS.md §1): the cloud version of a desired value is the Device's generation when the
value changed; the edge version sent with it is the highest the cloud has seen from the edge for that
property. Both are kept in ``status.twins[].observedDesired.metadata`` (``cloudVersion``,
``edgeVersion``) **[ext]**, so a restarted controller knows them. When the edge holds a newer desired value
(written at the edge), the edge refuses the cloud's and reports its own: the status shows the edge's value
and the ``DesiredSynced`` condition says the cloud's value was superseded.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from kubernetes.client import ApiClient
from prometheus_client import CollectorRegistry

from cloudcore.devices.api import DEVICE_MODELS, DEVICES, DeviceApi, JsonObject
from cloudcore.devices.events import EventRecorder
from cloudcore.devices.messages import (
    EdgeStateReport,
    EdgeTwinReport,
    cloud_twin_message,
    object_message,
    read_edge_message,
)
from cloudcore.devices.metrics import DeviceControllerMetrics
from cloudcore.devices.status import StatusWriter, condition
from cloudcore.devices.validation import VALID, Verdict, validate_device
from cloudcore.errors import DeviceMessageError, KubeApiError, KubeUnavailableError, WatchExpiredError
from cloudsync import Message, Operation, ResourceType
from device_models import MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata, now_ms
from eventbus import Backoff, BackoffPolicy

__all__ = ["DESIRED_SYNCED", "VALID_CONDITION", "DeviceController", "Send"]

log = logging.getLogger(__name__)

#: How the controller hands a message to a node (``CloudLink.send``): queues it and returns at once.
Send = Callable[[str, Message], Awaitable[None]]

#: Condition types in ``status.conditions``.
VALID_CONDITION = "Valid"
DESIRED_SYNCED = "DesiredSynced"
SUPERSEDED_AT_EDGE = "SupersededAtEdge"
SYNCED = "Synced"


@dataclass
class _Desired:
    """The cloud's view of one property's desired value: last value sent, its versions, the edge's version."""

    value: str | None = None
    cloud: int = 0
    edge: int = 0
    #: The edge version the last cloud update carried (an edge write beyond it supersedes that update).
    sent_edge: int = 0


@dataclass
class _Placement:
    """Which node has the Device, at which generation."""

    node: str
    generation: int
    desired: dict[str, _Desired] = field(default_factory=dict)
    shape: str = ""  # the spec last sent, without desired values


class DeviceController:
    """Syncs Device / DeviceModel CRs to edge nodes through ``send`` and edge reports back to the status.

    ``api_client`` is a blocking ``kubernetes.client.ApiClient`` (the caller closes it after :meth:`stop`).
    ``status_interval`` is how long status changes of one device gather before one patch; ``watch_timeout``
    how long one watch request lasts before it is renewed (from the last resourceVersion); ``namespace``
    limits the controller to one namespace (all by default).
    """

    def __init__(
        self,
        api_client: ApiClient,
        send: Send,
        *,
        registry: CollectorRegistry | None = None,
        status_interval: float = 0.2,
        watch_timeout: int = 300,
        backoff: BackoffPolicy | None = None,
        namespace: str | None = None,
    ) -> None:
        """Wire the controller; nothing runs before :meth:`start`."""
        self.name = "devicecontroller"
        self._api = DeviceApi(api_client, namespace)
        self._send_to = send
        self._metrics = DeviceControllerMetrics.create(registry)
        self._watch_timeout = watch_timeout
        self._backoff_policy = backoff or BackoffPolicy(minimum=0.2, maximum=10.0)
        self._status = StatusWriter(
            self._api, self._devices_get, self._remember, self._metrics, interval=status_interval
        )
        self._events = EventRecorder(self._api, self._metrics)
        self._models: dict[str, JsonObject] = {}
        self._devices: dict[str, JsonObject] = {}
        self._placed: dict[str, _Placement] = {}
        self._node_models: dict[str, set[str]] = {}
        self._verdicts: dict[str, tuple[int, str, str]] = {}
        # Versions read from the status of a device seen first after a (re)start, until it is placed.
        self._known: dict[str, dict[str, _Desired]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._synced = asyncio.Event()

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def start(self) -> None:
        """List DeviceModels and Devices, send each node what it needs, then watch both."""
        if self._tasks:
            return
        self._status.start()
        self._events.start()
        loop = asyncio.get_running_loop()
        models_version = await self._relist_models()
        devices_version = await self._relist_devices()
        self._tasks = [
            loop.create_task(self._watch(DEVICE_MODELS, models_version), name="watch-devicemodels"),
            loop.create_task(self._watch(DEVICES, devices_version), name="watch-devices"),
        ]
        self._synced.set()
        log.info("device controller started with %d devices", len(self._devices))

    async def wait(self) -> None:
        """Return (or raise) when a watch loop ended; they run until :meth:`stop`."""
        if not self._tasks:
            raise RuntimeError("DeviceController.wait() called before start()")
        await asyncio.gather(*(asyncio.shield(task) for task in self._tasks))

    async def stop(self) -> None:
        """Stop watching, write pending status, stop recording events."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._status.stop()
        await self._events.stop()
        self._synced.clear()

    async def wait_synced(self) -> None:
        """Wait until the first lists were handled (every node was sent what it needs)."""
        await self._synced.wait()

    # --- edge -> cloud ------------------------------------------------------------------------------------

    async def received(self, node: str, message: Message) -> None:
        """Handle a ``device/...`` message from ``node``; bad or foreign ones are logged, counted, dropped."""
        try:
            report = read_edge_message(message)
        except DeviceMessageError as exc:
            self._metrics.errors.labels("message").inc()
            log.warning("dropped a device message: %s", exc, extra={"node": node, "msg_id": message.msg_id})
            return
        placement = self._placed.get(report.device_id)
        if placement is None or placement.node != node:
            self._metrics.errors.labels("message").inc()
            log.warning(
                "dropped a report for a device not bound to the node",
                extra={"node": node, "device": report.device_id, "msg_id": message.msg_id},
            )
            return
        if isinstance(report, EdgeStateReport):
            self._metrics.reports_received.labels("state").inc()
            self._status.state(report.device_id, report.state, report.last_online)
        else:
            self._metrics.reports_received.labels("twin").inc()
            self._twin_report(report, placement)

    def _twin_report(self, report: EdgeTwinReport, placement: _Placement) -> None:
        device_id = report.device_id
        for prop, twin in report.twins.items():
            if twin is None or twin.is_deleted:
                continue
            if twin.actual is not None and twin.actual.value is not None:
                metadata = _value_metadata(twin.actual, twin)
                self._status.reported(device_id, prop, twin.actual.value, metadata)
            if twin.expected is not None and twin.expected.value is not None:
                self._observed(device_id, placement, prop, twin, twin.expected.value)

    def _observed(self, device_id: str, placement: _Placement, prop: str, twin: MsgTwin, value: str) -> None:
        version = twin.expected_version or TwinVersion()
        metadata = _value_metadata(twin.expected, twin)
        metadata |= {"cloudVersion": str(version.cloud), "edgeVersion": str(version.edge)}
        self._status.observed(device_id, prop, value, metadata)
        desired = placement.desired.setdefault(prop, _Desired())
        desired.edge = max(desired.edge, version.edge)
        wanted = _spec_desired(self._devices.get(device_id), prop)
        if wanted is None:
            return
        generation = placement.generation
        if value == wanted:
            message = f"the edge holds the desired value of {prop}"
            self._status.condition(device_id, condition(DESIRED_SYNCED, True, SYNCED, message, generation))
        elif version.edge > desired.sent_edge:
            message = (
                f"spec.properties[name={prop}].desired.value: {wanted!r} was superseded at the edge by "
                f"{value!r} (the edge's newer write wins; edit the Device again to override it)"
            )
            entry = condition(DESIRED_SYNCED, False, SUPERSEDED_AT_EDGE, message, generation)
            self._status.condition(device_id, entry)
            device = self._devices.get(device_id)
            if device is not None:
                self._events.warning(device, SUPERSEDED_AT_EDGE, message)

    # --- cloud -> edge ------------------------------------------------------------------------------------

    async def _watch(self, plural: str, resource_version: str | None) -> None:
        backoff = Backoff(self._backoff_policy)
        while True:
            try:
                if resource_version is None:
                    self._metrics.relists.labels(plural).inc()
                    relist = self._relist_models if plural == DEVICE_MODELS else self._relist_devices
                    resource_version = await relist()
                async with self._api.watch(
                    plural, resource_version, timeout_seconds=self._watch_timeout
                ) as events:
                    async for kind, obj in events:
                        backoff.reset()
                        resource_version = obj["metadata"]["resourceVersion"]
                        if kind != "BOOKMARK":
                            await self._handle(plural, kind, obj)
            except WatchExpiredError as exc:
                log.info("watch of %s expired (%s); listing again", plural, exc.message)
                resource_version = None
            except (KubeApiError, KubeUnavailableError) as exc:
                self._metrics.errors.labels("watch").inc()
                delay = backoff.next_delay()
                log.warning("watch of %s failed: %s; again in %.1fs", plural, exc, delay)
                await asyncio.sleep(delay)

    async def _handle(self, plural: str, kind: str, obj: JsonObject) -> None:
        if plural == DEVICE_MODELS:
            await self._model_event(kind, obj)
        else:
            await self._device_event(kind, obj)

    async def _relist_models(self) -> str:
        items, resource_version = await self._api.list(DEVICE_MODELS)
        listed = {_object_id(obj): obj for obj in items}
        for model_id in set(self._models) - set(listed):
            await self._model_event("DELETED", _as_of(self._models[model_id], resource_version))
        for obj in listed.values():
            await self._model_event("MODIFIED", obj)
        return resource_version

    async def _relist_devices(self) -> str:
        items, resource_version = await self._api.list(DEVICES)
        listed = {_object_id(obj): obj for obj in items}
        for device_id in set(self._devices) - set(listed):
            await self._device_event("DELETED", _as_of(self._devices[device_id], resource_version))
        for obj in listed.values():
            await self._device_event("MODIFIED", obj)
        return resource_version

    async def _model_event(self, kind: str, obj: JsonObject) -> None:
        model_id = _object_id(obj)
        old = self._models.get(model_id)
        if kind == "DELETED":
            self._models.pop(model_id, None)
            for node, models in self._node_models.items():
                if model_id in models:
                    models.discard(model_id)
                    await self._send(
                        node, object_message(Operation.DELETE, ResourceType.DEVICE_MODEL, obj, _rv(obj))
                    )
        else:
            if old is not None and not _newer(obj, old):
                return
            self._models[model_id] = obj
            if old is not None and _generation(old) == _generation(obj):
                return
            for node, models in self._node_models.items():
                if model_id in models:
                    await self._send(
                        node, object_message(Operation.UPDATE, ResourceType.DEVICE_MODEL, obj, _rv(obj))
                    )
        for device_id in [d for d, device in self._devices.items() if _model_id(device) == model_id]:
            await self._reconcile(device_id, revalidate=True)

    async def _device_event(self, kind: str, obj: JsonObject) -> None:
        device_id = _object_id(obj)
        if kind == "DELETED":
            self._devices.pop(device_id, None)
            self._verdicts.pop(device_id, None)
            self._known.pop(device_id, None)
            self._status.forget(device_id)
            placement = self._placed.pop(device_id, None)
            if placement is not None:
                await self._send(
                    placement.node, object_message(Operation.DELETE, ResourceType.DEVICE, obj, _rv(obj))
                )
            return
        old = self._devices.get(device_id)
        if old is not None and not _newer(obj, old):
            return
        self._devices[device_id] = obj
        if old is None and device_id not in self._placed:
            self._known[device_id] = _versions_in_status(obj)
        await self._reconcile(device_id)

    async def _reconcile(self, device_id: str, *, revalidate: bool = False) -> None:
        obj = self._devices[device_id]
        generation = _generation(obj)
        placement = self._placed.get(device_id)
        if placement is not None and placement.generation == generation and not revalidate:
            return  # a status or metadata change: nothing for the edge
        verdict = validate_device(obj, self._models)
        self._record_verdict(obj, verdict, generation)
        if not verdict.valid or verdict.device is None:
            return  # the node keeps the last valid version
        node = verdict.device.node_name or ""
        if placement is not None and placement.node != node:
            await self._send(
                placement.node, object_message(Operation.DELETE, ResourceType.DEVICE, obj, _rv(obj))
            )
            self._placed.pop(device_id)
            placement = None
        if not node:
            return
        if placement is not None and placement.generation == generation:
            return  # revalidated after a model change: the device itself did not change
        await self._ensure_model(node, _model_id(obj))
        shape = _spec_shape(obj)
        device = object_message(
            Operation.INSERT if placement is None else Operation.UPDATE, ResourceType.DEVICE, obj, _rv(obj)
        )
        if placement is not None and placement.shape == shape:
            # Only desired values changed: the twin update goes first, so the device is written without
            # waiting for the edge to store the new copy of the Device (which changes nothing it runs).
            placement.generation = generation
            await self._send_desired(device_id, obj, verdict, placement)
            await self._send(node, device)
            return
        await self._send(node, device)
        if placement is None:
            placement = self._placed[device_id] = _Placement(node, generation, self._known.pop(device_id, {}))
        placement.generation, placement.shape = generation, shape
        await self._send_desired(device_id, obj, verdict, placement)

    async def _ensure_model(self, node: str, model_id: str) -> None:
        models = self._node_models.setdefault(node, set())
        if model_id not in models:
            model = self._models[model_id]
            models.add(model_id)
            await self._send(
                node, object_message(Operation.INSERT, ResourceType.DEVICE_MODEL, model, _rv(model))
            )

    async def _send_desired(
        self, device_id: str, obj: JsonObject, verdict: Verdict, placement: _Placement
    ) -> None:
        assert verdict.device is not None and verdict.model is not None  # noqa: PT018 - a valid verdict has both
        twins: dict[str, MsgTwin] = {}
        for prop in verdict.device.spec.properties:
            if prop.desired is None:
                continue
            desired = placement.desired.setdefault(prop.name, _Desired())
            if desired.value == prop.desired.value:
                continue
            desired.value, desired.cloud, desired.sent_edge = (
                prop.desired.value,
                placement.generation,
                desired.edge,
            )
            model_prop = verdict.model.get_property(prop.name)
            value_type = model_prop.type.twin_type if model_prop is not None else "string"
            twins[prop.name] = MsgTwin(
                expected=TwinValue(value=prop.desired.value, metadata=ValueMetadata(timestamp=now_ms())),
                optional=False,
                metadata=TypeMetadata(type=value_type),
                expected_version=TwinVersion(cloud=desired.cloud, edge=desired.edge),
            )
        if twins:
            await self._send(placement.node, cloud_twin_message(device_id, twins, _rv(obj)))

    def _record_verdict(self, obj: JsonObject, verdict: Verdict, generation: int) -> None:
        device_id = _object_id(obj)
        key = (generation, verdict.reason, verdict.message)
        if self._verdicts.get(device_id) == key:
            return
        before = self._verdicts.get(device_id)
        self._verdicts[device_id] = key
        if verdict.valid:
            message = "the device passed validation"
            self._status.condition(device_id, condition(VALID_CONDITION, True, VALID, message, generation))
            if before is not None and before[1] != VALID:
                self._events.normal(obj, VALID, f"{message}; it goes to its node")
            return
        self._metrics.invalid_devices.labels(verdict.reason).inc()
        log.warning(
            "device refused: %s", verdict.message, extra={"device": device_id, "reason": verdict.reason}
        )
        self._status.condition(
            device_id, condition(VALID_CONDITION, False, verdict.reason, verdict.message, generation)
        )
        self._events.warning(obj, verdict.reason, verdict.message)

    async def _send(self, node: str, message: Message) -> None:
        self._metrics.messages_sent.labels(message.resource.split("/")[1]).inc()
        try:
            await self._send_to(node, message)
        except Exception:  # the link must never stop the controller; it logs why
            self._metrics.errors.labels("send").inc()
            log.exception(
                "cannot hand a message to the cloud link", extra={"node": node, "resource": message.resource}
            )

    # --- the device cache, shared with the status writer --------------------------------------------------

    def _devices_get(self, device_id: str) -> JsonObject | None:
        return self._devices.get(device_id)

    def _remember(self, obj: JsonObject) -> None:
        device_id = _object_id(obj)
        old = self._devices.get(device_id)
        if old is not None and _newer(obj, old):
            self._devices[device_id] = obj


def _object_id(obj: JsonObject) -> str:
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _model_id(device: JsonObject) -> str:
    ref = ((device.get("spec") or {}).get("deviceModelRef") or {}).get("name", "")
    return f"{device['metadata']['namespace']}/{ref}"


def _rv(obj: JsonObject) -> str:
    return str(obj["metadata"]["resourceVersion"])


def _as_of(obj: JsonObject, resource_version: str) -> JsonObject:
    """``obj`` stamped with a list's resourceVersion: the deletion a list revealed happened by then."""
    return {**obj, "metadata": {**obj["metadata"], "resourceVersion": resource_version}}


def _generation(obj: JsonObject) -> int:
    return int(obj["metadata"].get("generation") or 0)


def _newer(obj: JsonObject, old: JsonObject) -> bool:
    """Whether ``obj`` is a later state than ``old`` (resourceVersions compared as numbers when they are)."""
    new_rv, old_rv = _rv(obj), _rv(old)
    if new_rv.isdigit() and old_rv.isdigit():
        return int(new_rv) > int(old_rv)
    return new_rv != old_rv


def _spec_shape(device: JsonObject) -> str:
    """The Device's spec without its desired values, as a comparable string."""
    spec = dict(device.get("spec") or {})
    spec["properties"] = [
        {key: value for key, value in prop.items() if key != "desired"} if isinstance(prop, dict) else prop
        for prop in spec.get("properties") or []
    ]
    return json.dumps(spec, sort_keys=True)


def _spec_desired(device: JsonObject | None, prop: str) -> str | None:
    for entry in ((device or {}).get("spec") or {}).get("properties") or []:
        if entry.get("name") == prop:
            return (entry.get("desired") or {}).get("value")
    return None


def _versions_in_status(device: JsonObject) -> dict[str, _Desired]:
    """The desired versions a previous controller kept in ``status.twins[].observedDesired.metadata``."""
    known: dict[str, _Desired] = {}
    for twin in (device.get("status") or {}).get("twins") or []:
        observed = twin.get("observedDesired") or {}
        metadata = observed.get("metadata") or {}
        try:
            cloud, edge = int(metadata.get("cloudVersion", 0)), int(metadata.get("edgeVersion", 0))
        except ValueError:
            continue
        known[twin["propertyName"]] = _Desired(observed.get("value"), cloud, edge, edge)
    return known


def _value_metadata(value: TwinValue | None, twin: MsgTwin) -> dict[str, str]:
    metadata = {"type": twin.value_type}
    if value is not None and value.metadata is not None and value.metadata.timestamp is not None:
        metadata["timestamp"] = str(value.metadata.timestamp)
    return metadata

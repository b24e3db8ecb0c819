"""The edge half of the device path: the cloud's Device / DeviceModel / twin messages applied to DeviceTwin.

:class:`DeviceSync` is the ``EdgeLinkHandler`` for device messages (CONTRACTS.md §3):

* ``<ns>/devicemodel/<name>`` insert / update / delete: the model is kept; its devices are declared again;
* ``<ns>/device/<name>`` insert / update: the Device is kept and declared to the twin with its model
  (:func:`edgecore.devices.twin_device`); a Device that arrives before its model waits for it; delete
  removes it from the twin;
* ``device/<ns>/<name>/twin/cloud_updated``: desired values with versions, applied with
  :meth:`DeviceTwin.apply_cloud_update` (the edge's newer write wins, and goes back to the cloud); desired
  values for a device still waiting for its model are kept and applied when it is declared. The desired
  values the edge took are reported back on ``twin/edge_updated`` (the cloud's ``observedDesired``);
* a ``query`` of ``membership`` is answered with the devices the twin holds.

Desired values reach the twin only through the versioned ``twin/cloud_updated``, never from the Device's
spec, so that the version rules decide. Models, Devices and desired values are written to the
``device_sync`` table of the edge's database before :meth:`DeviceSync.received` returns: the link's
acknowledgement means the message is durable. :class:`LinkCloudSink` hands the twin's reports to the
EdgeLink's durable outbox.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

import aiosqlite
from prometheus_client import CollectorRegistry, Counter
from pydantic import ValidationError

from cloudsync import Group, Message, MessageFormatError, ObjectRef, Operation, ResourceType
from device_models import (
    Device,
    DeviceModel,
    ModelValidationError,
    MsgTwin,
    TwinSync,
    TwinValidationError,
    new_event_id,
    now_ms,
    parse_document,
)
from devicetwin import (
    CloudSink,
    DeviceNotFoundError,
    DeviceTwin,
    TwinRequestError,
    twin_edge_updated_resource,
)
from edgecore.devices import twin_device
from edgecore.errors import DevicesDirError, EdgeCoreError
from storage import open_sqlite

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS device_sync (key TEXT PRIMARY KEY, kind TEXT NOT NULL, value TEXT NOT NULL);"
)

__all__ = ["DeviceObjectStore", "DeviceSync", "DeviceSyncStoreError", "EdgeSender", "LinkCloudSink"]

log = logging.getLogger(__name__)

#: ``route.source`` of what the edge's twin sends to the cloud.
TWIN_SOURCE = "twin"
_CLOUD_UPDATED = "twin/cloud_updated"
_TWIN_KIND = "twin"
# Errors of a message that re-sending cannot fix: logged, counted, acknowledged.
_PERMANENT = (
    MessageFormatError,
    ModelValidationError,
    ValidationError,
    DevicesDirError,
    TwinValidationError,
    TwinRequestError,
)


class DeviceSyncStoreError(EdgeCoreError):
    """The ``device_sync`` table of ``path`` cannot be read or written (the message is not acknowledged)."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"device_sync table in {path}: {reason}")
        self.path = path
        self.reason = reason


class EdgeSender(Protocol):
    """The EdgeLink's sending side: ``send`` stores the message durably before it returns."""

    async def send(self, message: Message) -> None:
        """Queue ``message`` for the cloud."""


class LinkCloudSink:
    """The twin's :class:`~devicetwin.CloudSink` on the EdgeLink: each report becomes a durable message."""

    def __init__(self, link: EdgeSender) -> None:
        """Send through ``link``."""
        self._link = link

    async def send(self, resource: str, operation: str, content: dict[str, Any]) -> None:
        """Hand one twin report (``twin/edge_updated``, ``state/update``) to the link."""
        await self._link.send(
            Message.new(
                source=TWIN_SOURCE,
                group=Group.TWIN,
                operation=Operation(operation),
                resource=resource,
                content=content,
            )
        )


class DeviceObjectStore:
    """The ``device_sync(key PK, kind, value)`` table, on its own connection to the edge's database file."""

    def __init__(self, path: Path) -> None:
        """Nothing is opened before :meth:`open`."""
        self.path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open the file, creating it and the table when missing."""
        try:
            self._db = await open_sqlite(self.path, _SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise DeviceSyncStoreError(self.path, f"cannot open: {exc}") from exc

    async def close(self) -> None:
        """Close the connection; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def load(self) -> list[tuple[str, str, Any]]:
        """Every stored ``(key, kind, value)``, values decoded from JSON."""
        try:
            async with self._conn().execute(
                "SELECT key, kind, value FROM device_sync ORDER BY key"
            ) as cursor:
                return [(str(key), str(kind), json.loads(value)) async for key, kind, value in cursor]
        except (sqlite3.Error, ValueError) as exc:
            raise DeviceSyncStoreError(self.path, str(exc)) from exc

    async def put(self, key: str, kind: str, value: Any) -> None:
        """Store ``value`` (JSON-ready) under ``key``, durably."""
        await self._write(
            "INSERT OR REPLACE INTO device_sync (key, kind, value) VALUES (?, ?, ?)",
            (key, kind, json.dumps(value, separators=(",", ":"))),
        )

    async def delete(self, *keys: str) -> None:
        """Forget ``keys`` (absent ones are fine)."""
        await self._write(f"DELETE FROM device_sync WHERE key IN ({','.join('?' * len(keys))})", keys)

    async def _write(self, sql: str, parameters: tuple[Any, ...]) -> None:
        db = self._conn()
        try:
            await db.execute(sql, parameters)
            await db.commit()
        except sqlite3.Error as exc:
            raise DeviceSyncStoreError(self.path, str(exc)) from exc

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise DeviceSyncStoreError(self.path, "the store is not open")
        return self._db


class DeviceSync:
    """Applies the cloud's device messages to ``twin`` (or the twin a getter returns); ``store`` (open) keeps
    them across restarts.

    ``sink`` receives the desired values the edge took (``twin/edge_updated``); ``link`` answers queries.
    Call :meth:`start` after the twin started and before the link delivers messages.
    """

    def __init__(
        self,
        twin: DeviceTwin | Callable[[], DeviceTwin],
        store: DeviceObjectStore,
        sink: CloudSink,
        link: EdgeSender,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        """Wire the handler; nothing is read before :meth:`start`."""
        # edgecore passes a getter: a restarted twin module runs a new DeviceTwin.
        self._twin_of = twin if callable(twin) and not isinstance(twin, DeviceTwin) else (lambda: twin)
        self._store = store
        self._sink = sink
        self._link = link
        self._errors = Counter(
            "edgetwin_devicesync_errors",
            "Cloud device messages the edge could not apply, by kind (refused: acknowledged and dropped)",
            ["kind"],
            registry=registry,
        )
        self._models: dict[str, DeviceModel] = {}
        self._devices: dict[str, Device] = {}
        self._desired: dict[str, dict[str, MsgTwin]] = {}

    @property
    def _twin(self) -> DeviceTwin:
        return self._twin_of()

    async def start(self) -> None:
        """Load what the store keeps and declare it again (a crash may have come between store and twin)."""
        for key, kind, value in await self._store.load():
            try:
                if kind == ResourceType.DEVICE_MODEL:
                    model = parse_document(value)
                    if isinstance(model, DeviceModel):
                        self._models[model.id] = model
                elif kind == ResourceType.DEVICE:
                    device = parse_document(value)
                    if isinstance(device, Device):
                        self._devices[device.id] = device
                elif kind == _TWIN_KIND:
                    twins = TwinSync.model_validate({"twin": value}).twin
                    self._desired[_twin_device_id(key)] = {name: twin for name, twin in twins.items() if twin}
            except _PERMANENT as exc:
                log.warning("stored %s %s is not readable: %s", kind, key, exc)
        for device in list(self._devices.values()):
            await self._declare(device, report=False)
        log.info("device sync loaded %d models, %d devices", len(self._models), len(self._devices))

    async def connected(self) -> None:
        """The link is up: nothing to do, the link re-sends what is not acknowledged."""
        log.info("cloud link connected")

    async def disconnected(self) -> None:
        """The link is down: devices and twins keep working from SQLite."""
        log.info("cloud link disconnected; devices keep running from the local store")

    async def received(self, message: Message) -> None:
        """Apply one cloud message; returns once it is durable (raises when it must come again)."""
        try:
            await self._apply(message)
        except _PERMANENT as exc:
            self._errors.labels("refused").inc()
            log.warning(
                "refused %s %s: %s",
                message.operation.value,
                message.resource,
                exc,
                extra={"msg_id": message.msg_id},
            )

    async def _apply(self, message: Message) -> None:
        resource = message.resource
        if resource.startswith("device/"):
            device_id, _, suffix = resource.removeprefix("device/").rpartition("/twin/")
            if f"twin/{suffix}" != _CLOUD_UPDATED or device_id.count("/") != 1:
                raise MessageFormatError(f"resource {resource!r} is not device/<ns>/<name>/{_CLOUD_UPDATED}")
            await self._cloud_twin(device_id, TwinSync.model_validate(message.content).twin)
            return
        if message.operation is Operation.QUERY and ResourceType.MEMBERSHIP in resource.split("/"):
            await self._answer_membership(message)
            return
        ref = ObjectRef.parse(resource)
        if ref.type == ResourceType.DEVICE_MODEL:
            await self._model(message.operation, ref, message.content)
        elif ref.type == ResourceType.DEVICE:
            await self._device(message.operation, ref, message.content)
        else:
            raise MessageFormatError(f"resource type {ref.type!r} is not a device's")

    async def _model(self, operation: Operation, ref: ObjectRef, content: Any) -> None:
        model_id = f"{ref.namespace}/{ref.name}"
        if operation is Operation.DELETE:
            await self._store.delete(str(ref))
            self._models.pop(model_id, None)
            return
        model = parse_document(content)
        if not isinstance(model, DeviceModel):
            raise MessageFormatError(f"{ref} does not hold a DeviceModel")
        await self._store.put(str(ref), ResourceType.DEVICE_MODEL, content)
        self._models[model_id] = model
        for device in [device for device in self._devices.values() if device.model_id == model_id]:
            await self._declare(device)

    async def _device(self, operation: Operation, ref: ObjectRef, content: Any) -> None:
        device_id = f"{ref.namespace}/{ref.name}"
        if operation is Operation.DELETE:
            await self._store.delete(str(ref), _twin_key(device_id))
            self._devices.pop(device_id, None)
            self._desired.pop(device_id, None)
            # A device still waiting for its model is not in the twin.
            with contextlib.suppress(DeviceNotFoundError):
                await self._twin.remove_device(device_id)
            return
        device = parse_document(content)
        if not isinstance(device, Device):
            raise MessageFormatError(f"{ref} does not hold a Device")
        await self._store.put(str(ref), ResourceType.DEVICE, content)
        self._devices[device_id] = device
        await self._declare(device)

    async def _declare(self, device: Device, *, report: bool = True) -> None:
        model = self._models.get(device.model_id)
        if model is None:
            log.info("device waits for DeviceModel %s", device.model_id, extra={"device": device.id})
            return
        declared = twin_device(device, model, source=Path(f"{device.namespace}/device/{device.name}"))
        # Desired values come from twin/cloud_updated only, with versions.
        properties = [replace(prop, expected=None) for prop in declared.properties]
        await self._twin.upsert_device(replace(declared, properties=properties))
        desired = self._desired.get(device.id)
        if desired:
            await self._apply_desired(device.id, desired, report=report)

    async def _cloud_twin(self, device_id: str, twins: Mapping[str, MsgTwin | None]) -> None:
        desired = self._desired.get(device_id, {}) | {name: twin for name, twin in twins.items() if twin}
        kept = self._store.put(
            _twin_key(device_id), _TWIN_KIND, {name: twin.to_dict() for name, twin in desired.items()}
        )
        self._desired[device_id] = desired
        if device_id in self._devices and self._devices[device_id].model_id in self._models:
            # Both stores at once: the mapper gets its delta without waiting for this copy to be written,
            # and the cloud's acknowledgement still waits for both (a failure of either sends it again).
            await asyncio.gather(kept, self._apply_desired(device_id, desired, report=True))
        else:
            await kept

    async def _apply_desired(self, device_id: str, desired: Mapping[str, MsgTwin], *, report: bool) -> None:
        current = await self._twin.get_twin(device_id)
        fresh = {name: twin for name, twin in desired.items() if not _holds(current.get(name), twin)}
        if not fresh:
            return
        result = await self._twin.apply_cloud_update(device_id, fresh)
        if not report or not result.applied:
            return
        after = await self._twin.get_twin(device_id)
        observed = {
            name: MsgTwin(
                expected=after[name].expected,
                metadata=after[name].metadata,
                expected_version=after[name].expected_version,
            )
            for name in result.applied
            if name in after
        }
        if observed:
            sync = TwinSync(event_id=new_event_id(), timestamp=now_ms(), twin=dict(observed))
            await self._sink.send(twin_edge_updated_resource(device_id), "update", sync.to_dict())

    async def _answer_membership(self, message: Message) -> None:
        devices = [
            {
                "id": device.id,
                "name": device.name,
                **({"state": device.record.state} if device.record.state else {}),
                **({"last_online": device.record.last_online} if device.record.last_online else {}),
            }
            for device in self._twin.list_devices()
        ]
        await self._link.send(message.response(source=TWIN_SOURCE, content={"devices": devices}))


def _twin_key(device_id: str) -> str:
    namespace, _, name = device_id.partition("/")
    return f"{namespace}/{_TWIN_KIND}/{name}"


def _twin_device_id(key: str) -> str:
    ref = ObjectRef.parse(key)
    return f"{ref.namespace}/{ref.name}"


def _holds(local: MsgTwin | None, request: MsgTwin) -> bool:
    """Whether the twin already holds the desired value of ``request``, at its version."""
    return (
        local is not None
        and local.expected_value == request.expected_value
        and local.expected_version == request.expected_version
    )

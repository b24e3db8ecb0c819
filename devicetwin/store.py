"""The twin's SQLite store: KubeEdge's ``device`` / ``device_attr`` / ``device_twin`` tables, group commit.

Writes that arrive together share one transaction: callers hand their writes to :meth:`TwinStore.write`, a
single writer task drains everything queued, commits it as one batch and then resolves each caller's future,
so a caller returns only once its write is durable. A caller that awaits its write before the next one keeps
its own order. If a batch fails, each write in it is retried alone, so one bad write fails only its caller.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiosqlite
from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from device_models import MsgAttr, MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata
from devicetwin.devices import DeviceRecord, DeviceSnapshot
from devicetwin.errors import TwinStoreError
from devicetwin.metrics import TwinMetrics
from devicetwin.schema import MIGRATIONS

logger = logging.getLogger(__name__)

#: How many callers' writes one transaction takes at most.
DEFAULT_MAX_BATCH = 512


@dataclass(frozen=True)
class PutDevice:
    """Insert or replace a device row."""

    record: DeviceRecord


@dataclass(frozen=True)
class DeleteDevice:
    """Delete a device with its attributes and twins."""

    device_id: str


@dataclass(frozen=True)
class PutTwin:
    """Insert or replace one twin property (values, metadata, versions)."""

    device_id: str
    name: str
    twin: MsgTwin


@dataclass(frozen=True)
class PutAttr:
    """Insert or replace one attribute."""

    device_id: str
    name: str
    attr: MsgAttr


@dataclass(frozen=True)
class DeleteAttr:
    """Delete one attribute."""

    device_id: str
    name: str


WriteOp = PutDevice | DeleteDevice | PutTwin | PutAttr | DeleteAttr

_Statement = tuple[str, tuple[Any, ...]]

_PUT_DEVICE = """INSERT INTO device (id, name, description, state, last_online, spec, model)
    VALUES (?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (id) DO UPDATE SET name = excluded.name, description = excluded.description,
    state = excluded.state, last_online = excluded.last_online, spec = excluded.spec,
    model = excluded.model"""
_PUT_TWIN = """INSERT INTO device_twin (deviceid, name, expected, actual, expected_meta, actual_meta,
    expected_version, actual_version, optional, attr_type)
    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (deviceid, name) DO UPDATE SET expected = excluded.expected, actual = excluded.actual,
    expected_meta = excluded.expected_meta, actual_meta = excluded.actual_meta,
    expected_version = excluded.expected_version, actual_version = excluded.actual_version,
    optional = excluded.optional, attr_type = excluded.attr_type"""
_PUT_ATTR = """INSERT INTO device_attr (deviceid, name, value, optional, attr_type)
    VALUES (?, ?, ?, ?, ?)
    ON CONFLICT (deviceid, name) DO UPDATE SET value = excluded.value, optional = excluded.optional,
    attr_type = excluded.attr_type"""


def _json_or_none(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, separators=(",", ":"), sort_keys=True)


def _value_meta(value: TwinValue | None) -> str | None:
    if value is None or value.metadata is None:
        return None
    return value.metadata.model_dump_json()


def _version(version: TwinVersion | None) -> str | None:
    return None if version is None else version.model_dump_json()


def _statements(op: WriteOp) -> list[_Statement]:
    match op:
        case PutDevice(record=r):
            spec, model = _json_or_none(r.spec), _json_or_none(r.model)
            return [(_PUT_DEVICE, (r.id, r.name, r.description, r.state, r.last_online, spec, model))]
        case DeleteDevice(device_id=device_id):
            return [
                ("DELETE FROM device_twin WHERE deviceid = ?", (device_id,)),
                ("DELETE FROM device_attr WHERE deviceid = ?", (device_id,)),
                ("DELETE FROM device WHERE id = ?", (device_id,)),
            ]
        case PutTwin(device_id=device_id, name=name, twin=t):
            optional = True if t.optional is None else t.optional
            meta = (_value_meta(t.expected), _value_meta(t.actual))
            versions = (_version(t.expected_version), _version(t.actual_version))
            values = (t.expected_value, t.actual_value)
            return [(_PUT_TWIN, (device_id, name, *values, *meta, *versions, int(optional), t.value_type))]
        case PutAttr(device_id=device_id, name=name, attr=a):
            optional = True if a.optional is None else a.optional
            attr_type = "string" if a.metadata is None or not a.metadata.type else a.metadata.type
            return [(_PUT_ATTR, (device_id, name, a.value, int(optional), attr_type))]
        case DeleteAttr(device_id=device_id, name=name):
            return [("DELETE FROM device_attr WHERE deviceid = ? AND name = ?", (device_id, name))]


def _grouped(statements: list[_Statement]) -> list[tuple[str, list[tuple[Any, ...]]]]:
    """Runs of the same SQL become one ``executemany``; the order of the writes is kept."""
    groups: list[tuple[str, list[tuple[Any, ...]]]] = []
    for sql, params in statements:
        if groups and groups[-1][0] == sql:
            groups[-1][1].append(params)
        else:
            groups.append((sql, [params]))
    return groups


def _twin_from_row(row: sqlite3.Row) -> MsgTwin:
    # KubeEdge stores an absent value as "" where edgetwin stores NULL: both read back as absent.
    def value(text: str | None, meta: str | None) -> TwinValue | None:
        if not text:
            return None
        return TwinValue(value=text, metadata=ValueMetadata.model_validate_json(meta) if meta else None)

    def version(text: str | None) -> TwinVersion | None:
        return TwinVersion.model_validate_json(text) if text else None

    return MsgTwin(
        expected=value(row["expected"], row["expected_meta"]),
        actual=value(row["actual"], row["actual_meta"]),
        optional=True if row["optional"] is None else bool(row["optional"]),
        metadata=TypeMetadata(type=row["attr_type"] or "string"),
        expected_version=version(row["expected_version"]),
        actual_version=version(row["actual_version"]),
    )


def _attr_from_row(row: sqlite3.Row) -> MsgAttr:
    return MsgAttr(
        value=row["value"] or "",
        optional=True if row["optional"] is None else bool(row["optional"]),
        metadata=TypeMetadata(type=row["attr_type"] or "string"),
    )


def _record_from_row(row: sqlite3.Row) -> DeviceRecord:
    return DeviceRecord(
        id=row["id"],
        name=row["name"] or "",
        description=row["description"] or "",
        state=row["state"] or "",
        last_online=row["last_online"] or "",
        spec=json.loads(row["spec"]) if row["spec"] else None,
        model=json.loads(row["model"]) if row["model"] else None,
    )


@dataclass
class _PendingWrite:
    ops: Sequence[WriteOp]
    done: asyncio.Future[None]


class TwinStore:
    """The twin's SQLite database (WAL mode, ``synchronous=FULL``) with a group-committing writer.

    Open it with :meth:`open` (creates or migrates the schema), read everything once with :meth:`load`,
    write with :meth:`write`, and :meth:`close` it (pending writes are committed first).
    """

    def __init__(self, conn: aiosqlite.Connection, path: Path, metrics: TwinMetrics, max_batch: int) -> None:
        """Use :meth:`open`; this only wires an opened connection."""
        self._conn = conn
        self.path = path
        self._metrics = metrics
        self._max_batch = max_batch
        self._queue: asyncio.Queue[_PendingWrite | None] = asyncio.Queue()
        self._closed = False
        self._writer = asyncio.get_running_loop().create_task(self._run_writer(), name="twin-store-writer")

    @classmethod
    async def open(
        cls,
        path: Path | str,
        *,
        registry: CollectorRegistry | None = None,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> Self:
        """Open (creating it if needed) the database at ``path`` and bring its schema up to date."""
        db_path = Path(path)
        # Open the file here rather than in aiosqlite's thread: aiosqlite leaves its thread to report a failed
        # open to a loop that may be closed by then; handed over open, its connect cannot fail.
        try:
            raw = await asyncio.to_thread(
                sqlite3.connect, db_path, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise TwinStoreError("open", f"{db_path}: {exc}") from exc
        conn = await aiosqlite.Connection(lambda: raw, iter_chunk_size=64)
        try:
            await _configure(conn, db_path)
            await _migrate(conn)
        except sqlite3.Error as exc:
            await conn.close()
            raise TwinStoreError("open", f"{db_path}: {exc}") from exc
        except BaseException:
            await conn.close()
            raise
        return cls(conn, db_path, TwinMetrics.for_registry(registry), max_batch)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def load(self) -> list[DeviceSnapshot]:
        """Every device with its attributes and twins, ordered by device id."""
        self._check_open("load")
        try:
            devices = {row["id"]: row for row in await self._conn.execute_fetchall("SELECT * FROM device")}
            attrs = await self._conn.execute_fetchall("SELECT * FROM device_attr ORDER BY id")
            twins = await self._conn.execute_fetchall("SELECT * FROM device_twin ORDER BY id")
            attributes: dict[str, dict[str, MsgAttr]] = {device_id: {} for device_id in devices}
            for row in attrs:
                if row["deviceid"] in attributes:
                    attributes[row["deviceid"]][row["name"]] = _attr_from_row(row)
            twin_maps: dict[str, dict[str, MsgTwin]] = {device_id: {} for device_id in devices}
            for row in twins:
                if row["deviceid"] in twin_maps:
                    twin_maps[row["deviceid"]][row["name"]] = _twin_from_row(row)
            return [
                DeviceSnapshot(_record_from_row(row), attributes[device_id], twin_maps[device_id])
                for device_id, row in sorted(devices.items())
            ]
        except (sqlite3.Error, ValidationError, ValueError) as exc:
            raise TwinStoreError("load", str(exc)) from exc

    async def write(self, ops: Sequence[WriteOp]) -> None:
        """Commit ``ops`` atomically (sharing the transaction with concurrent callers); durable on return.

        Raises :class:`TwinStoreError` when the store fails or is closed; then none of ``ops`` was kept.
        """
        self._check_open("write")
        pending = _PendingWrite(ops, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        self._metrics.queue_depth.labels("store").set(self._queue.qsize())
        await pending.done

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await self._writer
        finally:
            await self._conn.close()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise TwinStoreError(operation, f"{self.path}: the store is closed")

    async def _run_writer(self) -> None:
        while True:
            first = await self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self._max_batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    break
                batch.append(item)
            self._metrics.queue_depth.labels("store").set(self._queue.qsize())
            try:
                await self._commit(batch)
            except Exception as exc:  # a bug here must fail the callers, not leave them waiting forever
                logger.exception("twin store writer failed")
                for pending in batch:
                    _fail(pending, TwinStoreError("write", repr(exc)))
            if stop:
                return

    async def _commit(self, batch: list[_PendingWrite]) -> None:
        statements: list[_Statement] = []
        live: list[_PendingWrite] = []
        for pending in batch:
            # A caller cancelled before its turn gave up on the write: leave it out.
            if pending.done.done():
                continue
            try:
                statements.extend(statement for op in pending.ops for statement in _statements(op))
            except (TypeError, ValueError) as exc:  # e.g. a spec that is not JSON-serialisable
                _fail(pending, TwinStoreError("write", f"cannot encode the write: {exc}"))
                continue
            live.append(pending)
        if not live:
            return
        started = time.perf_counter()
        try:
            await self._transaction(statements)
        except sqlite3.Error as exc:
            if len(live) == 1:
                logger.exception("twin store commit failed", extra={"db": str(self.path)})
                _fail(live[0], TwinStoreError("write", str(exc)))
                return
            # Isolate the write(s) at fault: each one alone, in order.
            for pending in live:
                await self._commit([pending])
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.commit_batch_size.observe(len(live))
        for pending in live:
            if not pending.done.done():
                pending.done.set_result(None)

    async def _transaction(self, statements: list[_Statement]) -> None:
        await self._conn.execute("BEGIN IMMEDIATE")
        try:
            for sql, rows in _grouped(statements):
                await self._conn.executemany(sql, rows)
            await self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                await self._conn.execute("ROLLBACK")
            raise


def _fail(pending: _PendingWrite, error: TwinStoreError) -> None:
    if not pending.done.done():
        pending.done.set_exception(error)


async def _configure(conn: aiosqlite.Connection, path: Path) -> None:
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA busy_timeout = 5000")
    async with conn.execute("PRAGMA journal_mode = WAL") as cursor:
        mode = await cursor.fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        raise TwinStoreError("open", f"{path}: cannot switch to WAL mode (got {mode!r})")
    # The commit must be durable before any result is published, power loss included.
    await conn.execute("PRAGMA synchronous = FULL")


async def _migrate(conn: aiosqlite.Connection) -> None:
    async with conn.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    version = int(row[0]) if row is not None else 0
    if version > len(MIGRATIONS):
        raise TwinStoreError("open", f"schema version {version} is newer than this edgetwin knows")
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        await conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                await conn.execute(sql)
            # PRAGMA takes no parameters; number is our own int.
            await conn.execute(f"PRAGMA user_version = {number}")
            await conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                await conn.execute("ROLLBACK")
            raise
        logger.info("twin store schema migrated to version %d", number)

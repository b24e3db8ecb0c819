"""The twin's SQLite store: KubeEdge's ``device`` / ``device_attr`` / ``device_twin`` tables, group commit.

Writes that arrive together share one transaction: callers hand their writes to :meth:`TwinStore.write`, a
single writer task drains everything queued, commits it as one batch and then resolves each caller's future,
so a caller returns only once its write is durable. Batches commit in the order their writes were queued.
If a batch fails, it is replayed with one savepoint per write, so one bad write fails only its caller.

The database has a thread of its own, where its connection lives: a whole batch (``BEGIN``, the statements,
``COMMIT``) is one call to that thread, so the loop hands over once per batch rather than once per statement.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from prometheus_client import CollectorRegistry
from pydantic import ValidationError

from device_models import MsgAttr, MsgTwin, TwinValue, TwinVersion, TypeMetadata, ValueMetadata
from devicetwin.devices import DeviceRecord, DeviceSnapshot
from devicetwin.errors import TwinStoreError
from devicetwin.metrics import TwinMetrics
from devicetwin.schema import MIGRATIONS

logger = logging.getLogger(__name__)

T = TypeVar("T")

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


def coalesce(ops: Iterable[WriteOp]) -> list[WriteOp]:
    """The same writes, with each row put once: at the place of its last put, with that put's content.

    A put replaces its row whole, so the earlier puts of a row change nothing the last one does not; deletes
    stay as they are. For a device's burst of updates this is one row per property instead of one per update.
    """
    latest: dict[tuple[str, ...], int] = {}
    kept: list[WriteOp | None] = []
    for op in ops:
        match op:
            case PutDevice(record=record):
                row: tuple[str, ...] | None = ("device", record.id)
            case PutTwin(device_id=device_id, name=name):
                row = ("twin", device_id, name)
            case PutAttr(device_id=device_id, name=name):
                row = ("attr", device_id, name)
            case _:
                row = None
        if row is not None:
            earlier = latest.get(row)
            if earlier is not None:
                kept[earlier] = None
            latest[row] = len(kept)
        kept.append(op)
    return [op for op in kept if op is not None]


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


# The JSON of a value's metadata and of a version, as KubeEdge stores them; written by hand because they are
# on every twin row (a pydantic dump costs more than the SQL statement).
def _value_meta(value: TwinValue | None) -> str | None:
    if value is None or value.metadata is None:
        return None
    timestamp = value.metadata.timestamp
    return "{}" if timestamp is None else f'{{"timestamp":{timestamp}}}'


def _version(version: TwinVersion | None) -> str | None:
    return None if version is None else f'{{"cloud":{version.cloud},"edge":{version.edge}}}'


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
    statements: list[_Statement]
    done: asyncio.Future[None]


class TwinStore:
    """The twin's SQLite database (WAL mode, ``synchronous=FULL``) with a group-committing writer.

    Open it with :meth:`open` (creates or migrates the schema), read everything once with :meth:`load`,
    write with :meth:`write`, and :meth:`close` it (pending writes are committed first).
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        thread: ThreadPoolExecutor,
        path: Path,
        metrics: TwinMetrics,
        max_batch: int,
    ) -> None:
        """Use :meth:`open`; this only wires a connection opened on ``thread``, which owns it from now on."""
        self._conn = conn
        self._thread = thread
        self.path = path
        self._metrics = metrics
        self._queue_depth = metrics.queue_depth.labels("store")
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
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="twin-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _connect, db_path)
        except BaseException:
            thread.shutdown()
            raise
        return cls(conn, thread, db_path, TwinMetrics.for_registry(registry), max_batch)

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
            return await self._call(_load, self._conn)
        except (sqlite3.Error, ValidationError, ValueError) as exc:
            raise TwinStoreError("load", str(exc)) from exc

    async def write(self, ops: Sequence[WriteOp]) -> None:
        """Commit ``ops`` atomically (sharing the transaction with concurrent callers); durable on return.

        Raises :class:`TwinStoreError` when the store fails or is closed; then none of ``ops`` was kept.
        """
        self._check_open("write")
        try:
            statements = [statement for op in ops for statement in _statements(op)]
        except (TypeError, ValueError) as exc:  # e.g. a spec that is not JSON-serialisable
            raise TwinStoreError("write", f"cannot encode the write: {exc}") from exc
        pending = _PendingWrite(statements, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(pending)
        self._queue_depth.set(self._queue.qsize())
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
            try:
                await self._call(self._conn.close)
            finally:
                self._thread.shutdown()

    def _check_open(self, operation: str) -> None:
        if self._closed:
            raise TwinStoreError(operation, f"{self.path}: the store is closed")

    async def _call(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function`` on the database's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)

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
            self._queue_depth.set(self._queue.qsize())
            try:
                await self._commit(batch)
            except Exception as exc:  # a bug here must fail the callers, not leave them waiting forever
                logger.exception("twin store writer failed")
                for pending in batch:
                    _fail(pending, TwinStoreError("write", repr(exc)))
            if stop:
                return

    async def _commit(self, batch: list[_PendingWrite]) -> None:
        # A caller cancelled before its turn gave up on the write: leave it out.
        live = [pending for pending in batch if not pending.done.done()]
        if not live:
            return
        started = time.perf_counter()
        try:
            errors = await self._call(_transaction, self._conn, [pending.statements for pending in live])
        except sqlite3.Error as exc:  # BEGIN or COMMIT failed: nothing of the batch was kept
            logger.exception("twin store commit failed", extra={"db": str(self.path)})
            for pending in live:
                _fail(pending, TwinStoreError("write", str(exc)))
            return
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        self._metrics.commit_batch_size.observe(len(live) - len(errors))
        for index, pending in enumerate(live):
            error = errors.get(index)
            if error is not None:
                logger.error("twin store write refused: %s", error, extra={"db": str(self.path)})
                _fail(pending, TwinStoreError("write", error))
            elif not pending.done.done():
                pending.done.set_result(None)


def _fail(pending: _PendingWrite, error: TwinStoreError) -> None:
    if not pending.done.done():
        pending.done.set_exception(error)


# --- on the database's thread -------------------------------------------------------------------------------


def _transaction(conn: sqlite3.Connection, writes: list[list[_Statement]]) -> dict[int, str]:
    """Commit ``writes`` in one transaction; the errors of the writes that had to be left out, by index.

    First all at once, same statements grouped into ``executemany``; if that fails, once more with a savepoint
    per write, so that only the writes at fault are rolled back.
    """
    conn.execute("BEGIN IMMEDIATE")
    try:
        try:
            for sql, rows in _grouped([statement for statements in writes for statement in statements]):
                conn.executemany(sql, rows)
        except sqlite3.Error:
            conn.execute("ROLLBACK")
            conn.execute("BEGIN IMMEDIATE")
            errors = _one_by_one(conn, writes)
        else:
            errors = {}
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return errors


def _one_by_one(conn: sqlite3.Connection, writes: list[list[_Statement]]) -> dict[int, str]:
    errors: dict[int, str] = {}
    for index, statements in enumerate(writes):
        conn.execute("SAVEPOINT write")
        try:
            for sql, params in statements:
                conn.execute(sql, params)
        except sqlite3.Error as exc:
            conn.execute("ROLLBACK TO write")
            errors[index] = str(exc)
        conn.execute("RELEASE write")
    return errors


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise TwinStoreError("open", f"{path}: {exc}") from exc
    try:
        _configure(conn, path)
        _migrate(conn)
    except sqlite3.Error as exc:
        conn.close()
        raise TwinStoreError("open", f"{path}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        raise TwinStoreError("open", f"{path}: cannot switch to WAL mode (got {mode!r})")
    # The commit must be durable before any result is published, power loss included.
    conn.execute("PRAGMA synchronous = FULL")


def _migrate(conn: sqlite3.Connection) -> None:
    row = conn.execute("PRAGMA user_version").fetchone()
    version = int(row[0]) if row is not None else 0
    if version > len(MIGRATIONS):
        raise TwinStoreError("open", f"schema version {version} is newer than this edgetwin knows")
    for number, statements in enumerate(MIGRATIONS[version:], start=version + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for sql in statements:
                conn.execute(sql)
            # PRAGMA takes no parameters; number is our own int.
            conn.execute(f"PRAGMA user_version = {number}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        logger.info("twin store schema migrated to version %d", number)


def _load(conn: sqlite3.Connection) -> list[DeviceSnapshot]:
    devices = {row["id"]: row for row in conn.execute("SELECT * FROM device")}
    attributes: dict[str, dict[str, MsgAttr]] = {device_id: {} for device_id in devices}
    for row in conn.execute("SELECT * FROM device_attr ORDER BY id"):
        if row["deviceid"] in attributes:
            attributes[row["deviceid"]][row["name"]] = _attr_from_row(row)
    twin_maps: dict[str, dict[str, MsgTwin]] = {device_id: {} for device_id in devices}
    for row in conn.execute("SELECT * FROM device_twin ORDER BY id"):
        if row["deviceid"] in twin_maps:
            twin_maps[row["deviceid"]][row["name"]] = _twin_from_row(row)
    return [
        DeviceSnapshot(_record_from_row(row), attributes[device_id], twin_maps[device_id])
        for device_id, row in sorted(devices.items())
    ]

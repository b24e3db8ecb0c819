"""The ``meta`` table of the edge database (CONTRACTS.md §2): the cloud's objects as the edge last got them.

Rows are KubeEdge's ``meta(key PK, type, value)``: ``key`` is ``<ns>/<type>/<name>`` (cluster-scoped objects
such as nodes have an empty namespace: ``/node/<name>``), ``type`` the resource type (``pod``, ``configmap``,
...), ``value`` the object as JSON. Beside it, ``meta_revision`` holds one number, the store revision: it
grows by one with every change and survives restarts, so a watcher's resume point is never reused for
another state.

The connection lives on a thread of its own; one batch of writes (``BEGIN``, statements, revision,
``COMMIT``) is one call to that thread. ``synchronous = FULL``: a committed batch survives a power loss,
which is what the link's acknowledgement promises the cloud.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Self, TypeVar

from edgecore.errors import MetaStoreError

__all__ = ["MetaRow", "MetaSqlite", "meta_key"]

T = TypeVar("T")

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, type TEXT NOT NULL, value TEXT)",
    """CREATE TABLE IF NOT EXISTS meta_revision (
        id INTEGER PRIMARY KEY CHECK (id = 0), revision INTEGER NOT NULL)""",
    "INSERT OR IGNORE INTO meta_revision (id, revision) VALUES (0, 0)",
)
_UPSERT = """INSERT INTO meta (key, type, value) VALUES (?, ?, ?)
    ON CONFLICT (key) DO UPDATE SET type = excluded.type, value = excluded.value"""


def meta_key(resource_type: str, namespace: str, name: str) -> str:
    """The ``meta`` key of an object: ``<ns>/<type>/<name>`` (``/node/<name>`` when cluster-scoped)."""
    return f"{namespace}/{resource_type}/{name}"


@dataclass(frozen=True)
class MetaRow:
    """One row to write: ``value`` is the object's JSON, or None to delete the row."""

    key: str
    type: str
    value: str | None


class MetaSqlite:
    """The ``meta`` and ``meta_revision`` tables on their own connection and thread (WAL mode)."""

    def __init__(self, conn: sqlite3.Connection, thread: ThreadPoolExecutor, path: Path) -> None:
        """Use :meth:`open`; this wires a connection opened on ``thread``, which owns it from now on."""
        self._conn = conn
        self._thread = thread
        self.path = path
        self._closed = False

    @classmethod
    async def open(cls, path: Path) -> Self:
        """Open (creating the file and tables when missing) the database at ``path``."""
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="meta-store")
        try:
            conn = await asyncio.get_running_loop().run_in_executor(thread, _connect, path)
        except BaseException:
            thread.shutdown()
            raise
        return cls(conn, thread, path)

    async def load(self) -> tuple[int, list[tuple[str, str, str]]]:
        """The store revision and every row ``(key, type, value)``, ordered by key."""
        return await self._call("load", _load, self._conn)

    async def commit(self, rows: Sequence[MetaRow], revision: int) -> None:
        """Write ``rows`` in order and set the store revision to ``revision``, in one transaction."""
        await self._call("write", _commit, self._conn, rows, revision)

    async def close(self) -> None:
        """Close the connection and its thread; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            await asyncio.get_running_loop().run_in_executor(self._thread, self._conn.close)
        finally:
            self._thread.shutdown()

    async def _call(self, operation: str, function: Callable[..., T], *args: object) -> T:
        if self._closed:
            raise MetaStoreError(self.path, operation, "the store is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._thread, function, *args)
        except sqlite3.Error as exc:
            raise MetaStoreError(self.path, operation, str(exc)) from exc


# --- on the database's thread -------------------------------------------------------------------------------


def _connect(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        raise MetaStoreError(path, "open", str(exc)) from exc
    try:
        _configure(conn, path)
    except sqlite3.Error as exc:
        conn.close()
        raise MetaStoreError(path, "open", str(exc)) from exc
    except BaseException:
        conn.close()
        raise
    return conn


def _configure(conn: sqlite3.Connection, path: Path) -> None:
    # The twin store and the sub_topics table share the file from their own connections.
    conn.execute("PRAGMA busy_timeout = 5000")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
    if mode is None or str(mode[0]).lower() != "wal":
        raise MetaStoreError(path, "open", f"cannot switch to WAL mode (got {mode!r})")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute("BEGIN IMMEDIATE")
    for sql in _SCHEMA:
        conn.execute(sql)
    conn.execute("COMMIT")


def _load(conn: sqlite3.Connection) -> tuple[int, list[tuple[str, str, str]]]:
    row = conn.execute("SELECT revision FROM meta_revision WHERE id = 0").fetchone()
    rows = conn.execute("SELECT key, type, value FROM meta WHERE value IS NOT NULL ORDER BY key").fetchall()
    return (int(row[0]) if row else 0), [(str(k), str(t), str(v)) for k, t, v in rows]


def _commit(conn: sqlite3.Connection, rows: Sequence[MetaRow], revision: int) -> None:
    conn.execute("BEGIN IMMEDIATE")
    try:
        for row in rows:
            if row.value is None:
                conn.execute("DELETE FROM meta WHERE key = ?", (row.key,))
            else:
                conn.execute(_UPSERT, (row.key, row.type, row.value))
        conn.execute("UPDATE meta_revision SET revision = ? WHERE id = 0", (revision,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise

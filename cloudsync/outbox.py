"""The edge link's SQLite store: the outbox of edge → cloud messages and the versions applied from the cloud.

Two tables: ``outbox(seq, msg_id, frame)`` holds every message handed to the link until the cloud
acknowledges it, in the order it was handed over; ``applied(resource, version)`` holds the last
resourceVersion of each object the edge applied, so that a message the cloud sends again is not applied
twice. WAL mode, ``synchronous = FULL``: a committed write survives a crash and a power loss.

Writes go through one writer task: whatever is queued when it wakes is committed as one transaction (group
commit), then each waiting caller is released, so many messages handed over at once cost one commit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

import aiosqlite

from cloudsync.errors import MessageFormatError, OutboxError
from cloudsync.message import Message, decode, encode
from storage import open_sqlite

__all__ = ["Outbox", "OutboxContents"]

log = logging.getLogger(__name__)

MAX_BATCH = 512
"""Writes one transaction takes at most."""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    msg_id TEXT NOT NULL UNIQUE,
    frame TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS applied (
    resource TEXT PRIMARY KEY,
    version TEXT NOT NULL
);
"""


@dataclass(frozen=True)
class OutboxContents:
    """What a previous run left: unacknowledged messages (oldest first) and applied versions."""

    messages: list[Message]
    applied: dict[str, str]


@dataclass
class _Write:
    puts: list[tuple[str, str]] = field(default_factory=list)
    removes: list[tuple[str]] = field(default_factory=list)
    applied: list[tuple[str, str]] = field(default_factory=list)
    done: asyncio.Future[None] | None = None


class Outbox:
    """The store; :meth:`open` before use, :meth:`close` after."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self._queue: asyncio.Queue[_Write | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None

    async def open(self) -> OutboxContents:
        """Open (creating it if needed) and read what is left from before."""
        try:
            db = await open_sqlite(self.path, _SCHEMA, synchronous="FULL")
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(str(self.path), f"cannot open: {exc}") from exc
        try:
            frames = await db.execute_fetchall("SELECT msg_id, frame FROM outbox ORDER BY seq")
            applied = await db.execute_fetchall("SELECT resource, version FROM applied")
        except sqlite3.Error as exc:
            await db.close()
            raise OutboxError(str(self.path), f"cannot read: {exc}") from exc
        self._db = db
        self._queue = asyncio.Queue()
        self._writer = asyncio.create_task(self._write_loop(db), name="cloudlink-outbox")
        messages = []
        for msg_id, frame in frames:
            try:
                messages.append(decode(frame))
            except MessageFormatError as exc:
                # Only a damaged file gets here; the message cannot be sent, so it leaves the outbox.
                log.warning("unreadable outbox message dropped", extra={"msg_id": msg_id, "why": exc.reason})
                self.remove(msg_id)
        return OutboxContents(messages, {str(row[0]): str(row[1]) for row in applied})

    async def put(self, message: Message) -> None:
        """Store ``message``; returns once it is durable."""
        await self._submit(_Write(puts=[(message.msg_id, encode(message))]))

    def remove(self, msg_id: str) -> None:
        """Drop an acknowledged message (committed with the next batch; losing it re-sends a duplicate)."""
        self._queue.put_nowait(_Write(removes=[(msg_id,)]))

    async def record_applied(self, resource: str, version: str) -> None:
        """Remember that ``version`` of ``resource`` was applied; returns once it is durable."""
        await self._submit(_Write(applied=[(resource, version)]))

    async def wait(self) -> None:
        """Return or raise when the writer task ends (only when closed or on a bug)."""
        if self._writer is not None:
            # Shielded: cancelling a wait must not cancel the writer (close() flushes through it).
            await asyncio.shield(self._writer)

    async def close(self) -> None:
        """Commit what is queued, stop the writer and close the database; idempotent."""
        writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put_nowait(None)
            await writer
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    async def _submit(self, write: _Write) -> None:
        if self._writer is None or self._writer.done():
            raise OutboxError(str(self.path), "not open")
        write.done = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(write)
        await write.done

    async def _write_loop(self, db: aiosqlite.Connection) -> None:
        closing = False
        while not closing:
            batch: list[_Write] = []
            item = await self._queue.get()
            while True:
                if item is None:
                    closing = True
                else:
                    batch.append(item)
                if closing or len(batch) >= MAX_BATCH or self._queue.empty():
                    break
                item = self._queue.get_nowait()
            if batch:
                await self._commit(db, batch)

    async def _commit(self, db: aiosqlite.Connection, batch: list[_Write]) -> None:
        try:
            # A message is acknowledged only after its put was committed, so puts before removes is safe.
            puts = [row for write in batch for row in write.puts]
            removes = [row for write in batch for row in write.removes]
            applied = [row for write in batch for row in write.applied]
            if puts:
                await db.executemany("INSERT OR IGNORE INTO outbox (msg_id, frame) VALUES (?, ?)", puts)
            if removes:
                await db.executemany("DELETE FROM outbox WHERE msg_id = ?", removes)
            if applied:
                await db.executemany(
                    "INSERT INTO applied (resource, version) VALUES (?, ?)"
                    " ON CONFLICT (resource) DO UPDATE SET version = excluded.version",
                    applied,
                )
            await db.commit()
        except sqlite3.Error as exc:
            error = OutboxError(str(self.path), f"write failed: {exc}")
            log.exception("outbox write failed", extra={"path": str(self.path)})
            try:
                await db.rollback()
            except sqlite3.Error:
                log.exception("outbox rollback failed", extra={"path": str(self.path)})
            for write in batch:
                if write.done is not None and not write.done.done():
                    write.done.set_exception(error)
            return
        for write in batch:
            if write.done is not None and not write.done.done():
                write.done.set_result(None)

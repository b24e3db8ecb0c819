"""Opening one of the edge's SQLite stores with aiosqlite, the same way everywhere."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Literal

import aiosqlite

__all__ = ["BUSY_TIMEOUT_MS", "open_sqlite"]

# Several stores write the same file from their own connections (twin, meta, outbox, ...): WAL and a busy
# timeout let them take turns instead of failing with "database is locked".
BUSY_TIMEOUT_MS = 5000


async def open_sqlite(
    path: Path, schema: str, *, synchronous: Literal["NORMAL", "FULL"] | None = None
) -> aiosqlite.Connection:
    """Open (creating it and its parent directory when missing) ``path`` in WAL mode and run ``schema``.

    Raises :class:`OSError` or :class:`sqlite3.Error`; the caller names its store in its own error.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # aiosqlite finishes a failed connect on its worker thread after raising, and that thread then calls
    # into the event loop, which may be closed by then. A plain connect fails first, before any thread.
    await asyncio.to_thread(_check_openable, path)
    db = await aiosqlite.connect(path)
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA journal_mode = WAL")
        if synchronous is not None:
            await db.execute(f"PRAGMA synchronous = {synchronous}")
        await db.executescript(schema)
        await db.commit()
    except BaseException:
        await db.close()
        raise
    return db


def _check_openable(path: Path) -> None:
    sqlite3.connect(path).close()

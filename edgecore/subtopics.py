"""The extra MQTT topics the edge subscribes, kept in the ``sub_topics(topic PK)`` table (CONTRACTS.md §2).

KubeEdge's cloud can ask an edge to subscribe topics beyond the fixed ``$hw/events`` ones; they must
survive a restart, so they live in the edge's SQLite file next to the twins and are subscribed again
at start.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import aiosqlite

from edgecore.errors import EdgeCoreError
from storage import open_sqlite

_SCHEMA = "CREATE TABLE IF NOT EXISTS sub_topics (topic TEXT PRIMARY KEY);"

__all__ = ["InvalidTopicError", "SubTopicStore", "SubTopicStoreError", "check_topic_filter"]

_MAX_TOPIC_BYTES = 65535  # MQTT's limit on a UTF-8 topic string


class InvalidTopicError(EdgeCoreError):
    """``topic`` is not a valid MQTT topic filter."""

    def __init__(self, topic: str, reason: str) -> None:
        super().__init__(f"invalid topic filter {topic!r}: {reason}")
        self.topic = topic
        self.reason = reason


class SubTopicStoreError(EdgeCoreError):
    """The ``sub_topics`` table of ``path`` cannot be read or written."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"sub_topics table in {path}: {reason}")
        self.path = path
        self.reason = reason


def check_topic_filter(topic: str) -> str:
    """Return ``topic`` if it is a valid MQTT filter (``+`` a whole level, ``#`` alone and last)."""
    if not topic:
        raise InvalidTopicError(topic, "empty")
    if "\0" in topic or len(topic.encode()) > _MAX_TOPIC_BYTES:
        raise InvalidTopicError(topic, "contains NUL or is longer than 65535 bytes")
    levels = topic.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise InvalidTopicError(topic, "'#' must be a whole level and the last one")
        if "+" in level and level != "+":
            raise InvalidTopicError(topic, "'+' must be a whole level")
    return topic


class SubTopicStore:
    """The ``sub_topics`` table on its own connection to the edge's database file (WAL mode)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        """Open the file (creating it and the table when missing)."""
        try:
            self._db = await open_sqlite(
                self._path, "CREATE TABLE IF NOT EXISTS sub_topics (topic TEXT PRIMARY KEY);"
            )
        except (OSError, sqlite3.Error) as exc:
            raise SubTopicStoreError(self._path, f"cannot open: {exc}") from exc

    async def close(self) -> None:
        """Close the connection; idempotent."""
        db, self._db = self._db, None
        if db is not None:
            await db.close()

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise SubTopicStoreError(self._path, "the store is not open")
        return self._db

    async def topics(self) -> list[str]:
        """Every stored topic, sorted."""
        try:
            async with self._conn().execute("SELECT topic FROM sub_topics ORDER BY topic") as cursor:
                return [str(row[0]) async for row in cursor]
        except sqlite3.Error as exc:
            raise SubTopicStoreError(self._path, str(exc)) from exc

    async def add(self, topic: str) -> bool:
        """Store ``topic`` durably; True if it was not stored before."""
        return await self._write(
            "INSERT OR IGNORE INTO sub_topics (topic) VALUES (?)", check_topic_filter(topic)
        )

    async def remove(self, topic: str) -> bool:
        """Forget ``topic``; True if it was stored."""
        return await self._write("DELETE FROM sub_topics WHERE topic = ?", topic)

    async def _write(self, sql: str, topic: str) -> bool:
        db = self._conn()
        try:
            cursor = await db.execute(sql, (topic,))
            await db.commit()
        except sqlite3.Error as exc:
            raise SubTopicStoreError(self._path, str(exc)) from exc
        return cursor.rowcount > 0

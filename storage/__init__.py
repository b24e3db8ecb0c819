"""Small shared pieces for the SQLite files the edge keeps (one database file, several writers)."""

from storage.sqlite import BUSY_TIMEOUT_MS, open_sqlite

__all__ = ["BUSY_TIMEOUT_MS", "open_sqlite"]

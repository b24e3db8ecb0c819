"""The twin's SQLite tables (KubeEdge's ``device``, ``device_attr``, ``device_twin``) and their migrations.

Each migration runs once, in order, in its own transaction; ``PRAGMA user_version`` records how many ran.
Migration 1 creates KubeEdge's tables as its beego ORM does (``IF NOT EXISTS``, so an edgecore database is
adopted as it is); later ones only add.
"""

from __future__ import annotations

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE IF NOT EXISTS device (
            id VARCHAR(64) NOT NULL PRIMARY KEY,
            name TEXT, description TEXT, state TEXT, last_online TEXT)""",
        """CREATE TABLE IF NOT EXISTS device_attr (
            id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            deviceid TEXT, name TEXT, description TEXT, value TEXT, optional INTEGER,
            attr_type TEXT, metadata TEXT)""",
        """CREATE TABLE IF NOT EXISTS device_twin (
            id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT,
            deviceid TEXT, name TEXT, description TEXT, expected TEXT, actual TEXT,
            expected_meta TEXT, actual_meta TEXT, expected_version TEXT, actual_version TEXT,
            optional INTEGER, attr_type TEXT, metadata TEXT)""",
    ),
    (
        # Upserts need one row per (device, property); KubeEdge never enforced it, so keep the newest row.
        "DELETE FROM device_attr WHERE id NOT IN (SELECT MAX(id) FROM device_attr GROUP BY deviceid, name)",
        "DELETE FROM device_twin WHERE id NOT IN (SELECT MAX(id) FROM device_twin GROUP BY deviceid, name)",
        "CREATE UNIQUE INDEX device_attr_device_name ON device_attr (deviceid, name)",
        "CREATE UNIQUE INDEX device_twin_device_name ON device_twin (deviceid, name)",
        # [ext] the device's v1beta1 spec and its model's spec, as JSON, for membership messages.
        "ALTER TABLE device ADD COLUMN spec TEXT",
        "ALTER TABLE device ADD COLUMN model TEXT",
    ),
)

SCHEMA_VERSION = len(MIGRATIONS)

"""The twin's SQLite store on a real database file: schema, round trip, group commit, failures."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from device_models import MsgAttr, MsgTwin, TypeMetadata
from devicetwin import DeviceRecord, DeviceSnapshot, TwinStore, TwinStoreError
from devicetwin.schema import SCHEMA_VERSION
from devicetwin.store import DeleteAttr, DeleteDevice, PutAttr, PutDevice, PutTwin


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "edgecore.db"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
async def store(db_path: Path, registry: CollectorRegistry) -> AsyncIterator[TwinStore]:
    opened = await TwinStore.open(db_path, registry=registry)
    try:
        yield opened
    finally:
        await opened.close()


RECORD = DeviceRecord(
    id="plant/pump",
    name="pump",
    description="water pump",
    state="online",
    last_online="2024-05-01T10:00:00Z",
    spec={"protocol": {"protocolName": "modbus", "configData": {"port": "5502"}}},
    model={"properties": [{"name": "speed", "type": "INT"}]},
)
SPEED = MsgTwin.model_validate(
    {
        "expected": {"value": "3", "metadata": {"timestamp": 1700000000000}},
        "actual": {"value": "2", "metadata": {"timestamp": 1700000000500}},
        "optional": False,
        "metadata": {"type": "int"},
        "expected_version": {"cloud": 4, "edge": 1},
        "actual_version": {"cloud": 0, "edge": 9},
    }
)
DELETED = MsgTwin.model_validate(
    {
        "optional": True,
        "metadata": {"type": "deleted"},
        "expected_version": {"cloud": 0, "edge": 2},
        "actual_version": {"cloud": 0, "edge": 5},
    }
)
SERIAL = MsgAttr(value="P-100", optional=True, metadata=TypeMetadata(type="string"))


def sql(db_path: Path, statement: str) -> list[tuple[object, ...]]:
    """Run one statement on a separate plain sqlite3 connection (as another process would)."""
    with sqlite3.connect(db_path) as conn:
        return conn.execute(statement).fetchall()


async def test_open_creates_the_kubeedge_tables_in_wal_mode(store: TwinStore, db_path: Path) -> None:
    tables = {row[0] for row in sql(db_path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"device", "device_attr", "device_twin"} <= tables
    twin_columns = {row[1] for row in sql(db_path, "PRAGMA table_info(device_twin)")}
    assert twin_columns >= {
        "id",
        "deviceid",
        "name",
        "description",
        "expected",
        "actual",
        "expected_meta",
        "actual_meta",
        "expected_version",
        "actual_version",
        "optional",
        "attr_type",
        "metadata",
    }
    assert sql(db_path, "PRAGMA journal_mode") == [("wal",)]
    assert sql(db_path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert await store.load() == []


async def test_written_devices_load_back_identical_after_reopening(db_path: Path) -> None:
    async with await TwinStore.open(db_path) as store:
        await store.write(
            [
                PutDevice(RECORD),
                PutAttr(RECORD.id, "serial", SERIAL),
                PutTwin(RECORD.id, "speed", SPEED),
                PutTwin(RECORD.id, "mode", DELETED),
            ]
        )

    async with await TwinStore.open(db_path) as reopened:
        loaded = await reopened.load()

    assert loaded == [DeviceSnapshot(RECORD, {"serial": SERIAL}, {"speed": SPEED, "mode": DELETED})]
    row = sql(db_path, "SELECT expected, expected_version, attr_type FROM device_twin WHERE name = 'speed'")
    assert row == [("3", '{"cloud":4,"edge":1}', "int")]


async def test_upserts_replace_and_deletes_remove(store: TwinStore) -> None:
    await store.write(
        [PutDevice(RECORD), PutAttr(RECORD.id, "serial", SERIAL), PutTwin(RECORD.id, "speed", SPEED)]
    )
    newer = SPEED.model_copy(update={"optional": True})
    other = DeviceRecord(id="plant/valve", name="valve")

    await store.write(
        [
            PutTwin(RECORD.id, "speed", newer),
            DeleteAttr(RECORD.id, "serial"),
            PutDevice(other),
            PutTwin(other.id, "open", SPEED),
        ]
    )
    await store.write([DeleteDevice(other.id)])

    assert await store.load() == [DeviceSnapshot(RECORD, {}, {"speed": newer})]


async def test_concurrent_writes_share_transactions(store: TwinStore, registry: CollectorRegistry) -> None:
    records = [DeviceRecord(id=f"ns/d{i}", name=f"d{i}") for i in range(200)]

    await asyncio.gather(*(store.write([PutDevice(record)]) for record in records))

    assert len(await store.load()) == 200
    commits = registry.get_sample_value("edgetwin_twin_store_batch_size_count")
    written = registry.get_sample_value("edgetwin_twin_store_batch_size_sum")
    assert written == 200
    assert commits is not None
    assert commits < 200, "writes arriving together must be grouped"
    assert registry.get_sample_value("edgetwin_twin_store_commit_seconds_count") == commits


async def test_one_failing_write_fails_alone(store: TwinStore, db_path: Path) -> None:
    # A trigger stands in for a disk that refuses one row: the store sees a real SQLite error.
    sql(
        db_path,
        "CREATE TRIGGER refuse BEFORE INSERT ON device WHEN NEW.id = 'ns/bad' "
        "BEGIN SELECT RAISE(ABORT, 'disk says no'); END",
    )
    good = [DeviceRecord(id=f"ns/ok{i}", name=f"ok{i}") for i in range(20)]

    outcomes = await asyncio.gather(
        *(store.write([PutDevice(record)]) for record in good[:10]),
        store.write([PutDevice(DeviceRecord(id="ns/bad", name="bad"))]),
        *(store.write([PutDevice(record)]) for record in good[10:]),
        return_exceptions=True,
    )

    failures = [outcome for outcome in outcomes if outcome is not None]
    assert len(failures) == 1
    assert isinstance(failures[0], TwinStoreError)
    assert "disk says no" in str(failures[0])
    assert [device.id for device in await store.load()] == sorted(record.id for record in good)


async def test_a_failed_write_keeps_nothing_of_itself(store: TwinStore, db_path: Path) -> None:
    sql(
        db_path,
        "CREATE TRIGGER refuse BEFORE INSERT ON device_twin WHEN NEW.name = 'bad' "
        "BEGIN SELECT RAISE(ABORT, 'refused'); END",
    )

    with pytest.raises(TwinStoreError, match="refused"):
        await store.write(
            [PutDevice(RECORD), PutTwin(RECORD.id, "ok", SPEED), PutTwin(RECORD.id, "bad", SPEED)]
        )

    assert await store.load() == []


async def test_a_closed_store_refuses_writes(db_path: Path) -> None:
    store = await TwinStore.open(db_path)
    await store.close()
    await store.close()

    with pytest.raises(TwinStoreError, match="closed"):
        await store.write([PutDevice(RECORD)])


async def test_close_commits_writes_already_queued(db_path: Path) -> None:
    store = await TwinStore.open(db_path)
    pending = [
        asyncio.ensure_future(store.write([PutDevice(DeviceRecord(f"ns/d{i}", f"d{i}"))])) for i in range(5)
    ]
    await asyncio.sleep(0)  # let the writes reach the queue

    await store.close()

    await asyncio.gather(*pending)
    assert sql(db_path, "SELECT COUNT(*) FROM device") == [(5,)]


async def test_an_edgecore_database_is_adopted(db_path: Path) -> None:
    # The tables as KubeEdge's beego ORM creates them, with a duplicate twin row it never prevented.
    with sqlite3.connect(db_path) as conn:
        conn.executescript(
            """
            CREATE TABLE device (id VARCHAR(64) NOT NULL PRIMARY KEY, name TEXT, description TEXT,
                                 state TEXT, last_online TEXT);
            CREATE TABLE device_attr (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, deviceid TEXT, name TEXT,
                                      description TEXT, value TEXT, optional INTEGER, attr_type TEXT,
                                      metadata TEXT);
            CREATE TABLE device_twin (id INTEGER NOT NULL PRIMARY KEY AUTOINCREMENT, deviceid TEXT, name TEXT,
                                      description TEXT, expected TEXT, actual TEXT, expected_meta TEXT,
                                      actual_meta TEXT, expected_version TEXT, actual_version TEXT,
                                      optional INTEGER, attr_type TEXT, metadata TEXT);
            INSERT INTO device VALUES ('default/lamp', 'lamp', '', 'online', '2024-01-01 10:00:00');
            INSERT INTO device_twin (deviceid, name, expected, actual, actual_meta, actual_version, optional,
                                     attr_type, metadata)
                VALUES ('default/lamp', 'power', '', 'on', '{"timestamp":1}', '{"cloud":0,"edge":1}', 1,
                        'string', '{}');
            INSERT INTO device_twin (deviceid, name, expected, actual, actual_meta, actual_version, optional,
                                     attr_type, metadata)
                VALUES ('default/lamp', 'power', '', 'off', '{"timestamp":2}', '{"cloud":0,"edge":2}', 1,
                        'string', '{}');
            """
        )

    async with await TwinStore.open(db_path) as store:
        [lamp] = await store.load()

    assert lamp.record == DeviceRecord(
        id="default/lamp", name="lamp", state="online", last_online="2024-01-01 10:00:00"
    )
    power = lamp.twins["power"]
    assert (power.expected, power.actual_value) == (None, "off")
    assert power.actual_version is not None
    assert power.actual_version.edge == 2


async def test_a_database_from_a_newer_edgetwin_is_refused(db_path: Path) -> None:
    sql(db_path, f"PRAGMA user_version = {SCHEMA_VERSION + 1}")

    with pytest.raises(TwinStoreError, match="newer"):
        await TwinStore.open(db_path)


async def test_an_unopenable_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(TwinStoreError, match="open"):
        await TwinStore.open(tmp_path / "missing-dir" / "edgecore.db")

"""The edge link's SQLite outbox: durable, ordered, survives a reopen; applied versions too."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from pathlib import Path

import pytest

from cloudsync import Group, Message, Operation, Outbox, OutboxError


def message(n: int) -> Message:
    return Message.new(
        source="twin",
        group=Group.TWIN,
        operation=Operation.UPDATE,
        resource="device/default/d/twin",
        content=n,
    )


async def test_messages_survive_a_reopen_in_order_until_removed(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "link.db")
    assert (await outbox.open()).messages == []
    sent = [message(n) for n in range(300)]
    # Handed over at once: group-committed, and each put returns only once durable.
    await asyncio.gather(*(outbox.put(m) for m in sent))
    for m in sent[:100]:
        outbox.remove(m.msg_id)
    await outbox.record_applied("default/device/d1", "42")
    await outbox.close()

    reopened = Outbox(tmp_path / "link.db")
    contents = await reopened.open()
    try:
        assert [m.content for m in contents.messages] == list(range(100, 300))
        assert contents.messages[0] == sent[100]
        assert contents.applied == {"default/device/d1": "42"}
    finally:
        await reopened.close()


async def test_an_unreadable_row_is_dropped_and_the_rest_loads(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "link.db")
    await outbox.open()
    await outbox.put(message(1))
    await outbox.close()
    with contextlib.closing(sqlite3.connect(tmp_path / "link.db")) as db, db:
        db.execute("INSERT INTO outbox (msg_id, frame) VALUES ('broken', '{not json')")

    reopened = Outbox(tmp_path / "link.db")
    contents = await reopened.open()
    await reopened.close()

    assert [m.content for m in contents.messages] == [1]
    with contextlib.closing(sqlite3.connect(tmp_path / "link.db")) as db:
        assert db.execute("SELECT msg_id FROM outbox WHERE msg_id = 'broken'").fetchall() == []


async def test_using_a_closed_outbox_or_a_bad_path_raises_outbox_error(tmp_path: Path) -> None:
    outbox = Outbox(tmp_path / "link.db")
    with pytest.raises(OutboxError, match="not open"):
        await outbox.put(message(1))
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(OutboxError, match="cannot"):
        await Outbox(tmp_path / "dir.db").open()

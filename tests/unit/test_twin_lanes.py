"""Serial lanes: per-key order, independence of keys, failures contained."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest

from devicetwin.lanes import SerialLanes


async def test_jobs_of_one_key_run_in_order_and_keys_run_side_by_side() -> None:
    lanes = SerialLanes()
    done: list[str] = []
    gate = asyncio.Event()

    async def job(name: str, wait: bool = False) -> None:
        if wait:
            await gate.wait()
        done.append(name)

    lanes.submit("slow", partial(job, "slow-1", wait=True))
    lanes.submit("slow", partial(job, "slow-2"))
    for i in range(3):
        lanes.submit("fast", partial(job, f"fast-{i}"))
    result = await lanes.run("fast", lambda: asyncio.sleep(0, result="ran"))

    assert result == "ran"
    assert done == ["fast-0", "fast-1", "fast-2"]
    gate.set()
    await lanes.wait_idle()
    assert done[-2:] == ["slow-1", "slow-2"]


async def test_a_failing_job_does_not_stop_its_lane() -> None:
    depths: list[int] = []
    lanes = SerialLanes(on_depth=depths.append)

    async def boom() -> None:
        raise ValueError("bad message")

    lanes.submit("k", boom)
    with pytest.raises(ValueError, match="bad message"):
        await lanes.run("k", boom)
    assert await lanes.run("k", lambda: asyncio.sleep(0, result=1)) == 1
    assert lanes.depth == 0
    assert max(depths) >= 1
    assert depths[-1] == 0


async def test_cancel_drops_queued_jobs() -> None:
    lanes = SerialLanes()
    started = asyncio.Event()
    ran: list[int] = []

    async def blocker() -> None:
        started.set()
        await asyncio.Event().wait()

    async def later() -> None:
        ran.append(1)

    lanes.submit("k", blocker)
    lanes.submit("k", later)
    await started.wait()

    await lanes.cancel()

    assert ran == []
    assert lanes.depth == 0

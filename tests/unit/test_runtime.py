"""edgetwin.runtime.run: the daemons' event loop and collector settings."""

from __future__ import annotations

import asyncio
import gc

import pytest
import uvloop

from edgetwin.runtime import GC_THRESHOLD, run


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    await asyncio.sleep(0)
    return type(asyncio.get_running_loop())


async def gc_threshold() -> int:
    return gc.get_threshold()[0]


async def fail() -> None:
    raise LookupError("from the coroutine")


def test_runs_on_uvloop_when_installed_and_returns_the_result() -> None:
    assert run(loop_type()) is uvloop.Loop


def test_the_collector_threshold_holds_while_running_and_is_restored_after() -> None:
    before = gc.get_threshold()
    assert run(gc_threshold()) == GC_THRESHOLD
    assert gc.get_threshold() == before


def test_an_exception_of_the_coroutine_propagates_and_settings_are_restored() -> None:
    before = gc.get_threshold()
    with pytest.raises(LookupError, match="from the coroutine"):
        run(fail())
    assert gc.get_threshold() == before

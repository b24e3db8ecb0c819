"""The supervisor: ordered start and stop, restart with exponential backoff, fatal errors surface."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import CollectorRegistry

from edgetwin.testing import wait_for
from eventbus import BackoffPolicy
from supervision import ModuleFailedError, ModuleState, Supervisor


class BadSetting(Exception):
    """Stands for a configuration error: restarting cannot cure it."""


class Worker:
    """A module with a real background task; the test makes it crash or refuse to start."""

    def __init__(self, name: str, journal: list[str], *, start_failures: int = 0) -> None:
        self._name = name
        self.journal = journal
        self.start_failures = start_failures
        self.start_times: list[float] = []
        self.fail_with: BaseException | None = None
        self._task: asyncio.Task[None] | None = None
        self._crash: asyncio.Future[None] | None = None

    @property
    def name(self) -> str:
        return self._name

    async def start(self) -> None:
        self.start_times.append(time.monotonic())
        if self.fail_with is not None:
            raise self.fail_with
        if self.start_failures:
            self.start_failures -= 1
            raise ConnectionError(f"{self._name} cannot start yet")
        self._crash = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._work(self._crash))
        self.journal.append(f"start {self._name}")

    async def _work(self, crash: asyncio.Future[None]) -> None:
        await crash

    def crash(self, error: BaseException) -> None:
        assert self._crash is not None
        self._crash.set_exception(error)

    async def wait(self) -> None:
        assert self._task is not None
        await self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
            self.journal.append(f"stop {self._name}")

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()


def restarts(registry: CollectorRegistry, module: str) -> float | None:
    return registry.get_sample_value("edgetwin_module_restarts_total", {"module": module})


FAST = BackoffPolicy(minimum=0.05, maximum=0.4)


async def test_starts_in_order_and_stops_in_reverse() -> None:
    journal: list[str] = []
    registry = CollectorRegistry()
    supervisor = Supervisor([Worker("a", journal), Worker("b", journal)], registry=registry, backoff=FAST)
    await supervisor.start()
    try:
        assert journal == ["start a", "start b"]
        assert supervisor.healthy
        assert [(s.name, s.state) for s in supervisor.statuses] == [
            ("a", ModuleState.RUNNING),
            ("b", ModuleState.RUNNING),
        ]
        assert registry.get_sample_value("edgetwin_module_up", {"module": "b"}) == 1
        assert restarts(registry, "a") == 0
    finally:
        await supervisor.stop()
    assert journal == ["start a", "start b", "stop b", "stop a"]
    assert not supervisor.healthy
    assert {s.state for s in supervisor.statuses} == {ModuleState.STOPPED}
    assert registry.get_sample_value("edgetwin_module_up", {"module": "a"}) == 0


async def test_crashed_module_restarts_and_shows_it() -> None:
    journal: list[str] = []
    registry = CollectorRegistry()
    worker = Worker("twin", journal)
    supervisor = Supervisor([Worker("bus", journal), worker], registry=registry, backoff=FAST)
    await supervisor.start()
    try:
        worker.crash(RuntimeError("store exploded"))
        await wait_for(lambda: supervisor.statuses[1].state is ModuleState.BACKOFF, what="backoff state")
        assert not supervisor.healthy
        await wait_for(lambda: supervisor.healthy and worker.running, what="restarted module")
        status = supervisor.statuses[1]
        assert status.restarts == 1
        assert status.last_error == "RuntimeError: store exploded"
        assert status.as_dict()["last_error"] == "RuntimeError: store exploded"
        assert restarts(registry, "twin") == 1
        assert restarts(registry, "bus") == 0
        # The other module was left alone.
        assert journal.count("start bus") == 1
    finally:
        await supervisor.stop()


async def test_restart_delays_grow_exponentially() -> None:
    worker = Worker("flaky", [], start_failures=4)
    # Jitter of 10 %: each delay is at least 90 % of its step.
    supervisor = Supervisor([worker], backoff=BackoffPolicy(minimum=0.05, maximum=10.0, jitter=0.1))
    await supervisor.start()
    try:
        gaps = [b - a for a, b in zip(worker.start_times, worker.start_times[1:], strict=False)]
        assert len(gaps) == 4
        for attempt, gap in enumerate(gaps, start=1):
            assert gap >= 0.05 * 2 ** (attempt - 1) * 0.9
        assert gaps[3] > gaps[0] * 4
        assert supervisor.statuses[0].restarts == 4
        assert supervisor.statuses[0].last_error == "ConnectionError: flaky cannot start yet"
    finally:
        await supervisor.stop()


async def test_a_module_that_ran_long_restarts_after_the_shortest_delay() -> None:
    policy = BackoffPolicy(minimum=0.05, maximum=1.0, factor=10.0)
    worker = Worker("twin", [], start_failures=2)  # delays of 0.05 s and 0.5 s: the next step is 1 s
    supervisor = Supervisor([worker], backoff=policy)
    await supervisor.start()
    try:
        running_since = worker.start_times[-1]
        await wait_for(lambda: time.monotonic() - running_since >= policy.maximum, what="a long run")
        crashed_at = time.monotonic()
        worker.crash(RuntimeError("late crash"))
        await wait_for(lambda: len(worker.start_times) == 4 and worker.running, what="the restart")
        # Without the reset the delay would be at least half the 1 s step.
        assert worker.start_times[3] - crashed_at < 0.5
    finally:
        await supervisor.stop()


async def test_fatal_error_at_start_stops_what_started_and_raises() -> None:
    journal: list[str] = []
    broken = Worker("twin", journal)
    broken.fail_with = BadSetting("database.dataSource is a directory")
    supervisor = Supervisor([Worker("bus", journal), broken], backoff=FAST, fatal=(BadSetting,))
    with pytest.raises(ModuleFailedError) as caught:
        await supervisor.start()
    assert caught.value.module == "twin"
    assert isinstance(caught.value.error, BadSetting)
    assert journal == ["start bus", "stop bus"]
    assert len(broken.start_times) == 1  # not retried
    assert supervisor.statuses[1].state is ModuleState.FAILED


async def test_fatal_crash_while_running_surfaces_through_wait() -> None:
    worker = Worker("twin", [])
    supervisor = Supervisor([worker], backoff=FAST, fatal=(BadSetting,))
    await supervisor.start()
    try:
        waiter = asyncio.create_task(supervisor.wait())
        worker.crash(BadSetting("schema from the future"))
        with pytest.raises(ModuleFailedError, match="schema from the future"):
            await asyncio.wait_for(waiter, timeout=5)
        assert supervisor.statuses[0].state is ModuleState.FAILED
        assert supervisor.statuses[0].restarts == 0
    finally:
        await supervisor.stop()


async def test_stop_during_startup_backoff_ends_start() -> None:
    worker = Worker("bus", [], start_failures=1000)
    supervisor = Supervisor([worker], backoff=FAST)
    starting = asyncio.create_task(supervisor.start())
    await wait_for(lambda: len(worker.start_times) >= 2, what="a retried start")
    assert supervisor.statuses[0].state is ModuleState.BACKOFF
    await supervisor.stop()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(starting, timeout=5)
    assert not worker.running


def test_module_names_must_be_unique() -> None:
    with pytest.raises(ValueError, match="unique"):
        Supervisor([Worker("a", []), Worker("a", [])])

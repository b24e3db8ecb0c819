"""Serial lanes: jobs with the same key run one after another, jobs with different keys run side by side.

The twin gives each device a lane, so one device's messages keep their order while a slow or stuck device
never holds up the others. A lane has a task only while it has work: an idle device costs nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")
Job = Callable[[], Awaitable[None]]


class SerialLanes:
    """Per-key FIFO execution of async jobs; ``on_depth`` is told the number of queued jobs on each change."""

    def __init__(self, on_depth: Callable[[int], None] | None = None) -> None:
        self._lanes: dict[str, deque[Job]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._depth = 0
        self._on_depth = on_depth

    @property
    def depth(self) -> int:
        """Jobs queued and not started yet, over all lanes."""
        return self._depth

    def submit(self, key: str, job: Job) -> None:
        """Queue ``job`` on lane ``key``; an exception it raises is logged, never propagated."""
        lane = self._lanes.get(key)
        if lane is None:
            lane = self._lanes[key] = deque()
            task = asyncio.get_running_loop().create_task(self._drain(key, lane), name=f"lane:{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        lane.append(job)
        self._set_depth(self._depth + 1)

    async def run(self, key: str, job: Callable[[], Awaitable[T]]) -> T:
        """Queue ``job`` on lane ``key`` and return its result (or raise its exception) once it ran."""
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()

        async def wrapped() -> None:
            try:
                result = await job()
            except Exception as exc:  # noqa: BLE001 - handed to the caller through the future
                if not done.done():
                    done.set_exception(exc)
            else:
                if not done.done():
                    done.set_result(result)

        self.submit(key, wrapped)
        return await done

    async def wait_idle(self) -> None:
        """Return once every lane ran out of work (jobs submitted meanwhile included)."""
        while self._tasks:
            await asyncio.wait(set(self._tasks))

    async def cancel(self) -> None:
        """Cancel running jobs, drop queued ones, and wait for the lane tasks to end."""
        for lane in self._lanes.values():
            lane.clear()
        self._set_depth(0)
        tasks = set(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, key: str, lane: deque[Job]) -> None:
        try:
            while lane:
                job = lane.popleft()
                self._set_depth(self._depth - 1)
                try:
                    await job()
                except Exception:
                    logger.exception("job failed on lane %s", key, extra={"lane": key})
        finally:
            # No await between the emptiness check and this removal: a job submitted later starts a new task.
            if self._lanes.get(key) is lane:
                del self._lanes[key]

    def _set_depth(self, depth: int) -> None:
        self._depth = depth
        if self._on_depth is not None:
            self._on_depth(depth)

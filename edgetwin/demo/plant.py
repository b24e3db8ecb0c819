"""What every simulated device of the demo shares: a real protocol server and a physics loop beside it."""

from __future__ import annotations

import abc
import asyncio
import contextlib
from collections.abc import Iterator
from types import TracebackType
from typing import Self


class Plant(abc.ABC):
    """Use with ``async with``: the server starts, then :meth:`step` runs every ``tick`` seconds."""

    def __init__(self, tick: float) -> None:
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self._held = False

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Stop the physics inside the block, so that a value set by hand stays as it was set."""
        self._held = True
        try:
            yield
        finally:
            self._held = False

    @abc.abstractmethod
    async def serve(self) -> None:
        """Start the protocol server with the plant's initial values."""

    @abc.abstractmethod
    async def shutdown(self) -> None:
        """Stop the protocol server."""

    @abc.abstractmethod
    async def step(self) -> None:
        """Advance the physics by one tick, reading and writing the server's values."""

    async def __aenter__(self) -> Self:
        await self.serve()
        self._task = asyncio.create_task(self._run(), name=f"demo-{type(self).__name__.lower()}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.shutdown()

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._tick)
            if not self._held:
                await self.step()

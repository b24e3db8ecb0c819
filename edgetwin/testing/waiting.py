"""Wait on a condition with a timeout, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar, overload

from device_models import EdgetwinError

T = TypeVar("T")


class WaitTimeout(EdgetwinError, AssertionError):
    """The condition did not become true in time; the message says what was awaited and the last value."""


class _Deadline:
    """The bookkeeping shared by the async and the blocking wait: the clock and the last value seen."""

    def __init__(self, condition: Callable[..., object], timeout: float, what: str | None) -> None:
        self.timeout = timeout
        self.name = what or getattr(condition, "__qualname__", repr(condition))
        self.end = time.monotonic() + timeout
        self.last: object = None

    def check(self) -> None:
        if time.monotonic() >= self.end:
            raise WaitTimeout(
                f"timed out after {self.timeout:.1f}s waiting for {self.name}; last value: {self.last!r}"
            )


@overload
async def wait_for(
    condition: Callable[[], Awaitable[T]], timeout: float = ..., interval: float = ..., what: str | None = ...
) -> T: ...


@overload
async def wait_for(
    condition: Callable[[], T], timeout: float = ..., interval: float = ..., what: str | None = ...
) -> T: ...


async def wait_for(
    condition: Callable[[], T | Awaitable[T]],
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str | None = None,
) -> T:
    """Poll ``condition`` (sync or async) until it returns a truthy value, and return that value.

    Raises :class:`WaitTimeout` naming ``what`` (or the condition) and the last value seen.
    Exceptions raised by the condition count as "not yet" and are shown if time runs out.
    """
    deadline = _Deadline(condition, timeout, what)
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result
            deadline.last = result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; reported on timeout
            deadline.last = exc
        deadline.check()
        await asyncio.sleep(interval)


def wait_for_sync(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str | None = None
) -> T:
    """Blocking twin of :func:`wait_for`, for fixtures and helpers that run outside an event loop."""
    deadline = _Deadline(condition, timeout, what)
    while True:
        try:
            result = condition()
            if result:
                return result
            deadline.last = result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; reported on timeout
            deadline.last = exc
        deadline.check()
        time.sleep(interval)

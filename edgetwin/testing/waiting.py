"""Wait on a condition with a timeout, instead of sleeping a fixed time."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from device_models import EdgetwinError

T = TypeVar("T")


class WaitTimeout(EdgetwinError, AssertionError):
    """The condition did not become true in time; the message says what was awaited and the last value."""


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
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return result  # type: ignore[return-value]
            last = result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__qualname__", repr(condition))
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {name}; last value: {last!r}")
        await asyncio.sleep(interval)


def wait_for_sync(
    condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.02, what: str | None = None
) -> T:
    """Blocking twin of :func:`wait_for`, for fixtures that run outside an event loop."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            result = condition()
            if result:
                return result
            last = result
        except Exception as exc:  # noqa: BLE001 - any failure means "not yet"; reported on timeout
            last = exc
        if time.monotonic() >= deadline:
            name = what or getattr(condition, "__qualname__", repr(condition))
            raise WaitTimeout(f"timed out after {timeout:.1f}s waiting for {name}; last value: {last!r}")
        time.sleep(interval)

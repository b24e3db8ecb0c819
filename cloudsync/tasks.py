"""Task helpers shared by the two ends of the link."""

from __future__ import annotations

import asyncio

__all__ = ["cancel_task"]


async def cancel_task(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait for it to end; a cancellation of the caller itself still propagates."""
    if task is None or task.done():
        return
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise

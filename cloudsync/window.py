"""The in-flight window of one end of the link: messages sent and not yet acknowledged."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from cloudsync.message import Message

__all__ = ["InFlight"]


class InFlight:
    """Sent, unacknowledged messages in send order, each with the time it was last sent."""

    def __init__(self, ack_timeout: float) -> None:
        self.ack_timeout = ack_timeout
        self._sent: dict[str, tuple[Message, float]] = {}

    def __len__(self) -> int:
        return len(self._sent)

    def messages(self) -> list[Message]:
        """The messages, oldest send first."""
        return [message for message, _ in self._sent.values()]

    def add(self, message: Message) -> None:
        """Record that ``message`` was sent now."""
        self._sent[message.msg_id] = (message, time.monotonic())

    def pop(self, msg_id: str) -> Message | None:
        """Take out the message ``msg_id`` acknowledges, if it is in flight."""
        entry = self._sent.pop(msg_id, None)
        return entry[0] if entry is not None else None

    def discard(self, superseded: Callable[[Message], bool]) -> int:
        """Drop the messages ``superseded`` says need no acknowledgement any more; returns how many."""
        gone = [msg_id for msg_id, (message, _) in self._sent.items() if superseded(message)]
        for msg_id in gone:
            del self._sent[msg_id]
        return len(gone)

    def clear(self) -> list[Message]:
        """Take out every message, oldest first."""
        messages = self.messages()
        self._sent.clear()
        return messages

    async def wait(self, wake: asyncio.Event) -> list[Message]:
        """Wait for ``wake`` or for the oldest message's ack timeout; return the messages to send again.

        The returned messages count as sent now.
        """
        oldest = min((sent_at for _, sent_at in self._sent.values()), default=None)
        if oldest is None:
            await wake.wait()
            return []
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, oldest + self.ack_timeout - time.monotonic())):
                await wake.wait()
        now = time.monotonic()
        due = [message for message, sent_at in self._sent.values() if now - sent_at >= self.ack_timeout]
        for message in due:
            self._sent[message.msg_id] = (message, now)
        return due

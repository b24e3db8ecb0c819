"""Exponential backoff with jitter, for reconnecting to devices (and asking the edge for membership)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BackoffPolicy:
    """Delays grow from ``minimum`` by ``factor`` per failed attempt, up to ``maximum`` (seconds)."""

    minimum: float = 0.5
    maximum: float = 30.0
    factor: float = 2.0


class Backoff:
    """The delays of one retry loop: call :meth:`next_delay` after each failure, :meth:`reset` on success.

    Each delay is drawn from the upper half of the current step ("equal jitter"), so devices that failed
    together (a gateway rebooting) do not all retry in the same instant, yet no retry comes much too soon.
    """

    def __init__(self, policy: BackoffPolicy) -> None:
        self._policy = policy
        self._attempt = 0

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        step = min(self._policy.maximum, self._policy.minimum * self._policy.factor**self._attempt)
        self._attempt += 1
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        """Start again from the shortest delay."""
        self._attempt = 0

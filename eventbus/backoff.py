"""Exponential backoff with jitter: the delays of a retry loop (reconnects, restarts, repeated requests).

One style serves every loop: the step grows from ``minimum`` by ``factor`` per failed attempt up to
``maximum``, and each delay is drawn at random from the top ``jitter`` fraction of the step. With the default
``jitter=0.5`` ("equal jitter") clients that failed together (a broker or a gateway restarting) do not all
retry in the same instant, yet none retries much sooner than its step, and none waits longer than
``maximum``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from eventbus.errors import EventBusConfigError

__all__ = ["Backoff", "BackoffPolicy"]


@dataclass(frozen=True)
class BackoffPolicy:
    """How delays grow (seconds); raises :class:`~eventbus.errors.EventBusConfigError` naming a bad field."""

    minimum: float = 0.5
    """The first step."""
    maximum: float = 30.0
    """The largest step, and so the longest delay (it caps ``minimum`` too)."""
    factor: float = 2.0
    """Growth of the step per failed attempt."""
    jitter: float = 0.5
    """Fraction of the step drawn at random: a delay lies in [step x (1 - jitter), step]."""

    def __post_init__(self) -> None:
        if not self.minimum > 0:
            raise EventBusConfigError("minimum", self.minimum, "must be more than 0 seconds")
        if not self.maximum > 0:
            raise EventBusConfigError("maximum", self.maximum, "must be more than 0 seconds")
        if not self.factor >= 1:
            raise EventBusConfigError("factor", self.factor, "must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise EventBusConfigError("jitter", self.jitter, "must lie in 0..1")


class Backoff:
    """The delays of one retry loop: call :meth:`next_delay` after each failure, :meth:`reset` on success."""

    def __init__(self, policy: BackoffPolicy) -> None:
        self.policy = policy
        self._step = self._first_step()
        self._attempts = 0

    @property
    def attempts(self) -> int:
        """How many delays were handed out since the start or the last :meth:`reset`."""
        return self._attempts

    def next_delay(self) -> float:
        """Seconds to wait before the next attempt."""
        step = self._step
        # The step is kept rather than recomputed from the attempt count: factor ** attempts overflows a
        # float after a day or so of failures, a capped step never does.
        self._step = min(self.policy.maximum, step * self.policy.factor)
        self._attempts += 1
        return random.uniform(step * (1 - self.policy.jitter), step)

    def reset(self) -> None:
        """Start again from the shortest delay."""
        self._step = self._first_step()
        self._attempts = 0

    def _first_step(self) -> float:
        return min(self.policy.minimum, self.policy.maximum)

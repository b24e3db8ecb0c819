"""The shared exponential backoff: growth, jitter within the step, cap, reset, and bad policies."""

from __future__ import annotations

import pytest

from eventbus import Backoff, BackoffPolicy, EventBusConfigError


def test_backoff_grows_with_jitter_and_resets() -> None:
    backoff = Backoff(BackoffPolicy(minimum=1.0, maximum=8.0, factor=2.0))
    steps = [1.0, 2.0, 4.0, 8.0, 8.0]
    for step in steps:
        delay = backoff.next_delay()
        assert step / 2 <= delay <= step
    assert backoff.attempts == len(steps)
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def test_jitter_sets_how_far_below_the_step_a_delay_may_fall() -> None:
    exact = Backoff(BackoffPolicy(minimum=0.5, maximum=4.0, jitter=0.0))
    assert [exact.next_delay() for _ in range(5)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    tight = Backoff(BackoffPolicy(minimum=1.0, maximum=1.0, jitter=0.1))
    assert all(0.9 <= tight.next_delay() <= 1.0 for _ in range(200))


def test_maximum_caps_every_delay_even_the_first() -> None:
    backoff = Backoff(BackoffPolicy(minimum=5.0, maximum=2.0, jitter=0.0))
    assert [backoff.next_delay(), backoff.next_delay()] == [2.0, 2.0]


def test_endless_failures_never_overflow() -> None:
    backoff = Backoff(BackoffPolicy(minimum=0.5, maximum=30.0, factor=10.0, jitter=0.0))
    delays = [backoff.next_delay() for _ in range(5000)]
    assert delays[-1] == 30.0


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"minimum": 0.0}, "minimum"),
        ({"maximum": -1.0}, "maximum"),
        ({"factor": 0.5}, "factor"),
        ({"jitter": 1.5}, "jitter"),
        ({"jitter": -0.1}, "jitter"),
    ],
)
def test_bad_policy_names_the_field(settings: dict[str, float], field: str) -> None:
    with pytest.raises(EventBusConfigError) as caught:
        BackoffPolicy(**settings)
    assert caught.value.field == field
    assert caught.value.value == settings[field]

"""Backoff between failed link attempts of one pipe (built-in plugins and the schedule)."""

from __future__ import annotations

import random

from wspipe_core.builtin import ExponentialBackoff, FixedBackoff

from .helpers import harness


def test_exponential_backoff_is_full_jitter_under_a_doubling_capped_ceiling():
    backoff = ExponentialBackoff(0.1, 2.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (5, 1.6), (6, 2.0), (60, 2.0)]:
        delays = [backoff.wspipe_backoff(attempt=attempt, rng=rng) for _ in range(200)]
        assert all(0.0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling * 0.8  # the whole range is used


def test_exponential_ceiling_stops_doubling_after_60_doublings_only():
    """One cap for every way of selecting it (the copies once had 32 and 60)."""
    backoff = ExponentialBackoff(1.0, 1e300)
    assert backoff.ceiling(33) == 2.0**32  # a cap of 32 doublings would stop here
    assert backoff.ceiling(50) == 2.0**49
    assert backoff.ceiling(61) == backoff.ceiling(10**9) == 2.0**60


def test_fixed_backoff_is_constant():
    assert {FixedBackoff(0.3).wspipe_backoff() for _ in range(1, 10)} == {0.3}


def _retry_times(h):
    """The delays before the next attempts of the harness's one pipe."""
    times = []
    for _ in range(6):
        (pipe,) = h.proxy.pipes()
        assert pipe.retry_at is not None
        times.append(pipe.retry_at - h.now)
        h.advance(pipe.retry_at - h.now)
    return times


def test_failed_attempts_of_a_pipe_back_off_exponentially():
    h = harness(backoff_base=0.1, backoff_max=10, max_interruption=1000)
    h.backend("ws://b1/", mode="refuse")
    h.client()
    delays = _retry_times(h)
    ceilings = [0.1 * 2 ** i for i in range(6)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))


def test_backoff_is_deterministic_for_a_seed():
    def run(seed):
        from wspipe_core.testing import Harness

        from .helpers import config

        h = Harness(config(backoff_base=0.1, backoff_max=10, max_interruption=1000), seed=seed)
        h.backend("ws://b1/", mode="refuse")
        h.client()
        return _retry_times(h)

    assert run(3) == run(3)
    assert run(3) != run(4)


def test_a_successful_link_resets_the_attempt_count():
    h = harness(backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/", mode="refuse")
    h.client()
    h.advance(3)
    b1.mode = "accept"
    h.advance(2)
    (pipe,) = h.proxy.pipes()
    assert pipe.attempts == 0 and pipe.retry_at is None and pipe.backend_id == "b1"

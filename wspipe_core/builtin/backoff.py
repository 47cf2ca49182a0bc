"""Built-in backoff between failed link attempts of one pipe."""

from __future__ import annotations

import random

from ..hookspecs import hookimpl
from ..info import PipeInfo


class ExponentialBackoff:
    """Exponential backoff with full jitter: uniform in [0, min(max, base * 2**(attempt-1))]."""

    def __init__(self, base: float, maximum: float) -> None:
        self.base = base
        self.maximum = maximum

    @hookimpl(trylast=True)
    def wspipe_backoff(self, pipe: PipeInfo, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.maximum, self.base * 2 ** min(max(attempt - 1, 0), 32))
        return rng.uniform(0.0, ceiling)


class FixedBackoff:
    """The same delay before every retry."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @hookimpl(trylast=True)
    def wspipe_backoff(self, pipe: PipeInfo, attempt: int) -> float:
        return self.delay

"""``backoff``: the delay between failed link attempts of one pipe.

``exponential`` (default): full jitter, a delay drawn uniformly from
``[0, min(max, base * 2**(attempt - 1))]``, so pipes that lost the same backend do
not come back in lockstep. ``fixed``: the same ``delay`` every time. Defaults come
from the configuration's ``backoff_base`` and ``backoff_max``::

    [plugins.backoff]
    kind = "exponential"   # or "fixed"
    base = 0.05            # exponential: ceiling of the first delay
    max = 2.0              # exponential: largest ceiling
    delay = 0.5            # fixed: the delay (default: backoff_base)
"""

from __future__ import annotations

import random

import pluggy

from wspipe_core import ProxyConfig, hookimpl

from ._settings import Settings, activate

NAME = "backoff"

#: Exponent cap, so ``2**n`` stays a small float for any attempt count.
_MAX_DOUBLINGS = 60


class ExponentialBackoff:
    """Exponential backoff with full jitter.

    :param base: Ceiling of the delay after the first failure, in seconds.
    :param maximum: Largest ceiling, in seconds.
    """

    def __init__(self, base: float = 0.05, maximum: float = 2.0) -> None:
        self.base = base
        self.maximum = maximum

    def ceiling(self, attempt: int) -> float:
        """The largest delay for ``attempt`` (1 after the first failure)."""
        return min(self.maximum, self.base * 2.0 ** min(max(attempt - 1, 0), _MAX_DOUBLINGS))

    @hookimpl
    def wspipe_backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


class FixedBackoff:
    """The same delay before every retry."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @hookimpl
    def wspipe_backoff(self) -> float:
        return self.delay


def from_settings(settings: Settings, config: ProxyConfig) -> ExponentialBackoff | FixedBackoff:
    """The backoff described by a ``[plugins.backoff]`` table."""
    kind = settings.text("kind", "exponential")
    plugin: ExponentialBackoff | FixedBackoff
    if kind == "exponential":
        plugin = ExponentialBackoff(settings.number("base", config.backoff_base),
                                    settings.number("max", config.backoff_max))
    elif kind == "fixed":
        plugin = FixedBackoff(settings.number("delay", config.backoff_base))
    else:
        raise settings.error("kind", f"expected exponential or fixed, got {kind!r}")
    settings.done()
    return plugin


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the backoff configured in ``[plugins.backoff]``."""
    activate(pm, NAME, from_settings(Settings.of(config, NAME), config))

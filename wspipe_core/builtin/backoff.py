"""The backoff between failed link attempts of one pipe.

These are the only implementations: the built-in ``wspipe.backoff`` and the
first-party plugin ``--plugin backoff`` (``wspipe_plugins.backoff``) are both made
by :func:`make_backoff`, from ``backoff``/``backoff_base``/``backoff_max`` of the
configuration and the ``[plugins.backoff]`` table, which overrides them.
"""

from __future__ import annotations

import random

from ..config import ProxyConfig
from ..hookspecs import hookimpl
from .settings import Settings

#: Name of the settings table (``[plugins.backoff]``) and of the first-party plugin.
NAME = "backoff"

#: Doublings after which the exponential ceiling stops growing, so ``2**n`` stays a
#: finite float for any attempt count (``backoff_max`` caps it long before, normally).
MAX_DOUBLINGS = 60


class ExponentialBackoff:
    """Exponential backoff with full jitter: uniform in ``[0, ceiling(attempt)]``.

    :param base: Ceiling of the delay after the first failure, in seconds.
    :param maximum: Largest ceiling, in seconds.
    """

    def __init__(self, base: float = 0.05, maximum: float = 2.0) -> None:
        self.base = base
        self.maximum = maximum

    def ceiling(self, attempt: int) -> float:
        """``min(maximum, base * 2**(attempt - 1))``, for ``attempt`` >= 1."""
        return min(self.maximum, self.base * 2.0 ** min(max(attempt - 1, 0), MAX_DOUBLINGS))

    @hookimpl(trylast=True)
    def wspipe_backoff(self, attempt: int, rng: random.Random) -> float:
        return rng.uniform(0.0, self.ceiling(attempt))


class FixedBackoff:
    """The same delay before every retry.

    :param delay: Seconds.
    """

    def __init__(self, delay: float) -> None:
        self.delay = delay

    @hookimpl(trylast=True)
    def wspipe_backoff(self) -> float:
        return self.delay


def make_backoff(config: ProxyConfig) -> ExponentialBackoff | FixedBackoff:
    """The backoff of ``config``: its ``backoff*`` fields, overridden by ``[plugins.backoff]``.

    Table keys: ``kind`` (default ``config.backoff``), for ``exponential`` ``base``
    and ``max`` (defaults ``backoff_base``, ``backoff_max``), for ``fixed`` ``delay``
    (default ``backoff_base``). A key of the other kind is an error.

    :raises ConfigError: An unknown kind, a bad number or an unknown key.
    """
    settings = Settings.of(config, NAME)
    kind = settings.text("kind", config.backoff)
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

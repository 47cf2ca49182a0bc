"""``backoff``: the delay between failed link attempts of one pipe.

``exponential``: full jitter, a delay drawn uniformly from
``[0, min(max, base * 2**(attempt - 1))]``, so pipes that lost the same backend do
not come back in lockstep. ``fixed``: the same ``delay`` every time. Defaults come
from the configuration's ``backoff``, ``backoff_base`` and ``backoff_max``::

    [plugins.backoff]
    kind = "exponential"   # or "fixed" (default: backoff)
    base = 0.05            # exponential only: ceiling of the first delay (default: backoff_base)
    max = 2.0              # exponential only: largest ceiling (default: backoff_max)
    # delay = 0.5          # fixed only: the delay (default: backoff_base)

The classes and the reading of this table are the core's
(:mod:`wspipe_core.builtin.backoff`), which the built-in backoff uses too: the table
applies with or without ``--plugin backoff``, and loading the plugin runs the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_backoff
from wspipe_core.builtin.backoff import ExponentialBackoff, FixedBackoff

from ._settings import activate

NAME = "backoff"

__all__ = ["ExponentialBackoff", "FixedBackoff"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the backoff of the configuration and ``[plugins.backoff]``, asked before
    the built-in ``wspipe.backoff`` (the same backoff: loading it changes nothing)."""
    activate(pm, NAME, make_backoff(config))

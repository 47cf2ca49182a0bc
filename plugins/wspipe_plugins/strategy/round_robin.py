"""``round_robin``: candidates in turn, in registration order.

A backend that is not a candidate this time (ejected, draining, just failed) is
skipped; the turn continues after the backend chosen last. Settings: none. The class
is the core's (:class:`wspipe_core.builtin.RoundRobin`): ``--plugin round_robin`` and
``strategy = "round_robin"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_strategy
from wspipe_core.builtin.strategies import RoundRobin

from .._settings import activate

NAME = "round_robin"

__all__ = ["RoundRobin"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the core's :class:`RoundRobin`, asked before the built-in strategy."""
    activate(pm, NAME, make_strategy(NAME, config))

"""``exclusive``: at most one pipe per backend (the original library's semantics).

A pipe takes a candidate with no pipe. When every candidate is taken the plugin
has no answer and, since it replaces the built-in strategy (``wspipe.strategy``),
nothing else chooses: the pipe waits, asks again after its backoff, and its client
is closed with 1013 if no backend frees up within ``max_interruption``. Settings:
none. The class is the core's (:class:`wspipe_core.builtin.Exclusive`):
``--plugin exclusive`` and ``strategy = "exclusive"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_strategy
from wspipe_core.builtin.strategies import Exclusive

from .._settings import activate

NAME = "exclusive"

__all__ = ["Exclusive"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the core's :class:`Exclusive`, asked before the built-in strategy."""
    activate(pm, NAME, make_strategy(NAME, config))

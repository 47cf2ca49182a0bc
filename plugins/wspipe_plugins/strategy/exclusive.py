"""``exclusive``: at most one pipe per backend (the original library's semantics).

A pipe takes a candidate with no pipe. When every candidate is taken the plugin
has no answer and the built-in strategy (``wspipe.strategy``) is blocked, so the
pipe waits: it asks again after its backoff, and its client is closed with 1013 if
no backend frees up within ``max_interruption``. Settings: none.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from wspipe_core import BackendInfo, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "exclusive"

#: The built-in strategy, which would otherwise share out busy backends.
BUILTIN_STRATEGY = "wspipe.strategy"


class Exclusive:
    """Choose the first candidate (in registration order) that has no pipe."""

    @hookimpl
    def wspipe_configure(self, pm: pluggy.PluginManager) -> None:
        pm.set_blocked(BUILTIN_STRATEGY)

    @hookimpl
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo | None:
        return next((b for b in candidates if b.pipes == 0), None)


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register an :class:`Exclusive` for this proxy and block the built-in strategy."""
    Settings.of(config, NAME).done()
    pm.set_blocked(BUILTIN_STRATEGY)
    activate(pm, NAME, Exclusive())

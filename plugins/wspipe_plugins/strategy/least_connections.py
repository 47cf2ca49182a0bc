"""``least_connections``: the candidate with the fewest pipes (wspipe's default strategy).

Ties go to the earliest registered backend. Settings: none (``[plugins.least_connections]``
must be empty if present).
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from wspipe_core import BackendInfo, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "least_connections"


class LeastConnections:
    """Pick the candidate with the fewest pipes; ties go to the earliest registered."""

    @hookimpl
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        return min(candidates, key=lambda b: b.pipes)


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`LeastConnections` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, LeastConnections())

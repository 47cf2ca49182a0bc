"""``round_robin``: candidates in turn, in registration order.

A backend that is not a candidate this time (ejected, draining, just failed) is
skipped; the turn continues after the backend chosen last. Settings: none.
"""

from __future__ import annotations

from collections.abc import Sequence

import pluggy

from wspipe_core import BackendInfo, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "round_robin"


class RoundRobin:
    """Choose the next candidate after the one chosen last, wrapping around."""

    def __init__(self) -> None:
        #: Backend id -> rank in the order first seen (candidates come in registration order).
        self._rank: dict[str, int] = {}
        self._last = -1

    @hookimpl
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        for backend in candidates:
            self._rank.setdefault(backend.id, len(self._rank))
        ordered = sorted(candidates, key=lambda b: self._rank[b.id])
        chosen = next((b for b in ordered if self._rank[b.id] > self._last), ordered[0])
        self._last = self._rank[chosen.id]
        return chosen


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`RoundRobin` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, RoundRobin())

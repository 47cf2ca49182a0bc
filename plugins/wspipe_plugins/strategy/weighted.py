"""``weighted``: weighted least-connections.

Each new pipe goes to the candidate whose load after taking it, ``(pipes + 1) /
weight``, is lowest; ties go to the larger weight, then to the earliest registered.
So concurrent pipes stay proportional to the weights even as pipes come and go
(smooth weighted round-robin would balance *arrivals*, which for long-lived
WebSocket sessions is not the same as balancing load).

A backend's weight is the one it was registered with (``BackendInfo.weight``,
e.g. ``server.add_backend(url, weight=3)``); the ``[plugins.weighted]`` table can
set or override weights by URL, for backends listed in the config file::

    [plugins.weighted]
    weights = { "ws://10.0.0.1:9000" = 3, "ws://10.0.0.2:9000" = 1 }
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pluggy

from wspipe_core import BackendInfo, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "weighted"


class Weighted:
    """Weighted least-connections.

    :param weights: Weights by backend URL, overriding the registered ones.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def weight(self, backend: BackendInfo) -> float:
        """The weight used for ``backend``."""
        return self.weights.get(backend.url, backend.weight)

    @hookimpl
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        return min(candidates,
                   key=lambda b: ((b.pipes + 1) / self.weight(b), -self.weight(b)))


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`Weighted` configured from ``[plugins.weighted]``."""
    settings = Settings.of(config, NAME)
    weights = settings.numbers("weights")
    settings.done()
    activate(pm, NAME, Weighted(weights))

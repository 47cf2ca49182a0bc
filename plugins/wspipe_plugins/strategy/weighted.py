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

The class is the core's (:class:`wspipe_core.builtin.Weighted`): ``--plugin weighted``
and ``strategy = "weighted"`` run the same code with the same table.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_strategy
from wspipe_core.builtin.strategies import Weighted

from .._settings import activate

NAME = "weighted"

__all__ = ["Weighted"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the core's :class:`Weighted`, asked before the built-in strategy."""
    activate(pm, NAME, make_strategy(NAME, config))

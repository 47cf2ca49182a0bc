"""``least_connections``: the candidate with the fewest pipes (wspipe's default strategy).

Ties go to the earliest registered backend. Settings: none (``[plugins.least_connections]``
must be empty if present). The class is the core's
(:class:`wspipe_core.builtin.LeastConnections`): ``--plugin least_connections`` and
``strategy = "least_connections"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_strategy
from wspipe_core.builtin.strategies import LeastConnections

from .._settings import activate

NAME = "least_connections"

__all__ = ["LeastConnections"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the core's :class:`LeastConnections`, asked before the built-in strategy."""
    activate(pm, NAME, make_strategy(NAME, config))

"""``consistent_hash``: sticky by client id, with minimal movement when backends change.

Weighted rendezvous hashing (highest random weight): each (client id, backend URL)
pair gets a pseudo-random score scaled by the backend's weight, and the candidate
with the highest score wins. A client therefore returns to the same backend after
an interruption, and adding or removing one backend of ``n`` moves only the clients
that gain or lose it (about ``1/n`` of them). Settings: none. The class and
:func:`score` are the core's (:mod:`wspipe_core.builtin.strategies`):
``--plugin consistent_hash`` and ``strategy = "consistent_hash"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_strategy
from wspipe_core.builtin.strategies import ConsistentHash, score

from .._settings import activate

NAME = "consistent_hash"

__all__ = ["ConsistentHash", "score"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register the core's :class:`ConsistentHash`, asked before the built-in strategy."""
    activate(pm, NAME, make_strategy(NAME, config))

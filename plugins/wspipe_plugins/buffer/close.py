"""``close``: a client whose buffer is full is closed with 1013 (wspipe's default policy).

Loading it states the choice explicitly (and overrides ``buffer_policy`` in the
configuration). Settings: none. The class is the core's
(:class:`wspipe_core.builtin.CloseOnFull`): ``--plugin close`` and
``buffer_policy = "close"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_buffer_policy
from wspipe_core.builtin.buffer_full import CloseOnFull

from .._settings import activate

NAME = "close"

__all__ = ["CloseOnFull"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`CloseOnFull`, asked before the built-in ``wspipe.buffer_policy``."""
    activate(pm, NAME, make_buffer_policy(NAME, config))

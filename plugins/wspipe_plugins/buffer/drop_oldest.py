"""``drop_oldest``: for lossy streams, drop the oldest buffered messages to make room.

Each answer drops one whole message (the oldest in the buffer); the core asks again
until the new message fits. The plugin counts what it dropped, per pipe and in
total, and logs the count when the pipe closes; the ``closed`` pipe event also
carries it as ``extra["dropped_messages"]``. When the buffer holds nothing to drop
(the process-wide ``memory_budget`` is exhausted by other pipes) it closes the
client with 1013 instead. Settings: none. The class is the core's
(:class:`wspipe_core.builtin.DropOldest`): ``--plugin drop_oldest`` and
``buffer_policy = "drop_oldest"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_buffer_policy
from wspipe_core.builtin.buffer_full import DropOldest

from .._settings import activate

NAME = "drop_oldest"

__all__ = ["DropOldest"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`DropOldest`, asked before the built-in ``wspipe.buffer_policy``."""
    activate(pm, NAME, make_buffer_policy(NAME, config))

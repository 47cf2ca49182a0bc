"""``pause``: stop reading a client while its buffer is full; nothing is dropped.

The message that did not fit is kept aside and the proxy stops reading that
client's socket, so TCP backpressure slows the client down; memory stays under
``buffer_limit``. Reading resumes as soon as the buffer has been flushed to a new
link. The client is not closed for sending too much, only, as always, when no
backend comes back within ``max_interruption`` (1013). Settings: none. The class is
the core's (:class:`wspipe_core.builtin.PauseOnFull`): ``--plugin pause`` and
``buffer_policy = "pause"`` run the same code.
"""

from __future__ import annotations

import pluggy

from wspipe_core import ProxyConfig, hookimpl
from wspipe_core.builtin import make_buffer_policy
from wspipe_core.builtin.buffer_full import PauseOnFull

from .._settings import activate

NAME = "pause"

__all__ = ["PauseOnFull"]


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`PauseOnFull`, asked before the built-in ``wspipe.buffer_policy``."""
    activate(pm, NAME, make_buffer_policy(NAME, config))

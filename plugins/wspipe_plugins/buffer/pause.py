"""``pause``: stop reading a client while its buffer is full; nothing is dropped.

The message that did not fit is kept aside and the proxy stops reading that
client's socket, so TCP backpressure slows the client down; memory stays under
``buffer_limit``. Reading resumes as soon as the buffer has been flushed to a new
link. The client is not closed for sending too much, only, as always, when no
backend comes back within ``max_interruption`` (1013). Settings: none.
"""

from __future__ import annotations

import pluggy

from wspipe_core import BufferFullAction, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "pause"


class PauseOnFull:
    """Answer every full buffer with ``PAUSE``."""

    @hookimpl
    def wspipe_buffer_full(self) -> BufferFullAction:
        return BufferFullAction.PAUSE


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`PauseOnFull` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, PauseOnFull())

"""``close``: a client whose buffer is full is closed with 1013 (wspipe's default policy).

Loading it states the choice explicitly (and overrides ``buffer_policy`` in the
configuration). Settings: none.
"""

from __future__ import annotations

import pluggy

from wspipe_core import BufferFullAction, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "close"


class CloseOnFull:
    """Answer every full buffer with ``CLOSE``: 1013 "buffer limit reached"."""

    @hookimpl
    def wspipe_buffer_full(self) -> BufferFullAction:
        return BufferFullAction.CLOSE


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`CloseOnFull` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, CloseOnFull())

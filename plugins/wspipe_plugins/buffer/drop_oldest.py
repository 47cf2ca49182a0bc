"""``drop_oldest``: for lossy streams, drop the oldest buffered messages to make room.

Each answer drops one whole message (the oldest in the buffer); the core asks again
until the new message fits. The plugin counts what it dropped, per pipe and in
total, and logs the count when the pipe closes; the ``closed`` pipe event also
carries it as ``extra["dropped_messages"]``. When the buffer holds nothing to drop
(the process-wide ``memory_budget`` is exhausted by other pipes) it closes the
client with 1013 instead. Settings: none.
"""

from __future__ import annotations

import logging

import pluggy

from wspipe_core import (
    BufferFullAction,
    PipeEvent,
    PipeEventKind,
    PipeInfo,
    ProxyConfig,
    hookimpl,
)

from .._settings import Settings, activate

NAME = "drop_oldest"

log = logging.getLogger("wspipe.plugins.drop_oldest")


class DropOldest:
    """Answer a full buffer with ``DROP_OLDEST`` while there is something to drop."""

    def __init__(self) -> None:
        #: Messages dropped, over all pipes, since start.
        self.dropped = 0
        #: Messages dropped by live pipe id.
        self.dropped_by_pipe: dict[str, int] = {}

    @hookimpl
    def wspipe_buffer_full(self, pipe: PipeInfo) -> BufferFullAction:
        if pipe.buffered_messages == 0:  # (empty messages have no bytes but still cost)
            return BufferFullAction.CLOSE
        self.dropped += 1
        self.dropped_by_pipe[pipe.id] = self.dropped_by_pipe.get(pipe.id, 0) + 1
        return BufferFullAction.DROP_OLDEST

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        if event.kind is PipeEventKind.CLOSED:
            dropped = self.dropped_by_pipe.pop(event.pipe.id, 0)
            if dropped:
                log.info("pipe %s (client %s) dropped %d message(s)", event.pipe.id,
                         event.pipe.client_id, dropped)


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`DropOldest` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, DropOldest())

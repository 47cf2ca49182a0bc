"""The buffer policies: what to do with a client message that does not fit.

These are the only implementations: ``buffer_policy = "NAME"`` registers one as the
built-in ``wspipe.buffer_policy``, and the first-party plugin ``--plugin NAME``
(``wspipe_plugins.buffer.NAME``) registers the same class in its place. None takes
settings (its ``[plugins.NAME]`` table must be empty).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..config import ProxyConfig
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..info import BufferFullAction, PipeEvent, PipeEventKind, PipeInfo
from .settings import without_settings

log = logging.getLogger("wspipe.plugins.drop_oldest")


class CloseOnFull:
    """Answer every full buffer with ``CLOSE``: 1013 "buffer limit reached" (the default)."""

    @hookimpl(trylast=True)
    def wspipe_buffer_full(self) -> BufferFullAction:
        return BufferFullAction.CLOSE


class PauseOnFull:
    """Answer every full buffer with ``PAUSE``: stop reading the client until it is flushed."""

    @hookimpl(trylast=True)
    def wspipe_buffer_full(self) -> BufferFullAction:
        return BufferFullAction.PAUSE


class DropOldest:
    """Answer a full buffer with ``DROP_OLDEST`` while the pipe has something to drop.

    With nothing of its own buffered (the process-wide ``memory_budget`` is exhausted
    by other pipes) the answer is ``CLOSE``. Drops are counted here and logged when the
    pipe closes (the core also reports them as ``extra["dropped_messages"]``).
    """

    def __init__(self) -> None:
        #: Messages dropped, over all pipes, since start.
        self.dropped = 0
        #: Messages dropped by live pipe id.
        self.dropped_by_pipe: dict[str, int] = {}

    @hookimpl(trylast=True)
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


BufferPolicy = CloseOnFull | PauseOnFull | DropOldest


#: Policy name (a :class:`BufferFullAction` value) -> factory.
BUFFER_POLICIES: dict[str, Callable[[ProxyConfig], BufferPolicy]] = {
    "close": without_settings("close", CloseOnFull),
    "pause": without_settings("pause", PauseOnFull),
    "drop_oldest": without_settings("drop_oldest", DropOldest),
}


def make_buffer_policy(name: str, config: ProxyConfig) -> BufferPolicy:
    """A new buffer policy object ``name``, its ``[plugins.NAME]`` table checked empty.

    :raises ConfigError: Unknown name, or keys in the table.
    """
    factory = BUFFER_POLICIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown buffer policy {name!r}; built-in: "
                          f"{', '.join(sorted(BUFFER_POLICIES))}")
    return factory(config)

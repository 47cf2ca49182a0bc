"""Built-in buffer policy: the configured ``BufferFullAction`` (default: close, 1013)."""

from __future__ import annotations

from ..hookspecs import hookimpl
from ..info import BufferFullAction


class BufferPolicy:
    """Answers every ``wspipe_buffer_full`` with one fixed action."""

    def __init__(self, action: BufferFullAction) -> None:
        self.action = action

    @hookimpl(trylast=True)
    def wspipe_buffer_full(self) -> BufferFullAction:
        return self.action

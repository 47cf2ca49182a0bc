"""Message assembly: fragments in, whole messages out, bounded by ``max_message_size``.

A message is ``str`` (text) or ``bytes``/``bytearray`` (binary); the type carries the kind.
"""

from __future__ import annotations

from wsproto.events import BytesMessage, TextMessage

Message = str | bytes | bytearray


def payload_size(data: Message) -> int:
    """Payload bytes of a message as sent on the wire (UTF-8 for text)."""
    if isinstance(data, str):
        return len(data) if data.isascii() else len(data.encode("utf-8"))
    return len(data)


class MessageAssembler:
    """Joins the fragments of one direction's messages; counts in-progress bytes."""

    __slots__ = ("_parts", "size")

    def __init__(self) -> None:
        self._parts: list[Message] = []
        #: Payload bytes of the message in progress.
        self.size = 0

    @property
    def idle(self) -> bool:
        """No message is in progress (the next fragment starts a new message)."""
        return not self._parts

    def feed(self, event: TextMessage | BytesMessage, nbytes: int) -> Message | None:
        """Add a fragment of ``nbytes`` payload bytes; return the message once complete."""
        if event.message_finished and not self._parts:
            return event.data
        self._parts.append(event.data)
        self.size += nbytes
        if not event.message_finished:
            return None
        parts, self._parts, self.size = self._parts, [], 0
        if isinstance(parts[0], str):
            return "".join(parts)  # type: ignore[arg-type]
        return b"".join(parts)  # type: ignore[arg-type]

    def reset(self) -> int:
        """Forget the message in progress; return the bytes it held."""
        size, self._parts, self.size = self.size, [], 0
        return size

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
    """Joins the fragments of one direction's messages; counts in-progress bytes.

    Fragments are appended to one ``bytearray`` (text as UTF-8, decoded once at the
    end), so memory follows payload bytes even for a flood of tiny or empty fragments.
    A message that arrives in one frame is returned as it came, without a copy.
    """

    __slots__ = ("_buf", "_text", "size")

    def __init__(self) -> None:
        self._buf: bytearray | None = None
        self._text = False
        #: Payload bytes of the message in progress.
        self.size = 0

    @property
    def idle(self) -> bool:
        """No message is in progress (the next fragment starts a new message)."""
        return self._buf is None

    def feed(self, event: TextMessage | BytesMessage, nbytes: int) -> Message | None:
        """Add a fragment of ``nbytes`` payload bytes; return the message once complete."""
        data = event.data
        if self._buf is None:
            if event.message_finished:
                return data
            self._buf = bytearray()
            self._text = isinstance(data, str)
        self._buf += data.encode("utf-8") if isinstance(data, str) else data
        self.size += nbytes
        if not event.message_finished:
            return None
        buf, self._buf, self.size = self._buf, None, 0
        # wsproto has validated the UTF-8 of text fragments already. Binary messages
        # stay a bytearray: no copy, and wsproto sends it as it is.
        return buf.decode("utf-8") if self._text else buf

    def reset(self) -> int:
        """Forget the message in progress; return the bytes it held."""
        size, self._buf, self.size = self.size, None, 0
        return size

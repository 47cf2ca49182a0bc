"""The wire: WebSocket frames of the data phase, parsed and built in one pass.

wsproto does the upgrades (client and backend handshakes); once a connection is
open, its frames go through a :class:`WireConnection` instead of wsproto's
``Connection``. It has the same interface (``state``, ``receive_data``,
``events``, ``send``), yields and takes the same wsproto events, and keeps every
rule of wsproto's frame protocol — opcodes, reserved bits, masking direction,
minimal lengths, control frame limits, continuation order, incremental UTF-8
validation, Close codes and reasons — with the same close code for each violation
(``tests/core/test_wire.py`` runs both on random streams and requires the same
result). What differs is the cost: a read is parsed in place, (un)masking is one
call to an injected :data:`~wspipe_core.masking.Masker`, and a frame is built
with one join. No extensions: the proxy negotiates none.
"""

from __future__ import annotations

import codecs
import dataclasses
import struct
from collections.abc import Generator
from typing import Any

from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    CloseConnection,
    Event,
    Message,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.frame_protocol import CloseReason, Opcode
from wsproto.utilities import LocalProtocolError

from .masking import Masker, MaskKeys, python_mask

_OPEN = ConnectionState.OPEN
_LOCAL_CLOSING = ConnectionState.LOCAL_CLOSING
_REMOTE_CLOSING = ConnectionState.REMOTE_CLOSING
_CLOSED = ConnectionState.CLOSED
_PROTOCOL_ERROR = CloseReason.PROTOCOL_ERROR
_BAD_DATA = CloseReason.INVALID_FRAME_PAYLOAD_DATA
_LOCAL_ONLY = (CloseReason.NO_STATUS_RCVD, CloseReason.ABNORMAL_CLOSURE,
               CloseReason.TLS_HANDSHAKE_FAILED)
_CODES = {int(c): c for c in CloseReason}
_UTF8 = codecs.getincrementaldecoder("utf-8")
_H16 = struct.Struct("!BBH").pack
_H64 = struct.Struct("!BBQ").pack
_TEXT, _BINARY, _CLOSE, _PING, _PONG = 1, 2, 8, 9, 10
_MESSAGE_FIELDS = ("data", "frame_finished", "message_finished")
_new = object.__new__


def _message(cls: type[Message[Any]], data: bytes | str, frame_finished: bool,
             message_finished: bool) -> Message[Any]:
    """``cls(data=..., frame_finished=..., message_finished=...)``, built at a third of the
    cost: wsproto's events are frozen dataclasses, whose generated ``__init__`` sets each
    field through ``object.__setattr__``; this fills the instance dict directly. The
    result is the same object (equality, hash and repr are the dataclass's own).
    """
    event = _new(cls)
    fields = event.__dict__
    fields["data"] = data
    fields["frame_finished"] = frame_finished
    fields["message_finished"] = message_finished
    return event


def _message_init(cls: type[Message[Any]], data: bytes | str, frame_finished: bool,
                  message_finished: bool) -> Message[Any]:
    return cls(data=data, frame_finished=frame_finished, message_finished=message_finished)


# Only while wsproto's messages have exactly these three fields (else its own __init__:
# a wsproto release that adds a field, or slots, still gets complete events).
if any(tuple(f.name for f in dataclasses.fields(c)) != _MESSAGE_FIELDS
       or not hasattr(_new(c), "__dict__") for c in (BytesMessage, TextMessage)):
    _message = _message_init


class _Failed(Exception):
    """A protocol violation by the peer: close with ``code``."""

    def __init__(self, reason: str, code: CloseReason = _PROTOCOL_ERROR) -> None:
        super().__init__(reason)
        self.code = code


class Wire:
    """What every connection of a proxy shares: the masker and the key source."""

    __slots__ = ("keys", "mask")

    def __init__(self, mask: Masker | None = None) -> None:
        #: The masking function (pure Python unless the driver injects a faster one).
        self.mask: Masker = mask or python_mask
        self.keys = MaskKeys()

    def connection(self, client: bool, trailing: bytes = b"") -> WireConnection:
        """An open connection's data phase; ``client``: we are the WebSocket client."""
        return WireConnection(self, client, trailing)


class WireConnection:
    """One open WebSocket connection's frames: wsproto's ``Connection`` interface.

    ``events()`` parses lazily: frames not yet iterated stay unparsed in the
    buffer (the caller stops reading by not iterating further). Data frames are
    yielded as their payload arrives (``frame_finished=False`` for a part), so a
    frame announcing a huge length is never buffered whole.
    """

    __slots__ = ("_buf", "_client", "_dead", "_decoder", "_eof", "_fin", "_fop", "_key",
                 "_left", "_msg", "_out", "_pos", "_state", "_wire")

    def __init__(self, wire: Wire, client: bool, trailing: bytes = b"") -> None:
        self._wire = wire
        self._client = client
        self._state = _OPEN
        self._buf: bytes = trailing
        self._pos = 0
        #: The frame whose payload is arriving: bytes left (-1: none), its opcode
        #: (0 after its first part), FIN, and the masking key rotated to the next byte.
        self._left = -1
        self._fop = 0
        self._fin = False
        self._key: bytes | None = None
        #: The opcode of the message in progress (0: none) and its UTF-8 decoder.
        self._msg = 0
        self._decoder: codecs.IncrementalDecoder | None = None
        #: Parsing has ended (a Close was read, or a violation reported).
        self._dead = False
        self._eof = False
        #: The opcode of the message we are sending in parts (0: none).
        self._out = 0

    @property
    def state(self) -> ConnectionState:
        """wsproto's state of the connection."""
        return self._state

    def receive_data(self, data: bytes | None) -> None:
        """Bytes read from the peer; ``None`` for EOF (a 1006 close)."""
        if data is None:
            self._eof = True
            self._state = _CLOSED
            return
        state = self._state
        if state is _OPEN or state is _LOCAL_CLOSING:
            if self._dead:
                return
            if type(data) is not bytes:
                data = bytes(data)
            pos = self._pos
            if pos >= len(self._buf):
                self._buf = data
            else:
                self._buf = self._buf[pos:] + data
            self._pos = 0
        elif state is _CLOSED:
            raise LocalProtocolError("Connection already closed.")

    def events(self) -> Generator[Event, None, None]:
        """The events of the bytes received so far, parsed as they are iterated."""
        if self._eof:
            self._eof = False
            yield CloseConnection(code=CloseReason.ABNORMAL_CLOSURE)
        while not self._dead:
            try:
                event = self._next()
            except _Failed as exc:
                self._dead = True
                self._buf, self._pos = b"", 0
                yield CloseConnection(code=exc.code, reason=str(exc))
                return
            if event is None:
                return
            yield event

    def _next(self) -> Event | None:
        """Parse the next event out of the buffer, or ``None`` if more bytes are needed."""
        buf = self._buf
        pos = self._pos
        avail = len(buf) - pos
        left = self._left
        if left < 0:
            # A frame header (checks in wsproto's order, so both fail alike).
            if avail < 2:
                return None
            b0 = buf[pos]
            b1 = buf[pos + 1]
            opcode = b0 & 0x0F
            if opcode > 2 and not 8 <= opcode <= 10:
                raise _Failed(f"Invalid opcode {opcode:#x}")
            fin = b0 & 0x80 != 0
            control = opcode >= 8
            if control and not fin:
                raise _Failed("Invalid attempt to fragment control frame")
            length = b1 & 0x7F
            if control and length > 125:
                raise _Failed("Control frame with payload len > 125")
            p = pos + 2
            if length == 126:
                if avail < 4:
                    return None
                length = int.from_bytes(buf[p:p + 2], "big")
                p += 2
                if length <= 125:
                    raise _Failed("Payload length used 2 bytes when 1 would have sufficed")
            elif length == 127:
                if avail < 10:
                    return None
                length = int.from_bytes(buf[p:p + 8], "big")
                p += 8
                if length <= 0xFFFF:
                    raise _Failed("Payload length used 8 bytes when 2 would have sufficed")
                if length >> 63:
                    raise _Failed("8-byte payload length with non-zero MSB")
            if b0 & 0x70:
                raise _Failed("Reserved bit set unexpectedly")
            masked = b1 & 0x80
            if masked and self._client:
                raise _Failed("client received unexpected masked frame")
            if not masked and not self._client:
                raise _Failed("server received unexpected unmasked frame")
            key = None
            if masked:
                if len(buf) - p < 4:
                    return None
                key = buf[p:p + 4]
                p += 4
            if control:
                if len(buf) - p < length:
                    return None  # the header is parsed again when the rest is here
                payload = buf[p:p + length]
                self._pos = p + length
                if key is not None:
                    payload = self._wire.mask(payload, key)
                return self._control(opcode, payload)
            self._pos = pos = p
            avail = len(buf) - p
            self._left = left = length
            self._fop = opcode
            self._fin = fin
            self._key = key
        # (Part of) a data frame's payload.
        take = avail if avail < left else left
        if take == 0 and left > 0:
            return None
        end = pos + take
        whole = not pos and end == len(buf)
        self._pos = end
        key = self._key
        if key is not None and take:
            # Unmasked straight out of the read: one pass over the payload, not two.
            chunk = self._wire.mask(buf if whole else memoryview(buf)[pos:end], key)
            shift = take & 3
            if shift:
                self._key = key[shift:] + key[:shift]
        else:
            chunk = buf if whole else buf[pos:end]
        left -= take
        frame_finished = left == 0
        opcode = self._fop
        self._fop = 0
        if frame_finished:
            self._left = -1
        else:
            self._left = left
        msg = self._msg
        if not msg:
            if not opcode:
                raise _Failed("unexpected CONTINUATION")
            self._msg = msg = opcode
        elif opcode:
            raise _Failed(f"expected CONTINUATION, got {Opcode(opcode)!r}")
        finished = frame_finished and self._fin
        if finished:
            self._msg = 0
        if msg == _BINARY:
            return _message(BytesMessage, chunk, frame_finished, finished)
        decoder = self._decoder
        try:
            if decoder is None and finished:
                text = str(chunk, "utf-8")
            else:
                if decoder is None or opcode:
                    decoder = self._decoder = _UTF8()
                text = decoder.decode(chunk, finished)
                if finished:
                    self._decoder = None
        except UnicodeDecodeError as exc:
            raise _Failed(str(exc), _BAD_DATA) from None
        return _message(TextMessage, text, frame_finished, finished)

    def _control(self, opcode: int, payload: bytes) -> Event:
        if opcode == _PING:
            return Ping(payload=payload)
        if opcode == _PONG:
            return Pong(payload=payload)
        code: int
        reason = ""
        if not payload:
            code = CloseReason.NO_STATUS_RCVD
        elif len(payload) == 1:
            raise _Failed("CLOSE with 1 byte payload")
        else:
            code = int.from_bytes(payload[:2], "big")
            if code < 1000 or code > 4999:
                raise _Failed("CLOSE with invalid code")
            code = _CODES.get(code, code)
            if code in _LOCAL_ONLY:
                raise _Failed("remote CLOSE with local-only reason")
            if not isinstance(code, CloseReason) and code <= 2999:
                raise _Failed("CLOSE with unknown reserved code")
            try:
                reason = str(payload[2:], "utf-8")
            except UnicodeDecodeError as exc:
                raise _Failed("Error decoding CLOSE reason: " + str(exc), _BAD_DATA) from None
        self._state = _CLOSED if self._state is _LOCAL_CLOSING else _REMOTE_CLOSING
        self._dead = True
        self._buf, self._pos = b"", 0
        return CloseConnection(code=code, reason=reason)

    def send(self, event: Event) -> bytes:
        """The bytes that send ``event`` (wsproto's rules for what may be sent when)."""
        state = self._state
        kind = type(event)  # exact types first: an isinstance on wsproto's ABCs is slow
        if (kind is BytesMessage or kind is TextMessage or isinstance(event, Message)) \
                and state is _OPEN:
            data = event.data  # type: ignore[attr-defined]
            payload: bytes | bytearray | memoryview
            if isinstance(data, str):
                opcode, payload = _TEXT, data.encode("utf-8")
            elif isinstance(data, bytes | bytearray | memoryview):
                opcode, payload = _BINARY, data
            else:
                raise TypeError("Must provide bytes or text")
            if not self._out:
                self._out = opcode
            elif self._out != opcode:
                raise TypeError("Data type mismatch inside message")
            else:
                opcode = 0
            fin = event.message_finished  # type: ignore[attr-defined]
            if fin:
                self._out = 0
            return self._frame(opcode | 0x80 if fin else opcode, payload)
        if isinstance(event, Ping | Pong) and state is _OPEN:
            return self._frame((_PING if isinstance(event, Ping) else _PONG) | 0x80,
                               event.payload)
        if isinstance(event, CloseConnection) and (state is _OPEN or state is _REMOTE_CLOSING):
            close = self._frame(_CLOSE | 0x80, _close_payload(event.code, event.reason))
            self._state = _CLOSED if state is _REMOTE_CLOSING else _LOCAL_CLOSING
            return close
        raise LocalProtocolError(f"Event {event} cannot be sent in state {state}.")

    def _frame(self, b0: int, payload: bytes | bytearray | memoryview) -> bytes:
        n = len(payload)
        if self._client:
            if n < 126:
                head = bytes((b0, 0x80 | n))
            elif n < 0x10000:
                head = _H16(b0, 0xFE, n)
            else:
                head = _H64(b0, 0xFF, n)
            wire = self._wire
            key = wire.keys.next()
            return b"".join((head, key, wire.mask(payload, key)))
        if n < 126:
            head = bytes((b0, n))
        elif n < 0x10000:
            head = _H16(b0, 126, n)
        else:
            head = _H64(b0, 127, n)
        return b"".join((head, payload))


def _close_payload(code: int | None, reason: str | None) -> bytes:
    """A Close frame's payload, as wsproto builds it."""
    if code is CloseReason.NO_STATUS_RCVD:
        code = None
    if code is None:
        if reason:
            raise TypeError("cannot specify a reason without a code")
        return b""
    if code in _LOCAL_ONLY:
        code = CloseReason.NORMAL_CLOSURE
    payload = code.to_bytes(2, "big")
    if reason is not None:
        raw = reason.encode("utf-8")
        if len(raw) > 123:
            raw = raw[:123].decode("utf-8", errors="ignore").encode("utf-8")
        payload += raw
    return payload

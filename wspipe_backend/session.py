"""The ack channel, independent of any framework: numbering, deduplication, acks.

wspipe numbers the client messages of a session 1, 2, ...; each link's handshake says
the session (``x-wspipe-session``), the link's number (``x-wspipe-link``), the mode
(``x-wspipe-delivery``) and the number of the first message it carries
(``x-wspipe-seq``). The backend counts from there, skips what its session already
processed, and answers ``ack_prefix + <n>`` (one text message, cumulative) once
message ``n`` is processed. Acks are sent only when the mode is ``acked``: in any
other mode the proxy would relay them to the client.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

log = logging.getLogger("wspipe_backend")

#: The proxy's default ``ack_prefix``.
ACK_PREFIX = "\x00wspipe:ack:"
#: The proxy's default ``session_header_prefix``.
HEADER_PREFIX = "x-wspipe-"


@dataclass(frozen=True, slots=True)
class Message:
    """One client message: its session, the link that carried it, its number, its data.

    ``seq`` is 0 when the proxy does not number messages (no ``x-wspipe-seq``);
    ``(session, seq)`` is otherwise a key unique per message, usable as an
    idempotency key.
    """

    session: str
    link: int
    seq: int
    data: str | bytes


class Store(Protocol):
    """What a backend processed, per session.

    To be exactly-once across backend processes the store must be shared by them
    (a database), and :meth:`commit` must record the message's effect and its number
    in one transaction — or the effect must be idempotent by ``(session, seq)``.
    """

    async def last(self, session: str) -> int:
        """The highest message number processed for ``session`` (0: none)."""
        ...

    async def commit(self, message: Message) -> bool:
        """Record ``message`` as processed, if ``message.seq`` is higher than
        :meth:`last`; ``False`` when it was processed already (a duplicate)."""
        ...


class MemoryStore:
    """A :class:`Store` in this process's memory, for at most ``max_sessions`` sessions
    (least recently used forgotten first). It deduplicates replays to this process
    only: a backend process that restarts, or another one, does not know them."""

    def __init__(self, max_sessions: int = 100_000) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self.max_sessions = max_sessions
        self._last: OrderedDict[str, int] = OrderedDict()

    async def last(self, session: str) -> int:
        """The highest number processed for ``session`` (0: none or forgotten)."""
        return self._last.get(session, 0)

    async def commit(self, message: Message) -> bool:
        """Record ``message.seq`` unless it is not above the session's last."""
        known = self._last.get(message.session, 0)
        if message.seq <= known:
            return False
        self._last[message.session] = message.seq
        self._last.move_to_end(message.session)
        while len(self._last) > self.max_sessions:
            self._last.popitem(last=False)
        return True


class AckedSession:
    """The numbering of one link's messages, from its handshake headers.

    :param headers: The upgrade request's headers (names in any case).
    :param header_prefix: The proxy's ``session_header_prefix``.
    :param ack_prefix: The proxy's ``ack_prefix``.
    """

    def __init__(self, headers: Mapping[str, str] | Iterable[tuple[str, str]], *,
                 header_prefix: str = HEADER_PREFIX, ack_prefix: str = ACK_PREFIX) -> None:
        items = headers.items() if isinstance(headers, Mapping) else headers
        prefix = header_prefix.lower()
        found = {name.lower()[len(prefix):]: value for name, value in items
                 if name.lower().startswith(prefix)}
        #: The session this link continues ("" when not behind wspipe).
        self.session = found.get("session", "")
        #: The link's number in its session (1, 2, ...; 0 when not behind wspipe).
        self.link = _number(found.get("link"))
        #: The session's delivery mode ("" when not behind wspipe).
        self.delivery = found.get("delivery", "")
        first = _number(found.get("seq"))
        #: Whether messages are numbered (``x-wspipe-seq`` was given).
        self.numbered = bool(self.session) and first > 0
        #: Whether the proxy expects acks (``acked`` mode).
        self.acked = self.numbered and self.delivery == "acked"
        #: The number the next message will get.
        self.next_seq = first if self.numbered else 0
        self._ack_prefix = ack_prefix

    def number(self, data: str | bytes) -> Message:
        """The next message read on this link."""
        seq = self.next_seq
        if self.numbered:
            self.next_seq += 1
        return Message(self.session, self.link, seq, data)

    def ack(self, seq: int) -> str | None:
        """The text message acknowledging every message up to ``seq``, or ``None`` when
        the proxy expects none."""
        return f"{self._ack_prefix}{seq}" if self.acked else None


def _number(text: str | None) -> int:
    return int(text) if text is not None and text.isdigit() else 0


async def acked_stream(receive: Callable[[], Awaitable[str | bytes | None]],
                       send_text: Callable[[str], Awaitable[None]],
                       session: AckedSession, store: Store) -> AsyncIterator[Message]:
    """The messages of one link, each once per session, acked once processed.

    :param receive: The next message, or ``None`` once the connection is closed.
    :param send_text: Send a text message to the proxy (the acks).
    :param session: The link's numbering, from its handshake.
    :param store: What the session already processed.

    A message is processed when the consumer asks for the next one: then it is
    committed to ``store`` and acknowledged. A message already processed (a replay)
    is acknowledged again and not yielded.
    """
    last = await store.last(session.session) if session.numbered else 0
    while True:
        data = await receive()
        if data is None:
            return
        message = session.number(data)
        if session.numbered and message.seq <= last:
            ack = session.ack(message.seq)
            if ack is not None:
                await send_text(ack)
            continue
        yield message
        if not session.numbered:
            continue
        if await store.commit(message):
            last = message.seq
        else:
            log.warning("session %s: message %d was processed elsewhere meanwhile (the "
                        "store refused it): its effect must be idempotent",
                        session.session, message.seq)
        ack = session.ack(message.seq)
        if ack is not None:
            await send_text(ack)

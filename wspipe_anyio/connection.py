"""Per-socket I/O: a reader task and a writer task around one byte stream.

A :class:`Channel` is one client connection or one link. It knows nothing about
WebSocket: bytes read go to ``on_data``, bytes written are reported to
``on_sent``, and the end of the socket to ``on_eof``. The outbox holds what the
core asked to send, in order; only the core's accounting bounds it (it pauses the
other side above its high-water mark, from the ``*DataSent`` reports).

Where the socket allows it (a plain TCP socket on trio: anyio's ``raw_socket`` is
a real ``socket.socket``), the bytes one read produced for a socket — the relayed
messages, a pong — are written by the reader task right after ``on_data``
returns, with one non-blocking ``send`` and no switch to the writer task
(:class:`InlineWrites`); what the kernel does not take at once goes to the writer
task as before. asyncio hands out a ``TransportSocket`` that refuses ``send``
and a transport that owns the descriptor, and anyio's ``send`` may wait for the
transport to drain (which would stop the reader short of the core's high-water
mark): there, and under TLS, the writer task writes everything, as before.
"""

from __future__ import annotations

import logging
import math
import socket
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.tls import TLSStream

log = logging.getLogger("wspipe.driver")

#: Largest read from a socket; bounds the work of one ``Proxy.handle`` call.
MAX_READ = 64 * 1024
#: Outbox chunks are joined into writes of up to this many bytes.
MAX_WRITE = 256 * 1024

#: Exceptions that mean "this socket is gone" on reads and writes.
SOCKET_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class InlineWrites:
    """The channels that got bytes while a reader task dispatched one read.

    Shared by every channel of a server. ``active`` only while a reader task is
    inside ``on_data`` (dispatch is synchronous, so no other task queues bytes
    meanwhile); bytes queued at any other time (timers, write reports, the admin
    API) wake the writer task as before.
    """

    __slots__ = ("active", "ready")

    def __init__(self) -> None:
        self.active = False
        self.ready: list[Channel] = []

    def flush(self) -> None:
        """Write what each ready channel queued: one ``send`` per channel, in order."""
        ready, self.ready = self.ready, []
        for channel in ready:
            channel.write_now()


class Channel:
    """One socket's outbox, writer and pausable reader.

    :param name: ``conn=N`` or ``link=N``, for logs.
    :param on_data: Called with each chunk read (not while closing).
    :param on_sent: Called with the byte count of each completed write.
    :param on_eof: Called once when the socket reaches EOF or fails, with why.
    :param linger: After ``close()``, the longest time spent flushing the outbox
        and waiting for the peer's EOF before the socket is closed anyway.
    :param inline: The server's :class:`InlineWrites`; ``None``: the writer task
        writes everything.
    """

    def __init__(
        self,
        name: str,
        *,
        on_data: Callable[[bytes], None],
        on_sent: Callable[[int], None],
        on_eof: Callable[[str], None],
        linger: float,
        inline: InlineWrites | None = None,
    ) -> None:
        self.name = name
        self._inline = inline
        #: The socket the reader task may write to without blocking (see the module).
        self._raw: socket.socket | None = None
        #: Waiting in ``inline.ready`` for the reader task that queued it.
        self.inline_queued = False
        self._on_data = on_data
        self._on_sent = on_sent
        self._on_eof = on_eof
        self._linger = linger
        #: What to write, in order; ``None`` while empty (an idle socket holds no deque).
        self._outbox: deque[bytes] | None = None
        #: Bytes queued or being written, not yet reported to ``on_sent``.
        self._unsent = 0
        self._closing = False
        self._paused = False
        self._eof = False
        # Created only while a task waits (memory per idle connection counts).
        self._writer_wakeup: anyio.Event | None = None
        self._reader_wakeup: anyio.Event | None = None
        #: The reader task ended; the event is made only if someone waits for it.
        self._reader_finished = False
        self._reader_done: anyio.Event | None = None
        #: Cancels everything about this channel (connecting, handshaking, relaying).
        self.scope = anyio.CancelScope()
        #: When the writer and the reader give up (``close()`` plus ``linger``), and
        #: the scope of both once :meth:`run` started them (one scope less per socket).
        self._deadline = math.inf
        self._run_scope: anyio.CancelScope | None = None
        self._stream: ByteStream | None = None

    @property
    def queued(self) -> int:
        """Bytes queued by :meth:`send` that are not written to the socket yet."""
        return self._unsent

    # Called from dispatch(): synchronous, never await.

    def send(self, data: bytes) -> None:
        """Queue ``data`` behind what is already queued."""
        if self._closing:
            log.debug("%s: dropping %d bytes queued after close", self.name, len(data))
            return
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(data)
        self._unsent += len(data)
        if self.inline_queued:
            return
        inline = self._inline
        if inline is not None and inline.active and self._raw is not None \
                and self._writer_wakeup is not None:
            # The writer is idle: the reader task that is dispatching writes it.
            self.inline_queued = True
            inline.ready.append(self)
            return
        self._wake_writer()

    def close(self) -> None:
        """Close the socket once the queued data is written (bounded by ``linger``)."""
        if self._closing:
            return
        self._closing = True
        if self._stream is None:
            self.scope.cancel()
            return
        self._set_deadline(anyio.current_time() + self._linger)
        self._wake_writer()
        self._wake_reader()

    def _set_deadline(self, deadline: float) -> None:
        if deadline < self._deadline:
            self._deadline = deadline
            if self._run_scope is not None:
                self._run_scope.deadline = deadline

    def pause(self) -> None:
        """Stop reading until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Read again."""
        self._paused = False
        self._wake_reader()

    def _wake_writer(self) -> None:
        if self._writer_wakeup is not None:
            self._writer_wakeup.set()

    def _wake_reader(self) -> None:
        if self._reader_wakeup is not None:
            self._reader_wakeup.set()

    # Tasks.

    def attach(self, stream: ByteStream) -> None:
        """Give the channel its stream before :meth:`run`, so a ``close()`` in between
        still writes what was queued (otherwise a close before ``run`` drops it)."""
        self._stream = stream

    async def run(self, stream: ByteStream) -> None:
        """Move bytes until the channel is closed or the socket fails; then close it."""
        self._stream = stream
        if self._inline is not None and not isinstance(stream, TLSStream):
            raw = stream.extra(SocketAttribute.raw_socket, None)
            if type(raw) is socket.socket:  # trio; asyncio's refuses send()
                self._raw = raw
        try:
            async with anyio.create_task_group() as tg:
                self._run_scope = tg.cancel_scope
                tg.cancel_scope.deadline = self._deadline
                tg.start_soon(self._read_loop)
                await self._write_loop(stream)
                await self._half_close(stream)
                if not self._reader_finished:
                    self._reader_done = anyio.Event()
                    await self._reader_done.wait()
                tg.cancel_scope.cancel()
        finally:
            await anyio.aclose_forcefully(stream)

    def _report_eof(self, why: str) -> None:
        if not self._eof:
            self._eof = True
            log.debug("%s: %s", self.name, why)
            self._on_eof(why)

    async def _read_loop(self) -> None:
        assert self._stream is not None
        try:
            while True:
                if self._paused and not self._closing:
                    self._reader_wakeup = anyio.Event()
                    await self._reader_wakeup.wait()
                    self._reader_wakeup = None
                    continue
                try:
                    data = await self._stream.receive(MAX_READ)
                except anyio.EndOfStream:
                    self._report_eof("connection closed by peer")
                    return
                except SOCKET_ERRORS as exc:
                    self._report_eof(f"read failed: {exc!r}")
                    return
                if self._closing:  # after close() the core has forgotten us
                    continue
                inline = self._inline
                if inline is None:
                    self._on_data(data)
                    continue
                inline.active = True
                try:
                    self._on_data(data)
                finally:
                    inline.active = False
                    if inline.ready:
                        inline.flush()
        finally:
            self._reader_finished = True
            if self._reader_done is not None:
                self._reader_done.set()
            # A socket at EOF is done: write what is queued, then close it.
            self.close()

    def write_now(self) -> None:
        """Write the outbox from the reader task that queued it, without blocking.

        What the kernel does not take at once stays first in the outbox for the
        writer task; the writer task is idle meanwhile (it waits for a wake-up).
        """
        self.inline_queued = False
        raw = self._raw
        if raw is None or self._writer_wakeup is None or not self._outbox or self._closing:
            self._wake_writer()
            return
        chunk = self._take()
        try:
            sent = raw.send(chunk)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._requeue(chunk)  # the writer task meets the error again
            log.debug("%s: inline write failed: %r", self.name, exc)
            self._wake_writer()
            return
        if sent < len(chunk):
            self._requeue(chunk[sent:])
        if self._outbox:
            # The kernel did not take it all, or there was more than one write's worth
            # (MAX_WRITE): the writer task goes on.
            self._wake_writer()
        if sent:
            self._unsent -= sent
            self._on_sent(sent)

    async def _write_loop(self, stream: ByteStream) -> None:
        while True:
            while not self._outbox:
                if self._closing:
                    return
                self._writer_wakeup = anyio.Event()
                await self._writer_wakeup.wait()
                self._writer_wakeup = None
            chunk = self._take()
            try:
                await stream.send(chunk)
            except SOCKET_ERRORS as exc:
                self._report_eof(f"write failed: {exc!r}")
                self._outbox = None
                self._unsent = 0
                self._set_deadline(-math.inf)
                return
            self._unsent -= len(chunk)
            self._on_sent(len(chunk))

    def _take(self) -> bytes:
        outbox = self._outbox
        assert outbox is not None
        first = outbox.popleft()
        if outbox and len(first) < MAX_WRITE:
            parts = [first]
            size = len(first)
            while outbox and size + len(outbox[0]) <= MAX_WRITE:
                part = outbox.popleft()
                parts.append(part)
                size += len(part)
            first = b"".join(parts)
        if not outbox:
            self._outbox = None
        return first

    def _requeue(self, chunk: bytes) -> None:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.appendleft(chunk)

    async def _half_close(self, stream: ByteStream) -> None:
        # Send FIN and let the peer read our last bytes before we close: closing a
        # socket with unread input sends RST, which can destroy what we just wrote.
        if isinstance(stream, TLSStream):
            return  # anyio implements no TLS half-close (and may fail trying)
        try:
            await stream.send_eof()
        except (NotImplementedError, *SOCKET_ERRORS):
            pass
        except RuntimeError:  # uvloop: "unable to perform operation on <TCPTransport closed>"
            pass

"""Per-socket I/O: the bytes of one client connection or one link.

A channel knows nothing about WebSocket: bytes read go to ``on_data``, bytes
written are reported to ``on_sent``, and the end of the socket to ``on_eof``. The
outbox holds what the core asked to send, in order; only the core's accounting
bounds it (it pauses the other side above its high-water mark, from the
``*DataSent`` reports).

Two kinds, one interface (``send``, ``close``, ``pause``, ``resume``, ``queued``,
``scope``):

* :class:`SocketChannel`, for plain TCP (every client and link without TLS, on
  asyncio and trio): one task per socket drives a non-blocking ``socket.socket``
  through anyio's public ``wait_readable``/``wait_writable``. It reads into the
  server's shared read buffer (:class:`SocketIO`), feeds the core, and the bytes
  that dispatch queued for any socket are written right after it, one
  ``sendmsg`` per socket (:meth:`SocketIO.flush`). Only when the kernel does not
  take them all does a writer task start, in the server's task group, until the
  outbox is empty again. An idle pipe holds no stream, protocol, event or
  second task.
* :class:`Channel`, for TLS: a reader task and a writer task around an anyio
  byte stream (anyio's ``TLSStream`` does the TLS).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
from collections import deque
from collections.abc import Callable

import anyio
from anyio.abc import ByteStream
from anyio.streams.tls import TLSStream

log = logging.getLogger("wspipe.driver")

#: Largest read from a socket; bounds the work of one ``Proxy.handle`` call and
#: the outbox above the core's write high-water mark (one read's worth).
MAX_READ = 256 * 1024
#: Outbox chunks are joined into writes of up to this many bytes (TLS channels).
MAX_WRITE = 256 * 1024
#: Most buffers handed to one ``sendmsg`` (Linux's IOV_MAX is 1024).
MAX_IOV = 512

#: Exceptions that mean "this socket is gone" on reads and writes.
SOCKET_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError)


class SocketIO:
    """What every :class:`SocketChannel` of a server shares.

    ``buffer`` is the one read buffer (a read is copied out of it before the next
    one, so memory per idle pipe does not grow with ``MAX_READ``); ``ready`` holds
    the channels that got bytes during the current dispatch, written by
    :meth:`flush` after it; ``spawn`` starts a channel's writer task.
    """

    __slots__ = ("buffer", "flushing", "ready", "spawn", "view")

    def __init__(self, spawn: Callable[[SocketChannel], None]) -> None:
        self.buffer = bytearray(MAX_READ)
        self.view = memoryview(self.buffer)
        self.ready: list[SocketChannel] = []
        self.flushing = False
        self.spawn = spawn

    def flush(self) -> None:
        """Write what each ready channel queued: one ``sendmsg`` per channel, in order.

        Write reports may queue more bytes (a resumed side, a replay): those go out
        in the same loop. Re-entrant calls return at once.
        """
        if self.flushing:
            return
        self.flushing = True
        try:
            while self.ready:
                ready, self.ready = self.ready, []
                for channel in ready:
                    channel.write_now()
        finally:
            self.flushing = False


class SocketChannel:
    """One plain TCP socket: its outbox and its one task (see the module).

    :param name: ``conn=N`` or ``link=N``, for logs.
    :param on_data: Called with each chunk read (not while closing).
    :param on_sent: Called with the byte count of each completed write.
    :param on_eof: Called once when the socket reaches EOF or fails, with why.
    :param linger: After ``close()``, the longest time spent flushing the outbox
        and waiting for the peer's EOF before the socket is closed anyway.
    :param io: The server's :class:`SocketIO`.
    """

    __slots__ = (
        "_closing",
        "_eof",
        "_finished",
        "_io",
        "_linger",
        "_on_data",
        "_on_eof",
        "_on_sent",
        "_outbox",
        "_paused",
        "_reader_wakeup",
        "_shut",
        "_sock",
        "_unsent",
        "_writer_done",
        "_writer_scope",
        "name",
        "ready",
        "scope",
        "writing",
    )

    def __init__(
        self,
        name: str,
        *,
        on_data: Callable[[bytes], None],
        on_sent: Callable[[int], None],
        on_eof: Callable[[str], None],
        linger: float,
        io: SocketIO,
    ) -> None:
        self.name = name
        self._io = io
        self._on_data = on_data
        self._on_sent = on_sent
        self._on_eof = on_eof
        self._linger = linger
        self._sock: socket.socket | None = None
        #: What to write, in order; ``None`` while empty (an idle socket holds no list).
        self._outbox: list[bytes | memoryview] | None = None
        #: Bytes queued or being written, not yet reported to ``on_sent``.
        self._unsent = 0
        #: Waiting in ``io.ready`` for the flush after the current dispatch.
        self.ready = False
        #: A writer task is running (the kernel's buffer was full); it writes everything.
        self.writing = False
        self._writer_scope: anyio.CancelScope | None = None
        self._writer_done: anyio.Event | None = None
        self._reader_wakeup: anyio.Event | None = None
        self._closing = False
        self._paused = False
        self._eof = False
        self._shut = False
        #: The task is closing the socket: a writer task must not touch it any more.
        self._finished = False
        #: Cancels everything about this channel (connecting, relaying); its deadline
        #: is ``close()`` plus ``linger``.
        self.scope = anyio.CancelScope()

    @property
    def queued(self) -> int:
        """Bytes queued by :meth:`send` that are not written to the socket yet."""
        return self._unsent

    # Called from dispatch(): synchronous, never await.

    def send(self, data: bytes) -> None:
        """Queue ``data`` behind what is already queued; written after this dispatch."""
        if self._closing:
            log.debug("%s: dropping %d bytes queued after close", self.name, len(data))
            return
        if self._outbox is None:
            self._outbox = [data]
        else:
            self._outbox.append(data)
        self._unsent += len(data)
        if not self.ready and not self.writing:
            self.ready = True
            self._io.ready.append(self)

    def close(self) -> None:
        """Close the socket once the queued data is written (bounded by ``linger``)."""
        if self._closing:
            return
        self._closing = True
        if self._sock is None:
            self.scope.cancel()
            return
        deadline = anyio.current_time() + self._linger
        if deadline < self.scope.deadline:
            self.scope.deadline = deadline
            if self._writer_scope is not None:
                self._writer_scope.deadline = deadline
        if not self._outbox:
            self._shutdown_write()
        self._wake_reader()  # a paused reader reads (and drops) until the peer's EOF

    def pause(self) -> None:
        """Stop reading until :meth:`resume`."""
        self._paused = True

    def resume(self) -> None:
        """Read again."""
        self._paused = False
        self._wake_reader()

    def _wake_reader(self) -> None:
        if self._reader_wakeup is not None:
            self._reader_wakeup.set()

    def attach(self, sock: socket.socket) -> None:
        """Give the channel its connected non-blocking socket before :meth:`run`, so
        what the core queues meanwhile (a refusal, a handshake) is written."""
        self._sock = sock

    # Writing.

    def write_now(self) -> None:
        """Write the outbox without blocking (from :meth:`SocketIO.flush`); what the
        kernel does not take goes to a writer task."""
        self.ready = False
        if self.writing or self._sock is None or not self._outbox:
            return
        if not self._write():
            return
        if self._outbox:
            self.writing = True
            self._io.spawn(self)

    def _write(self) -> bool:
        """One non-blocking ``sendmsg`` of the outbox; report it. ``False``: the socket failed."""
        outbox = self._outbox
        sock = self._sock
        assert outbox is not None and sock is not None
        try:
            if len(outbox) == 1:
                sent = sock.send(outbox[0])
            else:
                sent = sock.sendmsg(outbox[:MAX_IOV] if len(outbox) > MAX_IOV else outbox)
        except BlockingIOError:
            return True
        except OSError as exc:
            self.fail(f"write failed: {exc!r}")
            return False
        left = sent
        done = 0
        for chunk in outbox:
            size = len(chunk)
            if left < size:
                break
            left -= size
            done += 1
        if done == len(outbox):
            self._outbox = None
        else:
            del outbox[:done]
            if left:
                outbox[0] = memoryview(outbox[0])[left:]
        if self._outbox is None and self._closing:
            self._shutdown_write()
        if sent:
            self._unsent -= sent
            self._on_sent(sent)
        return True

    async def write_loop(self) -> None:
        """The writer task: wait until the socket takes more, until the outbox is empty.

        Started by :meth:`write_now` (``writing`` is set); meanwhile :meth:`send` only
        queues, so the order holds.
        """
        sock = self._sock
        assert sock is not None
        try:
            with anyio.CancelScope(deadline=self.scope.deadline) as scope:
                self._writer_scope = scope
                while self._outbox and not self._finished:
                    await anyio.wait_writable(sock)
                    if not self._write():
                        break
        finally:
            self._writer_scope = None
            self.writing = False
            if self._writer_done is not None:
                self._writer_done.set()

    def fail(self, why: str) -> None:
        """The socket is gone: report it, drop the outbox, end the channel's tasks now."""
        self._report_eof(why)
        self._outbox = None
        self._unsent = 0
        self._closing = True
        self.scope.cancel()
        if self._writer_scope is not None:
            self._writer_scope.cancel()

    def _shutdown_write(self) -> None:
        # Send FIN and let the peer read our last bytes before we close: closing a
        # socket with unread input sends RST, which can destroy what we just wrote.
        if not self._shut and self._sock is not None:
            self._shut = True
            with contextlib.suppress(OSError):
                self._sock.shutdown(socket.SHUT_WR)

    def _report_eof(self, why: str) -> None:
        if not self._eof:
            self._eof = True
            log.debug("%s: %s", self.name, why)
            self._on_eof(why)

    # The task.

    async def run(self, sock: socket.socket) -> None:
        """Read and feed until EOF (or ``close()`` plus ``linger``); then close the socket.

        Run it inside ``with channel.scope``.
        """
        self._sock = sock
        io = self._io
        buffer = io.buffer
        #: The last read was short: the socket is most likely drained, so wait before
        #: the next read rather than pay for a read that fails with EAGAIN.
        drained = False
        try:
            while True:
                if self._paused and not self._closing:
                    self._reader_wakeup = anyio.Event()
                    await self._reader_wakeup.wait()
                    self._reader_wakeup = None
                    continue
                if drained:
                    await anyio.wait_readable(sock)
                try:
                    n = sock.recv_into(buffer)
                except BlockingIOError:
                    drained = True
                    continue
                except OSError as exc:
                    self._report_eof(f"read failed: {exc!r}")
                    break
                if not n:
                    self._report_eof("connection closed by peer")
                    break
                drained = n < MAX_READ
                if not self._closing:  # after close() the core has forgotten us
                    self._on_data(bytes(io.view[:n]))
            # A socket at EOF is done: write what is queued, then close it.
            self.close()
            if self.writing:
                self._writer_done = anyio.Event()
                await self._writer_done.wait()
        finally:
            self._finished = True
            if self.writing:
                # The writer must be gone before the descriptor is closed (and reused).
                if self._writer_scope is not None:
                    self._writer_scope.cancel()
                with anyio.CancelScope(shield=True):
                    self._writer_done = anyio.Event()
                    await self._writer_done.wait()
            self._closing = True
            self._outbox = None
            sock.close()


class Channel:
    """One TLS stream's outbox, writer task and pausable reader task.

    :param name: ``conn=N`` or ``link=N``, for logs.
    :param on_data: Called with each chunk read (not while closing).
    :param on_sent: Called with the byte count of each completed write.
    :param on_eof: Called once when the socket reaches EOF or fails, with why.
    :param linger: After ``close()``, the longest time spent flushing the outbox
        and waiting for the peer's EOF before the socket is closed anyway.
    """

    def __init__(
        self,
        name: str,
        *,
        on_data: Callable[[bytes], None],
        on_sent: Callable[[int], None],
        on_eof: Callable[[str], None],
        linger: float,
    ) -> None:
        self.name = name
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
                if not self._closing:  # after close() the core has forgotten us
                    self._on_data(data)
        finally:
            self._reader_finished = True
            if self._reader_done is not None:
                self._reader_done.set()
            # A socket at EOF is done: write what is queued, then close it.
            self.close()

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

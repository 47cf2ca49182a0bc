"""A managed echo backend of ``wspipe chaos``, run as a subprocess so faults are real.

``python -m wspipe_anyio.chaos.backend --port P --id B --record FILE [--ledger HOST:PORT]``
prints ``READY`` once listening on ``127.0.0.1:P`` and echoes every message.

Without ``--ledger`` (at-most-once, at-least-once) it is built on wsproto and
*processes a message as its WebSocket layer reads it*: it appends ``client n link
time`` to ``FILE`` (a write to the kernel, which a SIGKILL does not undo) before it
answers a ping that came after the message, so a pong proves processing here. With
``--ledger`` (acked) it is a ``websockets`` server using :mod:`wspipe_backend`: each
message's effect is committed to the ledger (the application's database, shared by
all backends) with its sequence number, then acknowledged.

Signals: SIGUSR1 is a graceful restart — Close 1012 to every connection, and what
arrives after that decision is dropped (as real frameworks do), then exit 0;
SIGTERM closes every connection with 1001 and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Sequence

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

#: Longest wait for connections to answer a Close before the process exits.
CLOSE_WAIT = 1.0
HEADER_PREFIX = b"x-wspipe-"


def payload_id(data: str | bytes) -> tuple[str, str] | None:
    """The ``(client, n)`` a chaos client put at the start of its message."""
    head = data[:32].encode() if isinstance(data, str) else bytes(data[:32])
    parts = head.split(b" ", 2)
    if len(parts) < 3 or not parts[0].isdigit() or not parts[1].isdigit():
        return None
    return parts[0].decode(), parts[1].decode()


class Recorder:
    """Appends one line per processed message to a file (``client n link time``)."""

    def __init__(self, path: str) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    def record(self, data: str | bytes, link: str) -> None:
        found = payload_id(data)
        if found is not None:
            line = f"{found[0]} {found[1]} {link} {time.monotonic():.6f}\n"
            os.write(self._fd, line.encode())


class EchoProtocol(asyncio.Protocol):
    """One connection of the wsproto echo backend."""

    def __init__(self, server: EchoServer) -> None:
        self.server = server
        self.ws = WSConnection(ConnectionType.SERVER)
        self.transport: asyncio.Transport | None = None
        self.link = "0"
        self.parts: list[str | bytes] = []
        self.closing = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.server.connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        out: list[bytes] = []
        for event in ws.events():
            if isinstance(event, Request):
                for name, value in event.extra_headers:
                    if name.lower() == HEADER_PREFIX + b"link":
                        self.link = value.decode()
                out.append(ws.send(AcceptConnection()))
            elif isinstance(event, TextMessage | BytesMessage):
                self.parts.append(bytes(event.data) if isinstance(event, BytesMessage)
                                  else event.data)
                if not event.message_finished:
                    continue
                whole: str | bytes = ("".join(p for p in self.parts if isinstance(p, str))
                                      if isinstance(event, TextMessage)
                                      else b"".join(p for p in self.parts
                                                    if isinstance(p, bytes)))
                self.parts = []
                if self.closing or self.server.closing:
                    continue  # decided to close: dropped, as real frameworks do
                self.server.recorder.record(whole, self.link)
                if ws.state is ConnectionState.OPEN:
                    out.append(ws.send(TextMessage(data=whole) if isinstance(whole, str)
                                       else BytesMessage(data=whole)))
            elif isinstance(event, Ping) and ws.state is ConnectionState.OPEN:
                out.append(ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    out.append(ws.send(event.response()))
                self._write(out)
                self.close_transport()
                return
        self._write(out)

    def _write(self, out: list[bytes]) -> None:
        if out and self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def close(self, code: int, reason: str) -> None:
        """Start the closing handshake."""
        self.closing = True
        if self.ws.state is ConnectionState.OPEN:
            self._write([self.ws.send(CloseConnection(code=code, reason=reason))])
        else:
            self.close_transport()

    def close_transport(self) -> None:
        if self.transport is not None:
            self.transport.close()


class EchoServer:
    """The wsproto echo backend: its connections and what it records."""

    def __init__(self, recorder: Recorder) -> None:
        self.recorder = recorder
        self.connections: set[EchoProtocol] = set()
        self.closing = False

    async def close_all(self, code: int, reason: str) -> None:
        self.closing = True
        for conn in list(self.connections):
            conn.close(code, reason)
        deadline = time.monotonic() + CLOSE_WAIT
        while self.connections and time.monotonic() < deadline:  # bounded by CLOSE_WAIT
            await asyncio.sleep(0.02)


async def run_echo(port: int, record: str) -> None:
    server = EchoServer(Recorder(record))
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(lambda: EchoProtocol(server), "127.0.0.1", port,
                                        reuse_address=True, backlog=1024)
    await _serve(listener, server.close_all)


async def _serve(listener: asyncio.base_events.Server | object,
                 close_all: object) -> None:
    loop = asyncio.get_running_loop()
    stop: asyncio.Future[tuple[int, str]] = loop.create_future()

    def on(signum: int, code: int, reason: str) -> None:
        if not stop.done():
            stop.set_result((code, reason))

    loop.add_signal_handler(signal.SIGUSR1, on, signal.SIGUSR1, 1012, "restarting")
    loop.add_signal_handler(signal.SIGTERM, on, signal.SIGTERM, 1001, "going away")
    print("READY", flush=True)
    code, reason = await stop
    close = getattr(listener, "close", None)
    if close is not None:
        close()
    assert callable(close_all)
    await close_all(code, reason)


# -- the acked backend: websockets with wspipe_backend, effects in the ledger


class LedgerStore:
    """A :class:`wspipe_backend.Store` in the chaos ledger, over one pipelined TCP
    connection: ``L session`` → last number; ``C session seq client n link backend``
    → 1 (committed with its effect) or 0 (processed already)."""

    def __init__(self, backend_id: str) -> None:
        self.backend_id = backend_id
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[bytes]] = deque()
        self._task: asyncio.Task[None] | None = None

    async def connect(self, host: str, port: int) -> None:
        self._reader, self._writer = await asyncio.open_connection(host, port)
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self._reader is not None
        while True:
            line = await self._reader.readline()
            if not line:
                for future in self._waiting:
                    future.set_exception(ConnectionError("the ledger went away"))
                return
            self._waiting.popleft().set_result(line)

    async def _ask(self, line: str) -> bytes:
        assert self._writer is not None
        future = asyncio.get_running_loop().create_future()
        self._waiting.append(future)
        self._writer.write(line.encode() + b"\n")
        answer: bytes = await future
        return answer

    async def last(self, session: str) -> int:
        return int(await self._ask(f"L {session}"))

    async def commit(self, message: object) -> bool:
        from wspipe_backend import Message

        assert isinstance(message, Message)
        found = payload_id(message.data)
        client, n = found if found is not None else ("-", "-")
        answer = await self._ask(f"C {message.session} {message.seq} {client} {n} "
                                 f"{message.link} {self.backend_id}")
        return answer.strip() == b"1"


async def run_acked(port: int, backend_id: str, ledger: str) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    from wspipe_backend.websockets import acked_messages

    host, _, ledger_port = ledger.rpartition(":")
    store = LedgerStore(backend_id)
    await store.connect(host, int(ledger_port))
    connections: set[ServerConnection] = set()
    state = {"closing": False}

    async def handler(connection: ServerConnection) -> None:
        connections.add(connection)
        try:
            async for message in acked_messages(connection, store):
                if state["closing"]:
                    # Decided to close: dropped, as real frameworks do. Close with 1012
                    # here, not by returning (websockets would close with 1000: the
                    # application ending the session).
                    await connection.close(1012, "restarting")
                    return
                with contextlib.suppress(Exception):
                    await connection.send(message.data)
        finally:
            connections.discard(connection)

    async def close_all(code: int, reason: str) -> None:
        state["closing"] = True
        closing = [asyncio.create_task(c.close(code, reason)) for c in list(connections)]
        if closing:
            await asyncio.wait(closing, timeout=CLOSE_WAIT)

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None,
                     max_size=None, reuse_address=True) as server:
        await _serve(server, close_all)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m wspipe_anyio.chaos.backend")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--id", required=True)
    parser.add_argument("--record", required=True, help="file of processed messages")
    parser.add_argument("--ledger", help="HOST:PORT of the chaos ledger (acked)")
    args = parser.parse_args(argv)
    if args.ledger:
        asyncio.run(run_acked(args.port, args.id, args.ledger))
    else:
        asyncio.run(run_echo(args.port, args.record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

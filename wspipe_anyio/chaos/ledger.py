"""The chaos ledger: the database of the acked backends' application, in the chaos process.

Every acked backend commits each message's effect here with its session's sequence
number, in one step (the exactly-once pattern: effect and number in one
transaction). It lives outside the backends so a SIGKILL or SIGSTOP of one never
takes it down or holds a lock in it. Protocol, one line each way, over loopback TCP:
``L <session>`` → the session's last committed number; ``C <session> <seq> <client>
<n> <link> <backend>`` → ``1`` committed, ``0`` processed already (nothing recorded).
"""

from __future__ import annotations

import time

import anyio
from anyio.abc import SocketStream
from anyio.streams.buffered import BufferedByteReceiveStream

from .report import Record

#: Longest request line.
MAX_LINE = 4096


class Ledger:
    """The committed effects, in commit order, and each session's last number."""

    def __init__(self) -> None:
        self.last: dict[str, int] = {}
        self.records: list[Record] = []

    def answer(self, line: bytes) -> bytes:
        """The answer to one request line."""
        parts = line.decode(errors="replace").split()
        if len(parts) == 2 and parts[0] == "L":
            return str(self.last.get(parts[1], 0)).encode()
        if len(parts) == 7 and parts[0] == "C":
            _, session, seq_text, client, n, link, backend = parts
            seq = int(seq_text)
            if seq <= self.last.get(session, 0):
                return b"0"
            self.last[session] = seq
            if client.isdigit() and n.isdigit():
                self.records.append(Record(int(client), int(n), backend, int(link),
                                           len(self.records), time.monotonic()))
            return b"1"
        return b"?"

    async def serve(self, stream: SocketStream) -> None:
        """Answer one backend's requests, in order, until it goes away."""
        reader = BufferedByteReceiveStream(stream)
        async with stream:
            while True:
                try:
                    line = await reader.receive_until(b"\n", MAX_LINE)
                except (anyio.EndOfStream, anyio.IncompleteRead, anyio.BrokenResourceError,
                        anyio.DelimiterNotFound):
                    return
                try:
                    await stream.send(self.answer(line) + b"\n")
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    return

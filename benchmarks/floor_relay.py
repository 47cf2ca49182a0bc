"""The floor of our own stack: a minimal wsproto + anyio WebSocket relay, no wspipe logic.

Per client: accept the TCP connection, complete the WebSocket upgrade (before any
backend is reached, as wspipe does), dial the one backend, complete its
handshake (forwarding the request path), then relay whole messages both ways with
wsproto: fragments are assembled, each message is re-framed on the other side.
Pings are answered hop by hop; a Close from either side is answered and ends both.
There is no pool, no buffer, no failover, no backpressure accounting beyond
``await send()``, no timers and no hooks. ``benchmarks/e2e.py`` compares wspipe's
throughput against this on the same async library.

    python benchmarks/floor_relay.py --listen 127.0.0.1:8090 --backend ws://127.0.0.1:9000 \
        [--async-lib asyncio|trio]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import signal
import sys
from typing import Any
from urllib.parse import urlsplit

import anyio
from anyio.abc import ByteStream, SocketStream
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

READ = 64 * 1024
_MESSAGE = (TextMessage, BytesMessage)
_ERRORS = (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, OSError)


class _Writer:
    __slots__ = ("lock", "stream")

    def __init__(self, stream: ByteStream) -> None:
        self.stream = stream
        self.lock = anyio.Lock(fast_acquire=True)

    async def send(self, data: bytes) -> None:
        async with self.lock:
            await self.stream.send(data)


class Relay:
    def __init__(self, backend_host: str, backend_port: int, backend_path: str) -> None:
        self.host = backend_host
        self.port = backend_port
        self.path = backend_path.rstrip("/")

    async def handle(self, client: SocketStream) -> None:
        async with client:
            # One connection failing never stops the server.
            with contextlib.suppress(Exception):
                await self._handle(client)

    async def _handle(self, client: SocketStream) -> None:
        cws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        while request is None:
            cws.receive_data(await client.receive(READ))
            for event in cws.events():
                if isinstance(event, Request):
                    request = event
                    break
        await client.send(cws.send(AcceptConnection()))
        backend = await anyio.connect_tcp(self.host, self.port)
        async with backend:
            bws = WSConnection(ConnectionType.CLIENT)
            await backend.send(bws.send(Request(host=f"{self.host}:{self.port}",
                                                target=self.path + request.target)))
            pending: list[Any] = []
            accepted = False
            while not accepted:
                data = await backend.receive(READ)
                bws.receive_data(data)
                for event in bws.events():
                    if isinstance(event, AcceptConnection):
                        accepted = True
                    elif isinstance(event, RejectConnection):
                        return
                    elif accepted:
                        pending.append(event)
            # Both pumps may write to one stream (a relayed message, a pong or a close
            # answer): one lock per stream; uncontended, it costs no checkpoint.
            client_out = _Writer(client)
            backend_out = _Writer(backend)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._pump, client, client_out, cws, backend_out, bws, [],
                              tg.cancel_scope)
                tg.start_soon(self._pump, backend, backend_out, bws, client_out, cws, pending,
                              tg.cancel_scope)

    async def _pump(self, src: ByteStream, src_out: _Writer, sws: WSConnection, dst: _Writer,
                    dws: WSConnection, first: list[Any], scope: anyio.CancelScope) -> None:
        """Read ``src``, relay whole messages to ``dst``; a Close ends the relay."""
        parts: list[Any] = []
        try:
            events: Any = first or sws.events()
            while True:
                out = []
                for event in events:
                    if isinstance(event, _MESSAGE):
                        if not event.message_finished:
                            parts.append(event.data)
                            continue
                        data = event.data
                        if parts:
                            parts.append(data)
                            data = "".join(parts) if isinstance(data, str) else b"".join(parts)
                            parts = []
                        out.append(dws.send(type(event)(data=data)))
                    elif isinstance(event, Ping):
                        if sws.state is ConnectionState.OPEN:
                            await src_out.send(sws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        if sws.state is ConnectionState.REMOTE_CLOSING:
                            await src_out.send(sws.send(event.response()))
                        if dws.state is ConnectionState.OPEN:
                            code = 1000 if event.code in (1005, 1006, 1015) else event.code
                            out.append(dws.send(CloseConnection(code=code,
                                                                reason=event.reason)))
                        if out:
                            await dst.send(b"".join(out))
                        scope.cancel()
                        return
                if out:
                    await dst.send(b"".join(out) if len(out) > 1 else out[0])
                data = await src.receive(READ)
                sws.receive_data(data)
                events = sws.events()
        except (*_ERRORS, LocalProtocolError, RemoteProtocolError):
            scope.cancel()


def run_async(func: Any, async_lib: str) -> Any:
    options: dict[str, Any] = {}
    if async_lib == "asyncio" and importlib.util.find_spec("uvloop") is not None:
        options["use_uvloop"] = True
    return anyio.run(func, backend=async_lib, backend_options=options)


async def serve(host: str, port: int, relay: Relay) -> None:
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    print(f"floor relay listening on {host}:{port}", file=sys.stderr, flush=True)
    with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with anyio.create_task_group() as tg:
            async def stop() -> None:
                async for _ in signals:
                    tg.cancel_scope.cancel()
                    return
            tg.start_soon(stop)
            await listener.serve(relay.handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", default="127.0.0.1:8090", metavar="HOST:PORT")
    parser.add_argument("--backend", required=True, metavar="URL", help="ws:// backend URL")
    parser.add_argument("--async-lib", choices=("asyncio", "trio"), default="asyncio")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    url = urlsplit(args.backend)
    if url.scheme != "ws" or not url.hostname:
        parser.error("--backend must be a ws:// URL")
    relay = Relay(url.hostname, url.port or 80, url.path or "/")
    run_async(lambda: serve(host, int(port), relay), args.async_lib)
    return 0


if __name__ == "__main__":
    sys.exit(main())

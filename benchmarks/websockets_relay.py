"""A naive ``websockets`` proxy: the reference a Python developer would write first.

Per client: accept it with ``websockets`` (asyncio, uvloop when installed), dial the
one backend with the client's path, then two tasks relay whole messages, one per
direction (``async for message in src: await dst.send(message)``); when either side
closes, both are closed. websockets does its framing and masking in C
(``websockets.speedups``), keeps its own ping/pong, and has no pool, buffer,
failover or hooks. ``benchmarks/e2e.py`` runs it as the ``websockets`` target.

    python benchmarks/websockets_relay.py --listen 127.0.0.1:8090 --backend ws://127.0.0.1:9000
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from typing import Any


async def main(host: str, port: int, backend: str) -> None:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    async def pump(src: Any, dst: Any) -> None:
        with contextlib.suppress(Exception):  # a benchmark peer going away is normal
            async for message in src:
                await dst.send(message)

    async def relay(client: Any) -> None:
        path = client.request.path if client.request is not None else "/"
        async with connect(backend + path, compression=None, max_size=None,
                           ping_interval=None) as upstream:
            tasks = [asyncio.ensure_future(pump(client, upstream)),
                     asyncio.ensure_future(pump(upstream, client))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(relay, host, port, compression=None, max_size=None, ping_interval=None,
                     backlog=4096):
        await stop


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    parser.add_argument("--backend", required=True, help="ws://HOST:PORT of the echo backend")
    args = parser.parse_args()
    listen_host, _, listen_port = args.listen.rpartition(":")
    try:
        import uvloop
        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(listen_host, int(listen_port), args.backend.rstrip("/")))

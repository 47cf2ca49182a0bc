"""A Starlette echo app on uvicorn, run as a subprocess: a real framework as a backend.

Prints ``PORT <n>`` once listening, then ``MSG <text>`` for each text message the
application processed. SIGTERM is uvicorn's graceful shutdown: it closes open WebSockets
with 1012, and like any framework it drops what arrives in its last moments.
"""

from __future__ import annotations

import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect


async def echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            text = await ws.receive_text()
            print("MSG", text, flush=True)
            await ws.send_text(text)
    except WebSocketDisconnect:
        pass


app = Starlette(routes=[WebSocketRoute("/{path:path}", echo)])


def main() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print("PORT", sock.getsockname()[1], flush=True)
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio", lifespan="off",
                            timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    sys.exit(main())

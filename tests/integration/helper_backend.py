"""A backend app using wspipe_backend, run as a subprocess: Starlette on uvicorn, or a
``websockets`` server. Its database is SQLite (shared by every backend process of a
test): each message's effect and the session's number are committed in one
transaction, the pattern docs/delivery.md describes.

``helper_backend.py starlette|websockets DB [CRASH_AFTER]`` prints ``PORT <n>``;
with ``CRASH_AFTER`` the process dies (SIGKILL) right after committing that
message, before acking it — the case only deduplication saves. SIGTERM is a graceful
shutdown (uvicorn closes with 1012, websockets with 1001).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sqlite3
import sys

from wspipe_backend import MemoryStore, Message

CRASH_AFTER = sys.argv[3] if len(sys.argv) > 3 else None


class SqliteStore:
    """The app's database: processed messages and each session's last number."""

    def __init__(self, path: str) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=10)
        self.db.execute("pragma journal_mode=wal")
        self.db.execute("create table if not exists sessions (id text primary key, "
                        "last integer)")
        self.db.execute("create table if not exists processed (session text, seq integer, "
                        "data text, pid integer)")

    async def last(self, session: str) -> int:
        row = self.db.execute("select last from sessions where id = ?", (session,)).fetchone()
        return row[0] if row else 0

    async def commit(self, message: Message) -> bool:
        db = self.db
        db.execute("begin immediate")
        row = db.execute("select last from sessions where id = ?", (message.session,))
        last = (row.fetchone() or (0,))[0]
        if message.seq <= last:
            db.execute("rollback")
            return False
        data = message.data if isinstance(message.data, str) else message.data.decode()
        db.execute("insert into processed values (?, ?, ?, ?)",
                   (message.session, message.seq, data, os.getpid()))
        db.execute("insert or replace into sessions values (?, ?)",
                   (message.session, message.seq))
        db.execute("commit")
        if data == CRASH_AFTER:
            os.kill(os.getpid(), signal.SIGKILL)  # processed and committed, never acked
        return True


STORE: SqliteStore | MemoryStore = SqliteStore(sys.argv[2])


def listening_socket() -> socket.socket:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    print("PORT", sock.getsockname()[1], flush=True)
    return sock


def run_starlette() -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    from wspipe_backend.starlette import acked_messages

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in acked_messages(websocket, STORE):
            await websocket.send_text(f"got {message.data}")

    app = Starlette(routes=[WebSocketRoute("/{path:path}", endpoint)])
    config = uvicorn.Config(app, log_level="warning", ws="websockets-sansio",
                            lifespan="off", timeout_graceful_shutdown=2)
    uvicorn.Server(config).run(sockets=[listening_socket()])


async def run_websockets() -> None:
    from websockets.asyncio.server import ServerConnection, serve

    from wspipe_backend.websockets import acked_messages

    async def handler(connection: ServerConnection) -> None:
        async for message in acked_messages(connection, STORE):
            await connection.send(f"got {message.data}")

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(handler, sock=listening_socket(), compression=None,
                     ping_interval=None):
        await stop


if __name__ == "__main__":
    if sys.argv[1] == "starlette":
        run_starlette()
    else:
        asyncio.run(run_websockets())

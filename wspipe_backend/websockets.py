"""Acked messages of a ``websockets`` server connection (the asyncio API).

.. code-block:: python

    async def handler(connection: ServerConnection) -> None:
        async for message in acked_messages(connection, store):
            await connection.send(f"got {message.data}")

    async with websockets.asyncio.server.serve(handler, "127.0.0.1", 9000):
        ...
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from .session import ACK_PREFIX, HEADER_PREFIX, AckedSession, Message, Store, acked_stream


async def acked_messages(connection: ServerConnection, store: Store, *,
                         header_prefix: str = HEADER_PREFIX,
                         ack_prefix: str = ACK_PREFIX) -> AsyncIterator[Message]:
    """Each client message of ``connection`` once per session; acked when the loop body
    that got it returns. Ends when the connection closes."""

    async def receive() -> str | bytes | None:
        try:
            return await connection.recv()
        except ConnectionClosed:
            return None

    async def send_text(text: str) -> None:
        # Unacked if it fails: the proxy replays it, the next backend skips it.
        with contextlib.suppress(ConnectionClosed):
            await connection.send(text)

    assert connection.request is not None
    session = AckedSession(connection.request.headers.raw_items(),
                           header_prefix=header_prefix, ack_prefix=ack_prefix)
    async for message in acked_stream(receive, send_text, session, store):
        yield message

"""Acked messages of a Starlette (or FastAPI) WebSocket.

.. code-block:: python

    @app.websocket("/{path:path}")
    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        async for message in acked_messages(websocket, store):
            await websocket.send_text(f"got {message.data}")
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from starlette.websockets import WebSocket, WebSocketDisconnect

from .session import ACK_PREFIX, HEADER_PREFIX, AckedSession, Message, Store, acked_stream


async def acked_messages(websocket: WebSocket, store: Store, *,
                         header_prefix: str = HEADER_PREFIX,
                         ack_prefix: str = ACK_PREFIX) -> AsyncIterator[Message]:
    """Each client message of an accepted ``websocket`` once per session; acked when the
    loop body that got it returns. Ends when the client side disconnects."""

    async def receive() -> str | bytes | None:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return None
        text = event.get("text")
        return text if text is not None else bytes(event.get("bytes") or b"")

    async def send_text(text: str) -> None:
        # Unacked if it fails: the proxy replays it, the next backend skips it.
        with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
            await websocket.send_text(text)

    session = AckedSession(websocket.headers.items(), header_prefix=header_prefix,
                           ack_prefix=ack_prefix)
    async for message in acked_stream(receive, send_text, session, store):
        yield message

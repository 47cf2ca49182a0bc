"""Acknowledgement and deduplication for Python backends behind wspipe.

With ``delivery = "acked"`` wspipe keeps every client message until the backend says
it *processed* it, and replays the unacknowledged ones on the next backend after an
interruption. This package does the backend's half in a few lines:

.. code-block:: python

    from wspipe_backend import MemoryStore
    from wspipe_backend.starlette import acked_messages   # or wspipe_backend.websockets

    store = MemoryStore()          # or a shared store: see Store

    async def endpoint(websocket):
        await websocket.accept()
        async for message in acked_messages(websocket, store):
            await handle(message.data)   # processed: acked when the loop comes back

Each message is yielded once per session even when the proxy replays it; it is
acknowledged after the loop body returns (and the store committed it). Behind a
proxy in another mode, or without one, messages pass through unnumbered and nothing
is acknowledged. The protocol is in docs/delivery.md.
"""

from __future__ import annotations

from .session import (
    ACK_PREFIX,
    HEADER_PREFIX,
    AckedSession,
    MemoryStore,
    Message,
    Store,
    acked_stream,
)

__all__ = ["ACK_PREFIX", "HEADER_PREFIX", "AckedSession", "MemoryStore", "Message", "Store",
           "acked_stream"]

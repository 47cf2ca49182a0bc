"""Many real clients at once, on an asyncio loop in a thread of their own.

websockets' asyncio client is cheaper per connection than a thread per client, and
running it in its own thread keeps it independent of the runtime (asyncio or trio)
the proxy under test runs on. Every call is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

T = TypeVar("T")


class LoadThread:
    """An asyncio loop in a daemon thread; coroutines are run on it from the test."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    async def run(self, make: Callable[[], Awaitable[T]], timeout: float) -> T:
        """Run ``make()`` on the load loop; wait for it (off the test's event loop)."""
        async def bounded() -> T:
            return await asyncio.wait_for(make(), timeout)  # type: ignore[arg-type]
        future = asyncio.run_coroutine_threadsafe(bounded(), self.loop)
        return await anyio.to_thread.run_sync(lambda: future.result(timeout + 5))

    def start(self, make: Callable[[], Awaitable[Any]]) -> Any:
        """Start ``make()`` on the load loop in the background; returns its future."""
        return asyncio.run_coroutine_threadsafe(make(), self.loop)  # type: ignore[arg-type]

    def stop(self) -> None:
        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_all(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@contextlib.asynccontextmanager
async def load_thread() -> AsyncIterator[LoadThread]:
    load = LoadThread()
    try:
        yield load
    finally:
        await anyio.to_thread.run_sync(load.stop)


async def open_client(uri: str, **kwargs: Any) -> ClientConnection:
    """A websockets asyncio client with the tests' defaults (call on the load loop)."""
    kwargs.setdefault("compression", None)
    kwargs.setdefault("max_size", None)
    kwargs.setdefault("ping_interval", None)
    kwargs.setdefault("open_timeout", 10)
    kwargs.setdefault("close_timeout", 2)
    return await connect(uri, **kwargs)


@dataclass
class Echoer:
    """A client that sends numbered messages every ``interval`` and times the echoes."""

    ws: ClientConnection
    interval: float
    #: Monotonic times of the echoes received.
    echoes: list[float] = field(default_factory=list)
    sent: int = 0
    received: list[str] = field(default_factory=list)
    #: The close code it got, if the proxy closed it.
    closed: int | None = None

    async def run(self, duration: float) -> None:
        """Send and receive for ``duration`` seconds (call on the load loop)."""
        async def reader() -> None:
            try:
                async for message in self.ws:
                    self.received.append(str(message))
                    self.echoes.append(time.monotonic())
            except ConnectionClosed:
                pass
            if self.ws.close_code is not None:
                self.closed = self.ws.close_code

        task = asyncio.ensure_future(reader())
        end = time.monotonic() + duration
        try:
            while time.monotonic() < end and not task.done():
                with contextlib.suppress(ConnectionClosed):
                    await self.ws.send(f"m{self.sent:06d}")
                    self.sent += 1
                await asyncio.sleep(self.interval)
        finally:
            await asyncio.sleep(min(1.0, self.interval * 10))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if self.ws.close_code is not None:
                self.closed = self.ws.close_code

    def gaps_after(self, t: float) -> float:
        """Seconds from ``t`` to the first echo after it (``inf`` if none)."""
        return next((e - t for e in self.echoes if e > t), float("inf"))


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))
    return ordered[index]

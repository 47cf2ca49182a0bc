"""Backpressure end to end: a client that does not read stops the backend, memory stays bounded."""

from __future__ import annotations

import anyio
import pytest
from peers import Backend, Client, client_path, running_backends, running_proxy, url

from wspipe_anyio.connection import MAX_READ

pytestmark = pytest.mark.anyio

CHUNK = 64 * 1024
COUNT = 256  # 16 MiB towards a client that reads nothing for a while


def blast(ws, message) -> None:  # type: ignore[no-untyped-def]
    for i in range(COUNT):
        ws.send(i.to_bytes(4, "big") + bytes(CHUNK - 4))


async def test_slow_client_pauses_the_backend_and_the_outbox_stays_bounded() -> None:
    # Far above what the kernel's socket buffers may still take after the pause
    # (their autotuning varies by a few hundred KiB), so the lower bound shows the
    # outbox filled to the mark rather than the kernel's mood.
    high = 1024 * 1024
    async with running_backends(Backend(on_message=blast), timeout=30) as (backend,):
        async with running_proxy([backend.url], write_high_water=high,
                                 write_low_water=64 * 1024) as server:
            # max_queue=1: websockets stops reading its socket once one frame is queued.
            client = await Client.connect(url(server, client_path()), max_queue=1)
            await client.send("go")
            largest = 0
            with anyio.move_on_after(1.0):  # the client reads nothing meanwhile
                while True:
                    largest = max(largest, server.queued_bytes())
                    await anyio.sleep(0.005)
            # Above the mark: at most one read (MAX_READ) and one message in progress.
            assert high // 2 < largest <= high + MAX_READ + CHUNK + 1024, largest
            # Operators see the same number: the proxy's outbox gauge.
            body, _ = server.metrics.exposition()
            gauge = next(line for line in body.decode().splitlines()
                         if line.startswith("wspipe_outbox_bytes "))
            assert float(gauge.split()[1]) == server.queued_bytes() > 0
            received = [await client.recv(timeout=10) for _ in range(COUNT)]
            assert [int.from_bytes(m[:4], "big") for m in received] == list(range(COUNT))
            await client.close()


# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

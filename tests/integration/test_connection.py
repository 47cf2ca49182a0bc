"""The driver's channels: what one read produces is written by the reader task where it can be.

Two channels over loopback sockets, the way the server wires a client to its link:
what the reader of one queues on the other while it dispatches a read goes out in
one write. On trio (a plain socket the reader may write to without blocking) the
reader task writes it and reports it itself; on asyncio, whose transport owns the
socket, the writer task does, as always.
"""

from __future__ import annotations

import anyio
import pytest
from anyio.abc import SocketAttribute

from wspipe_anyio.connection import MAX_WRITE, Channel, InlineWrites

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(("size", "count"), [(6, 3), (64 * 1024, 5)])
async def test_a_read_s_writes_go_out_in_one_send_from_the_reader_task(anyio_backend, size,
                                                                        count):
    """``count`` frames of ``size`` bytes out of one read; 5 x 64 KiB is more than one
    write (``MAX_WRITE``): the writer task takes over the rest."""
    inline = InlineWrites()
    tasks: dict[str, list[object]] = {"read": [], "sent": []}
    sent: list[int] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(SocketAttribute.local_port)
    accepted: list[object] = []

    async def accept(stream) -> None:  # type: ignore[no-untyped-def]
        accepted.append(stream)
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, accept)
            b_stream = await anyio.connect_tcp("127.0.0.1", port)
            while len(accepted) < 1:
                await anyio.sleep(0.01)
            out_peer = accepted[0]  # reads what B writes
            a_stream = await anyio.connect_tcp("127.0.0.1", port)
            while len(accepted) < 2:
                await anyio.sleep(0.01)
            in_peer = accepted[1]  # writes what A reads

            def on_sent(n: int) -> None:
                tasks["sent"].append(anyio.get_current_task().id)
                sent.append(n)

            b = Channel("link=1", on_data=lambda data: None, on_sent=on_sent,
                        on_eof=lambda why: None, linger=1.0, inline=inline)

            def on_data(data: bytes) -> None:
                tasks["read"].append(anyio.get_current_task().id)
                for i in range(count):  # frames for B out of one read
                    b.send(bytes([i]) * size)

            a = Channel("conn=1", on_data=on_data, on_sent=lambda n: None,
                        on_eof=lambda why: None, linger=1.0, inline=inline)
            tg.start_soon(b.run, b_stream)
            tg.start_soon(a.run, a_stream)
            await anyio.sleep(0.05)  # both channels idle: readers and writers waiting
            await in_peer.send(b"hello")  # type: ignore[attr-defined]
            received = b""
            while len(received) < size * count:
                received += await out_peer.receive()  # type: ignore[attr-defined]
            assert received == b"".join(bytes([i]) * size for i in range(count))
            assert sum(sent) == size * count
            if count * size <= MAX_WRITE:
                assert sent == [size * count]  # one write of every frame
            if anyio_backend == "trio" and count * size <= MAX_WRITE:
                assert tasks["sent"] == tasks["read"]  # written by the reader task
            else:
                assert tasks["sent"] != tasks["read"]  # asyncio: by B's writer task
            a.close()
            b.close()
            await out_peer.aclose()  # type: ignore[attr-defined]
            await in_peer.aclose()  # type: ignore[attr-defined]
            tg.cancel_scope.cancel()

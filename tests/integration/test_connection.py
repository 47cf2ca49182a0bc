"""The driver's plain TCP channels: what one read produces goes out in one write, from the reader.

Two :class:`SocketChannel` over loopback sockets, wired the way the server wires a
client to its link: what the reader of A queues on B while it dispatches a read is
written right after the dispatch (``SocketIO.flush``, as ``ProxyServer.dispatch``
does), by A's reader task, in one ``sendmsg`` — on asyncio and on trio alike. What
the kernel does not take goes to B's writer task, in order.
"""

from __future__ import annotations

import socket

import anyio
import pytest

from wspipe_anyio.connection import SocketChannel, SocketIO

pytestmark = pytest.mark.anyio


def _pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair: (ours, non-blocking; the peer's, blocking)."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        ours = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
    ours.setblocking(False)
    return ours, peer


@pytest.mark.parametrize(("size", "count"), [(6, 3), (64 * 1024, 5), (64 * 1024, 256)])
async def test_a_read_s_writes_go_out_in_one_send_from_the_reader_task(size: int,
                                                                        count: int) -> None:
    """``count`` frames of ``size`` bytes out of one read. 256 x 64 KiB (16 MiB) is more
    than the kernel takes while B's peer is not reading: B's writer task writes the
    rest once it reads, and everything arrives in order."""
    tasks: dict[str, list[object]] = {"read": [], "sent": []}
    sent: list[int] = []
    a_sock, in_peer = _pair()  # in_peer writes what A reads
    b_sock, out_peer = _pair()  # out_peer reads what B writes
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            io = SocketIO(lambda channel: tg.start_soon(channel.write_loop))

            def on_sent(n: int) -> None:
                tasks["sent"].append(anyio.get_current_task().id)
                sent.append(n)

            b = SocketChannel("link=1", on_data=lambda data: None, on_sent=on_sent,
                              on_eof=lambda why: None, linger=1.0, io=io)

            def on_data(data: bytes) -> None:
                tasks["read"].append(anyio.get_current_task().id)
                for i in range(count):  # frames for B out of one read
                    b.send(bytes([i % 256]) * size)
                io.flush()  # what ProxyServer.dispatch does after every batch of actions

            a = SocketChannel("conn=1", on_data=on_data, on_sent=lambda n: None,
                              on_eof=lambda why: None, linger=1.0, io=io)

            async def run(channel: SocketChannel, sock: socket.socket) -> None:
                with channel.scope:
                    await channel.run(sock)

            tg.start_soon(run, b, b_sock)
            tg.start_soon(run, a, a_sock)
            await anyio.sleep(0.05)  # both channels idle, waiting to read
            in_peer.sendall(b"hello")
            expected = b"".join(bytes([i % 256]) * size for i in range(count))
            if len(expected) > 4 * 1024 * 1024:
                await anyio.sleep(0.2)  # the peer reads nothing yet: B's outbox fills
                assert b.writing and 0 < b.queued < len(expected)
            received = bytearray()
            while len(received) < len(expected):
                received += await anyio.to_thread.run_sync(out_peer.recv, 1 << 20)
            assert received == expected
            assert sum(sent) == len(expected) and b.queued == 0
            assert tasks["sent"][0] == tasks["read"][0]  # the first write: A's reader task
            if len(expected) <= 64 * 1024:
                assert sent == [len(expected)]  # one write of every frame
            if len(expected) > 4 * 1024 * 1024:
                assert set(tasks["sent"]) != set(tasks["read"])  # B's writer task too
            a.close()
            b.close()
            in_peer.close()
            out_peer.close()


async def test_connect_socket_tries_each_address_and_reports_the_last_failure() -> None:
    """With a listener on 127.0.0.1 only, ``localhost`` connects (where it resolves to
    ::1 first, as here, the refused ::1 is skipped); with none, the refusal is the error."""
    from wspipe_anyio.server import connect_socket

    addresses = {info[4][0] for info in await anyio.getaddrinfo("localhost", 1,
                                                                 type=socket.SOCK_STREAM)}
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        with anyio.fail_after(5):
            sock = await connect_socket("localhost", port)
        try:
            assert not sock.getblocking()
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
            assert sock.getpeername()[:2] == ("127.0.0.1", port)
        finally:
            sock.close()
    assert "127.0.0.1" in addresses
    with pytest.raises(OSError, match="failed"), anyio.fail_after(5):
        await connect_socket("127.0.0.1", port)  # closed now: refused

"""Bad clients are refused or closed with the right status or code; other clients carry on."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

import anyio
import pytest
from peers import Backend, Client, client_path, raw_request, running_backends, running_proxy, url
from websockets.exceptions import InvalidStatus
from websockets.frames import Frame, Opcode

from wspipe_anyio import ProxyServer

pytestmark = pytest.mark.anyio


@contextlib.asynccontextmanager
async def proxy_with_bystander(**config: object) -> AsyncIterator[tuple[ProxyServer, Client]]:
    """A proxy with one well-behaved client connected, checked again at the end."""
    async with running_backends(Backend(), timeout=15) as (backend,):
        async with running_proxy([backend.url], **config) as server:  # type: ignore[arg-type]
            bystander = await Client.connect(url(server, client_path()))
            await bystander.send("before")
            assert await bystander.recv() == "before"
            yield server, bystander
            await bystander.send("after")
            assert await bystander.recv() == "after"
            assert bystander.ws.close_code is None
            await bystander.close()


async def rejected_status(server: ProxyServer, path: str) -> int:
    with pytest.raises(InvalidStatus) as info:
        await Client.connect(url(server, path))
    return info.value.response.status_code


async def test_garbage_instead_of_http_gets_400() -> None:
    async with proxy_with_bystander() as (server, _):
        answer = await raw_request(server.port, b"\x16\x03\x01\x02\x00garbage\r\n\r\n")
        assert answer.startswith(b"HTTP/1.1 400 ")


async def test_non_uuid_path_gets_400_with_reason() -> None:
    async with proxy_with_bystander() as (server, _):
        assert await rejected_status(server, "/not-a-uuid") == 400
        answer = await raw_request(server.port, (
            b"GET /not-a-uuid HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"))
        assert answer.startswith(b"HTTP/1.1 400 ")
        assert answer.rstrip().endswith(b"must be /<uuid>")


async def test_duplicate_live_client_id_gets_409() -> None:
    async with proxy_with_bystander() as (server, _):
        path = f"/{uuid.uuid4()}"
        first = await Client.connect(url(server, path))
        assert await rejected_status(server, path) == 409
        await first.send("first still works")
        assert await first.recv() == "first still works"
        await first.close()


async def test_over_max_connections_gets_503() -> None:
    async with proxy_with_bystander(max_connections=1) as (server, _):
        assert await rejected_status(server, client_path()) == 503


async def test_oversize_message_closes_that_client_with_1009() -> None:
    async with proxy_with_bystander(max_message_size=1024) as (server, _):
        client = await Client.connect(url(server, client_path()))
        await client.send(b"x" * 1025)
        code, _ = await client.wait_closed()
        assert code == 1009


async def test_invalid_utf8_text_closes_that_client_with_1007() -> None:
    async with proxy_with_bystander() as (server, _):
        client = await Client.connect(url(server, client_path()))

        def send_invalid_text() -> None:
            with client.ws.send_context():
                client.ws.protocol.send_frame(Frame(Opcode.TEXT, b"bad \xff\xfe utf-8"))

        await anyio.to_thread.run_sync(send_invalid_text)
        code, _ = await client.wait_closed()
        assert code == 1007


async def test_unfinished_handshake_is_closed_after_handshake_timeout() -> None:
    async with proxy_with_bystander(handshake_timeout=0.5) as (server, _):
        started = anyio.current_time()
        answer = await raw_request(server.port, b"GET /" + str(uuid.uuid4()).encode()
                                   + b" HTTP/1.1\r\nHost: x\r\n")
        elapsed = anyio.current_time() - started
        assert 0.4 <= elapsed < 3.0
        assert answer.startswith(b"HTTP/1.1 408 ")


async def test_the_oldest_idle_handshake_of_a_peer_is_closed_with_408_to_make_room() -> None:
    # The 408 must still be written before the close.
    async with proxy_with_bystander(max_pending_per_peer=2) as (server, _):
        async with await anyio.connect_tcp("127.0.0.1", server.port) as oldest, \
                await anyio.connect_tcp("127.0.0.1", server.port):
            await anyio.sleep(0.05)  # both are pending before the third arrives
            client = await Client.connect(url(server, client_path()))
            await client.send("in")
            assert await client.recv() == "in"
            with anyio.fail_after(5):
                answer = b""
                with contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
                    while True:
                        answer += await oldest.receive()
            assert answer.startswith(b"HTTP/1.1 408 ")
            assert b"more than 2 pending from 127.0.0.1" in answer
            await client.close()

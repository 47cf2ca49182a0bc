"""Relay over loopback: message types, sizes, fragments, subprotocols, forwarded request data."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import uuid

import pytest
from peers import Backend, Client, client_path, running_backends, running_proxy, url

pytestmark = pytest.mark.anyio


async def test_text_and_binary_both_ways() -> None:
    async with running_backends(Backend(), timeout=10) as (backend,):
        async with running_proxy([backend.url]) as server:
            client = await Client.connect(url(server, client_path()))
            sent: list[str | bytes] = ["hello", b"\x00\x01\xff", "", b"", "héllo ✓"]
            for message in sent:
                await client.send(message)
            assert await client.recv_n(len(sent)) == sent
            assert backend.messages() == sent
            await client.close()


async def test_fragmented_message_is_relayed_whole() -> None:
    def reply_in_fragments(ws, message) -> None:  # type: ignore[no-untyped-def]
        ws.send([message[:3], message[3:6], message[6:]])  # fragments from the backend too

    async with running_backends(Backend(on_message=reply_in_fragments), timeout=10) as (backend,):
        async with running_proxy([backend.url]) as server:
            client = await Client.connect(url(server, client_path()))
            await client.send(["frag", "mented ", "text"])
            await client.send([b"bin", b"ary"])
            assert await client.recv_n(2) == ["fragmented text", b"binary"]
            assert backend.messages() == ["fragmented text", b"binary"]
            await client.close()


async def test_one_mib_messages_both_ways() -> None:
    big_binary = bytes(range(256)) * 4096  # 1 MiB
    big_text = "x" * (1 << 20)
    async with running_backends(Backend(), timeout=20) as (backend,):
        async with running_proxy([backend.url], max_message_size=2 << 20) as server:
            client = await Client.connect(url(server, client_path()))
            await client.send(big_binary)
            await client.send(big_text)
            assert await client.recv_n(2) == [big_binary, big_text]
            assert backend.messages() == [big_binary, big_text]
            await client.close()


async def test_subprotocol_allow_list_filters_what_the_backend_is_offered() -> None:
    chat = Backend(subprotocols=["chat.v1", "chat.v2"])
    async with running_backends(chat, timeout=10) as (backend,):
        async with running_proxy([backend.url], subprotocols=("chat.v1", "chat.v2")) as server:
            client = await Client.connect(url(server, client_path()),
                                          subprotocols=["mqtt", "chat.v2", "chat.v1"])
            assert client.ws.subprotocol == "chat.v1"  # the backend's choice, on both hops
            await client.send("ping")
            assert await client.recv() == "ping"
            assert backend.requests[0].headers["Sec-WebSocket-Protocol"] == "chat.v2, chat.v1"
            assert backend.connections[0].subprotocol == "chat.v1"
            await client.close()


async def test_path_query_and_client_id_forwarded_to_backend() -> None:
    client_id = str(uuid.uuid4())
    async with running_backends(Backend(), timeout=10) as (backend,):
        async with running_proxy([backend.url + "/base"]) as server:
            client = await Client.connect(url(server, f"/{client_id}?room=7&x=%20y"),
                                          additional_headers={"Cookie": "session=abc"})
            await client.send("hi")
            assert await client.recv() == "hi"
            request = backend.requests[0]
            assert request.path.endswith(f"/{client_id}?room=7&x=%20y")
            assert request.path.startswith("/base")
            assert request.headers["X-Wspipe-Client-Id"] == client_id
            assert request.headers["Cookie"] == "session=abc"
            assert request.headers["X-Forwarded-For"] == "127.0.0.1"
            await client.close()

"""What docs/behaviour.md says a newcomer gets, over loopback on asyncio and trio: what
the backend receives (target, Host, forwarded headers, X-Forwarded-*, client id, session
headers, subprotocols), the client-id format, and what ``--listen :PORT`` binds."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from peers import Backend, Client, free_port, raw_request, running_backends, running_proxy, url

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


async def test_the_backend_receives_target_headers_and_ids_as_documented() -> None:
    client_id = str(uuid.uuid4()).upper()
    async with running_backends(Backend(subprotocols=["chat.v1"]), timeout=10) as (
            backend,), running_proxy([backend.url + "/base?v=2"]) as server:
        client = await Client.connect(
            url(server, f"/rooms/{client_id}?x=1"), subprotocols=["chat.v2", "chat.v1"],
            additional_headers={"Cookie": "s=1", "Authorization": "Bearer t",
                                "X-Secret": "no", "X-Forwarded-For": "10.1.1.1"})
        await client.send("hi")
        assert await client.recv() == "hi"
        request = backend.requests[0]
        headers = request.headers
        assert request.path == f"/base/rooms/{client_id}?v=2&x=1"
        assert headers["Host"] == f"127.0.0.1:{backend.port}"
        assert headers["Cookie"] == "s=1" and headers["Authorization"] == "Bearer t"
        assert "X-Secret" not in headers
        assert headers["X-Forwarded-For"] == "10.1.1.1, 127.0.0.1"
        assert headers["X-Forwarded-Proto"] == "http"
        assert headers["X-Wspipe-Client-Id"] == client_id.lower()
        assert headers["X-Wspipe-Link"] == "1" and headers["X-Wspipe-Session"]
        assert headers["Sec-WebSocket-Protocol"] == "chat.v2, chat.v1"
        assert client.ws.subprotocol == "chat.v1"
        await client.close()


async def test_forward_headers_and_forward_target_change_what_it_receives() -> None:
    async with running_backends(Backend(), timeout=10) as (backend,), running_proxy(
            [backend.url + "/base"], forward_target=False, forward_headers=("x-request-id",),
            client_id_header="x-session-owner") as server:
        client_id = str(uuid.uuid4())
        client = await Client.connect(
            url(server, f"/{client_id}?q=1"),
            additional_headers={"Cookie": "s=1", "X-Request-Id": "r-7"})
        await client.send("hi")
        assert await client.recv() == "hi"
        headers = backend.requests[0].headers
        assert backend.requests[0].path == "/base"
        assert headers["X-Request-Id"] == "r-7" and "Cookie" not in headers
        assert headers["X-Session-Owner"] == client_id
        await client.close()


@pytest.mark.parametrize("path", ["/not-a-uuid", f"/{uuid.uuid4().hex}", "/"])
async def test_a_client_id_that_is_not_a_hyphenated_uuid_gets_400(path: str) -> None:
    async with running_proxy([]) as server:
        answer = await raw_request(server.port, (
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode())
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"must be /<uuid>" in answer


def test_listen_colon_port_binds_loopback_only() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f":{port}"], cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        lines = []
        for line in proc.stderr:  # bounded: serve logs "ready" after listening
            lines.append(line)
            if line.rstrip().endswith(": ready"):
                break
        listening = [m.group(1) for line in lines
                     if (m := re.search(r"listening on (ws://\S+)", line))]
        assert listening == [f"ws://127.0.0.1:{port}"], lines
    finally:
        proc.terminate()
        assert proc.wait(10) == 0

"""``wspipe serve`` configured by ``$WSPIPE_*`` alone, over the wire on asyncio and trio:
listen address, backends, limits and the admin token from a file (rotated by a reload);
a bad value exits 2 naming the variable."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import httpx
import pytest
from peers import Backend, Client, client_path, free_port, raw_request, running_backends

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


def clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WSPIPE_")}


async def test_serve_from_the_environment_alone(anyio_backend: str, tmp_path: Path) -> None:
    token_file, admin_port = tmp_path / "token", free_port()
    token_file.write_text("first-token\n")
    async with running_backends(Backend(), timeout=40) as (backend,):
        env = {**clean_environ(), "PYTHONPATH": str(ROOT),
               "WSPIPE_LISTEN": "127.0.0.1:0", "WSPIPE_BACKENDS": backend.url,
               "WSPIPE_ASYNC_LIB": anyio_backend, "WSPIPE_PING_INTERVAL": "0",
               "WSPIPE_MAX_CONNECTIONS": "2", "WSPIPE_ADMIN": f"127.0.0.1:{admin_port}",
               "WSPIPE_ADMIN_TOKEN_FILE": str(token_file), "WSPIPE_SHUTDOWN_GRACE": "2s"}
        proc = subprocess.Popen([sys.executable, "-m", "wspipe_anyio", "serve"], cwd=ROOT,
                                env=env, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []

        def read() -> None:
            assert proc.stderr is not None
            for line in proc.stderr:
                lines.append(line)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            with anyio.fail_after(10):
                while not any(line.rstrip().endswith(": ready") for line in lines):
                    assert proc.poll() is None, "".join(lines)
                    await anyio.sleep(0.02)
            (port,) = {int(m[1]) for line in lines
                       if (m := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line))}
            clients = [await Client.connect(f"ws://127.0.0.1:{port}{client_path()}")
                       for _ in range(2)]
            for number, client in enumerate(clients):
                await client.send(f"env {number}")
                assert await client.recv() == f"env {number}"
            # WSPIPE_MAX_CONNECTIONS=2: the third client gets 503.
            answer = await raw_request(port, (
                f"GET {client_path()} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            assert answer.startswith(b"HTTP/1.1 503 ")
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}",
                                         timeout=5.0) as http:
                def auth(token: str) -> dict[str, str]:
                    return {"Authorization": f"Bearer {token}"}

                r = await http.get("/backends", headers=auth("first-token"))
                assert r.status_code == 200 and [b["url"] for b in r.json()] == [backend.url]
                token_file.write_text("second-token\n")
                proc.send_signal(signal.SIGHUP)  # the token file is re-read
                with anyio.fail_after(5):
                    while (await http.get("/backends", headers=auth("second-token"))
                           ).status_code != 200:
                        await anyio.sleep(0.05)
                assert (await http.get("/backends", headers=auth("first-token"))
                        ).status_code == 403
            for client in clients:
                await client.send("still here")
                assert await client.recv() == "still here"  # the reload dropped no one
            proc.send_signal(signal.SIGTERM)
            for client in clients:
                assert (await client.wait_closed())[0] == 1001
            assert await anyio.to_thread.run_sync(proc.wait, 10) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
            reader.join(5)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("WSPIPE_LISTEN", "nowhere:port", "invalid port in listen address 'nowhere:port' "
                                      "(from $WSPIPE_LISTEN)"),
    ("WSPIPE_MAX_CONNECTIONS", "many", "$WSPIPE_MAX_CONNECTIONS: expected an integer"),
    ("WSPIPE_ASYNC_LIB", "curio", "async_lib must be asyncio or trio, got 'curio' "
                                  "(from $WSPIPE_ASYNC_LIB)"),
])
def test_a_bad_variable_exits_2_naming_it(name: str, value: str, message: str) -> None:
    result = subprocess.run([sys.executable, "-m", "wspipe_anyio", "serve"], cwd=ROOT,
                            env={**clean_environ(), "PYTHONPATH": str(ROOT), name: value},
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr

"""``wspipe backends drain ID --migrate --wait`` as a subprocess against a live ``wspipe serve``.

Streaming clients (websockets, in threads) keep sending through both backends while
the command drains one: it prints progress lines (pipes left, moved, rate, ETA),
exits 0 once the backend has left the pool, and no client message is lost or
duplicated. ``wspipe serve`` runs on the test's anyio backend (``--async-lib``).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

import anyio
import httpx
import pytest
from test_admin_serve import TOKEN, free_port, stop, wait_healthy
from test_rolling import EchoBackend, Recorder, StreamingClient, check, finish, stopping

pytestmark = pytest.mark.anyio

PROGRESS = re.compile(r"^b1: (\d+) pipe\(s\) left, (\d+) of (\d+) moved, "
                      r"(\d+\.\d) pipes/s, ETA (\d+\.\ds|-)$")


def serve(admin: str, port: int, backends: list[str], async_lib: str
          ) -> subprocess.Popen[str]:
    args = [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}",
            "--admin", admin, "--migrate-rate", "10", "--ping-interval", "0",
            "--async-lib", async_lib, "--log-level", "warning"]
    for backend in backends:
        args += ["--backend", backend]
    return subprocess.Popen(args, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            env={**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN})


async def wspipe(*args: str, admin: str, timeout: float = 60
                 ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN, "WSPIPE_ADMIN": admin}
    return await anyio.to_thread.run_sync(lambda: subprocess.run(
        [sys.executable, "-m", "wspipe_anyio", *args], capture_output=True, text=True,
        timeout=timeout, env=env, check=False))


async def test_drain_migrate_wait_prints_progress_and_exits_0_with_nothing_lost(
        anyio_backend: str) -> None:
    recorder = Recorder()
    admin = f"127.0.0.1:{free_port()}"
    port = free_port()
    with anyio.fail_after(90), stopping([EchoBackend(recorder).start(),
                                         EchoBackend(recorder).start()]) as (b1, b2):
        proc = serve(admin, port, [b1.url, b2.url], anyio_backend)
        clients: list[StreamingClient] = []
        try:
            await anyio.to_thread.run_sync(wait_healthy, f"http://{admin}", proc)
            clients = [StreamingClient(i, f"ws://127.0.0.1:{port}/{i:08d}-0000-4000-8000-"
                                          f"{i:012d}") for i in range(20)]
            for client in clients:
                await anyio.to_thread.run_sync(client.start)
            await anyio.sleep(0.5)  # streaming through both backends
            async with httpx.AsyncClient(base_url=f"http://{admin}", timeout=5,
                                         headers={"Authorization": f"Bearer {TOKEN}"}) as http:
                on_b1 = (await http.get("/backends/b1")).json()["pipes"]
                assert on_b1 >= 5
                done = await wspipe("backends", "drain", "b1", "--migrate", "--wait",
                                    "--progress-interval", "0.2", admin=admin)
                assert done.returncode == 0, done.stderr
                lines = done.stdout.splitlines()
                assert lines[0] == (f"backend b1 draining: moving its {on_b1} pipe(s) to "
                                    "other backends at 10/s")
                progress = [PROGRESS.match(line) for line in lines[1:-1]]
                assert len(progress) >= 2 and all(progress), lines
                left = [int(m[1]) for m in progress if m]
                moved = [int(m[2]) for m in progress if m]
                assert left == sorted(left, reverse=True) and moved == sorted(moved)
                assert {int(m[3]) for m in progress if m} == {on_b1}
                assert any(m[5] != "-" and float(m[4]) > 0 for m in progress if m)
                assert re.fullmatch(rf"b1: empty, left the pool after \d+\.\ds "
                                    rf"\(had {on_b1} pipe\(s\)\)", lines[-1]), lines[-1]
                assert (await http.get("/backends/b1")).status_code == 404
                pipes = (await http.get("/pipes")).json()
                assert len(pipes) == 20 and {p["backend_id"] for p in pipes} == {"b2"}
                numbers = await finish(clients, recorder)
                result = check(clients, recorder)  # every message once, in order
                assert numbers["received"] == numbers["sent"] > 0
                assert result["lost"] == 0
        finally:
            for client in clients:
                await anyio.to_thread.run_sync(client.close)
            code, err = await anyio.to_thread.run_sync(stop, proc)
        assert code == 0, err[-2000:]


async def test_drain_wait_times_out_with_status_3_while_pipes_stay(anyio_backend: str) -> None:
    recorder = Recorder()
    admin = f"127.0.0.1:{free_port()}"
    port = free_port()
    with anyio.fail_after(60), stopping([EchoBackend(recorder).start()]) as (b1,):
        proc = serve(admin, port, [b1.url], anyio_backend)
        client = StreamingClient(0, f"ws://127.0.0.1:{port}/00000000-0000-4000-8000-"
                                    "000000000000")
        try:
            await anyio.to_thread.run_sync(wait_healthy, f"http://{admin}", proc)
            await anyio.to_thread.run_sync(client.start)
            # Without --migrate the pipe stays until its client goes: the wait times out.
            done = await wspipe("backends", "drain", "b1", "--wait", "--wait-timeout", "1",
                                "--progress-interval", "0.3", admin=admin)
            assert done.returncode == 3
            lines = done.stdout.splitlines()
            assert lines[0] == ("backend b1 draining: no new pipes; it leaves the pool when "
                                "its 1 pipe(s) end")
            assert lines[1] == ("b1: 1 pipe(s) left (draining; no new pipes, waiting for them "
                                "to end)")
            assert done.stderr == ("wspipe: error: backend b1 still has 1 pipe(s) after 1s; "
                                   "the drain goes on\n")
            gone = await wspipe("backends", "drain", "nope", "--wait", admin=admin)
            assert gone.returncode == 1 and "HTTP 404" in gone.stderr
        finally:
            await anyio.to_thread.run_sync(client.close)
            code, err = await anyio.to_thread.run_sync(stop, proc)
        assert code == 0, err[-2000:]

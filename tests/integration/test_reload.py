"""Reload over the wire, on asyncio and trio: ``wspipe serve`` in a subprocess re-reads its
config file on ``POST /reload`` and on SIGHUP while clients stream. A backend is added,
one removed (drained with migrate), the admin token rotated (from its file); a
restart-only key is reported and left; 0 clients dropped, 0 messages lost. A file that
fails to parse changes nothing: logged, and ``/reload`` answers 422."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import httpx
import pytest
from peers import free_port
from test_process import ServeProcess
from test_rolling import EchoBackend, Recorder, StreamingClient, check, finish, stopping, streaming

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]

JSON = {"Content-Type": "application/json"}


def write_config(path: Path, backends: list[EchoBackend], admin_port: int, token_file: Path,
                 **extra: object) -> None:
    lines = [f"backends = [{', '.join(repr(b.url) for b in backends)}]",
             f'admin = "127.0.0.1:{admin_port}"', f'admin_token_file = "{token_file}"',
             "ping_interval = 0", "migrate_rate = 200", "max_interruption = 10",
             "close_timeout = 2", "backoff_base = 0.02", "backoff_max = 0.2",
             'log_level = "info"']
    lines += [f"{key} = {value!r}" for key, value in extra.items()]
    path.write_text("\n".join(lines) + "\n")


def wspipe_reload(admin_port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wspipe_anyio", "reload", "--admin", f"127.0.0.1:{admin_port}"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT), "WSPIPE_ADMIN_TOKEN": "token"},
        capture_output=True, text=True, timeout=20)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def backend_urls(http: httpx.AsyncClient, token: str) -> set[str]:
    r = await http.get("/backends", headers=bearer(token))
    assert r.status_code == 200, r.text
    return {b["url"] for b in r.json()}


async def wait_urls(http: httpx.AsyncClient, token: str, urls: set[str]) -> None:
    with anyio.fail_after(10):
        while await backend_urls(http, token) != urls:
            await anyio.sleep(0.05)


async def test_reload_adds_removes_with_migration_and_rotates_the_token_losing_nothing(
        anyio_backend: str, tmp_path: Path) -> None:
    recorder = Recorder()
    fleet = [EchoBackend(recorder).start() for _ in range(3)]
    config, token_file, admin_port = tmp_path / "wspipe.toml", tmp_path / "token", free_port()
    token_file.write_text("old-token\n")
    with anyio.fail_after(60), stopping(fleet) as (b1, b2, b3):
        write_config(config, [b1, b2], admin_port, token_file)
        serve = ServeProcess("--config", str(config), "--async-lib", anyio_backend)
        try:
            port = await serve.wait_ready()
            clients = [StreamingClient(i, f"ws://127.0.0.1:{port}/{uuid.uuid4()}")
                       for i in range(10)]
            async with anyio.create_task_group() as tg:
                for client in clients:
                    tg.start_soon(anyio.to_thread.run_sync, client.start)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}",
                                         timeout=5.0) as http, streaming(clients):
                await anyio.sleep(0.4)  # streaming through b1 and b2
                pipes = (await http.get("/pipes", headers=bearer("old-token"))).json()
                assert len(pipes) == 10 and {p["backend_id"] for p in pipes} == {"b1", "b2"}
                write_config(config, [b2, b3], admin_port, token_file, max_connections=500,
                             buffer_limit="8MiB")
                token_file.write_text("new-token\n")
                r = await http.post("/reload", headers={**bearer("old-token"), **JSON})
                assert r.status_code == 200, r.text
                report = r.json()
                assert report["backends_added"] == [b3.url]
                assert report["backends_removed"] == [b1.url]
                assert {"backends", "max_connections", "admin_token"} <= set(report["applied"])
                assert report["restart_required"] == [
                    "buffer_limit: 5242880 -> 8388608 needs a restart; still 5242880"]
                refused = await http.get("/backends", headers=bearer("old-token"))
                assert refused.status_code == 403
                await wait_urls(http, "new-token", {b2.url, b3.url})  # b1 drained, gone
                pipes = (await http.get("/pipes", headers=bearer("new-token"))).json()
                assert len(pipes) == 10 and "b1" not in {p["backend_id"] for p in pipes}
                await anyio.sleep(0.3)  # streaming on after the reload
                numbers = await finish(clients, recorder)
                result = check(clients, recorder)  # 0 disconnects, 0 lost, 0 duplicated
            assert any("reload: buffer_limit: 5242880 -> 8388608 needs a restart" in line
                       for line in serve.lines), "\n".join(serve.lines)
            serve.proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(serve.proc.wait, 10) == 0
        finally:
            serve.stop()
    print(f"\nreload: {numbers['sent']} messages from {result['clients']} clients across a "
          f"reload (b3 added, b1 drained with migrate, token rotated): "
          f"{numbers['received']} received, 0 lost, 0 duplicated, 0 disconnects")


async def test_sighup_reloads_and_a_broken_file_changes_nothing(
        anyio_backend: str, tmp_path: Path) -> None:
    recorder = Recorder()
    fleet = [EchoBackend(recorder).start() for _ in range(2)]
    config, token_file, admin_port = tmp_path / "wspipe.toml", tmp_path / "token", free_port()
    token_file.write_text("token\n")
    with anyio.fail_after(40), stopping(fleet) as (b1, b2):
        write_config(config, [b1], admin_port, token_file)
        serve = ServeProcess("--config", str(config), "--async-lib", anyio_backend)
        try:
            port = await serve.wait_ready()
            client = StreamingClient(0, f"ws://127.0.0.1:{port}/{uuid.uuid4()}")
            await anyio.to_thread.run_sync(client.start)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{admin_port}",
                                         headers=bearer("token"), timeout=5.0) as http, \
                    streaming([client]):
                config.write_text("backends = [\n")  # a half-written file
                serve.proc.send_signal(signal.SIGHUP)
                with anyio.fail_after(5):
                    while not any("reload failed, nothing changed" in line
                                  for line in serve.lines):
                        await anyio.sleep(0.02)
                assert serve.proc.poll() is None  # SIGHUP never stops the proxy
                r = await http.post("/reload", headers=JSON)
                assert r.status_code == 422, r.text
                assert "invalid config file" in r.json()["detail"]
                result = await anyio.to_thread.run_sync(lambda: wspipe_reload(admin_port))
                assert result.returncode == 1  # the admin CLI's `wspipe reload`
                assert "HTTP 422: reload failed, nothing changed" in result.stderr
                assert await backend_urls(http, "token") == {b1.url}
                write_config(config, [b1, b2], admin_port, token_file)
                serve.proc.send_signal(signal.SIGHUP)
                await wait_urls(http, "token", {b1.url, b2.url})
                result = await anyio.to_thread.run_sync(lambda: wspipe_reload(admin_port))
                assert result.returncode == 0, result.stderr
                assert result.stdout == "applied: nothing\n"  # the file is as it was
                r = await http.post("/reload", headers={"Content-Type": "text/plain"})
                assert r.status_code == 415  # the rules of every other POST
                r = await http.post("/reload", headers={**JSON, "Authorization": "Bearer x"})
                assert r.status_code == 403
                metrics = (await http.get("/metrics")).text
                assert 'wspipe_reloads_total{result="failed"} 3.0' in metrics  # SIGHUP, POSTs
                assert 'wspipe_reloads_total{result="applied"} 2.0' in metrics
                await anyio.sleep(0.2)
                await finish([client], recorder)
                check([client], recorder)
            serve.proc.send_signal(signal.SIGTERM)
            assert await anyio.to_thread.run_sync(serve.proc.wait, 10) == 0
        finally:
            serve.stop()

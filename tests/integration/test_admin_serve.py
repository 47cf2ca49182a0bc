"""``wspipe serve --admin`` and the admin commands, end to end, as separate processes."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_rolling import EchoBackend, Recorder, stopping
from websockets.sync.client import connect

TOKEN = "serve-token-do-not-log"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wspipe(*args: str, env: dict[str, str] | None = None,
           timeout: float = 15) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wspipe_anyio", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})},
                          check=False)


def wait_healthy(url: str, proc: subprocess.Popen[str], timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "wspipe serve exited early"
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError("admin API not up")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate(timeout=5)
    return proc.returncode, err


@pytest.fixture
def backend_pair() -> Iterator[tuple[EchoBackend, EchoBackend]]:
    recorder = Recorder()
    with stopping([EchoBackend(recorder).start(), EchoBackend(recorder).start()]) as pair:
        yield pair[0], pair[1]


def test_serve_with_admin_and_the_admin_commands(
        backend_pair: tuple[EchoBackend, EchoBackend]) -> None:
    b1, b2 = backend_pair
    port, admin_port = free_port(), free_port()
    admin = f"127.0.0.1:{admin_port}"
    env = {"WSPIPE_ADMIN_TOKEN": TOKEN, "WSPIPE_ADMIN": admin}
    proc = subprocess.Popen(
        [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}",
         "--backend", b1.url, "--admin", admin, "--migrate-rate", "20", "--log-format",
         "json", "--log-level", "debug", "--ping-interval", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
        env={**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN})
    try:
        wait_healthy(f"http://{admin}", proc)
        r = httpx.get(f"http://{admin}/backends", timeout=5)
        assert r.status_code == 401
        ws = connect(f"ws://127.0.0.1:{port}/{uuid.uuid4()}", open_timeout=5, proxy=None,
                     ping_interval=None, legacy=True)
        ws.send("1:0")
        assert ws.recv(timeout=5) == "1:0"

        listed = wspipe("backends", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[1].split()[:4] == ["b1", b1.url, "up", "1"]
        added = wspipe("backends", "add", b2.url, "--weight", "2", env=env)
        assert (added.returncode, added.stdout.strip()) == (
            0, f"backend b2 registered: {b2.url} (weight 2)")
        drained = wspipe("backends", "drain", "b1", "--migrate", env=env)
        assert drained.returncode == 0, drained.stderr
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            pipes = json.loads(wspipe("pipes", "list", "--json", env=env).stdout)
            if pipes and pipes[0]["backend_id"] == "b2" and pipes[0]["state"] == "linked":
                break
            time.sleep(0.05)
        assert pipes[0]["backend_id"] == "b2"
        ws.send("1:1")
        assert ws.recv(timeout=5) == "1:1"  # the client never noticed
        wrong = wspipe("backends", "list", env={**env, "WSPIPE_ADMIN_TOKEN": "nope"})
        assert (wrong.returncode, wrong.stderr) == (
            1, "wspipe: error: GET /backends: HTTP 403: invalid token\n")
        metrics = httpx.get(f"http://{admin}/metrics", timeout=5,
                            headers={"Authorization": f"Bearer {TOKEN}"}).text
        assert 'wspipe_failovers_total{reason="migrate"} 1.0' in metrics
        ws.close()
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(line.get("pipe") == "p1" and line.get("backend") == "b1" for line in lines)
    assert TOKEN not in err


def test_serve_refuses_a_public_admin_address_without_a_token() -> None:
    env = {"WSPIPE_ADMIN_TOKEN": ""}
    result = wspipe("serve", "--admin", "0.0.0.0:9", "--backend", "ws://127.0.0.1:9/",
                    env=env)
    assert result.returncode == 2
    assert "without a token" in result.stderr


def test_serve_without_a_token_generates_one_that_the_admin_commands_find(
        tmp_path: Path, backend_pair: tuple[EchoBackend, EchoBackend]) -> None:
    b1, _ = backend_pair
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    admin_port = free_port()
    admin = f"127.0.0.1:{admin_port}"
    env = {k: v for k, v in os.environ.items() if k not in ("WSPIPE_ADMIN_TOKEN",
                                                            "WSPIPE_ADMIN")}
    env["XDG_RUNTIME_DIR"] = str(runtime)
    proc = subprocess.Popen(
        [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{free_port()}",
         "--backend", b1.url, "--admin", admin, "--admin-allow-host", "admin.internal",
         "--ping-interval", "0"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    token_file = runtime / "wspipe" / f"admin-{admin_port}.token"
    try:
        wait_healthy(f"http://{admin}", proc)
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        token = token_file.read_text().strip()
        assert httpx.get(f"http://{admin}/backends", timeout=5).status_code == 401
        headers = {"Authorization": f"Bearer {token}"}
        r = httpx.get(f"http://{admin}/backends", timeout=5,
                      headers={**headers, "Host": "admin.internal"})
        assert r.status_code == 200  # --admin-allow-host
        r = httpx.get(f"http://{admin}/backends", timeout=5,
                      headers={**headers, "Host": "evil.example"})
        assert r.status_code == 421
        listed = subprocess.run(
            [sys.executable, "-m", "wspipe_anyio", "backends", "list", "--admin", admin],
            capture_output=True, text=True, timeout=15, env=env, check=False)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.splitlines()[1].split()[:3] == ["b1", b1.url, "up"]
        elsewhere = subprocess.run(  # another user's (or a missing) token directory
            [sys.executable, "-m", "wspipe_anyio", "backends", "list", "--admin", admin],
            capture_output=True, text=True, timeout=15, check=False,
            env={**env, "XDG_RUNTIME_DIR": "", "HOME": str(tmp_path / "nobody")})
        assert elsewhere.returncode == 1
        assert "HTTP 401" in elsewhere.stderr and "no generated token file" in elsewhere.stderr
    finally:
        code, err = stop(proc)
    assert code == 0, err[-2000:]
    assert str(token_file) in err  # the log says where the token is...
    assert token not in err  # ...never what it is
    assert not token_file.exists()

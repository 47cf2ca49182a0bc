"""The real command: ``python -m wspipe_anyio serve`` in a subprocess, stopped by SIGTERM."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import pytest
from peers import Backend, Client, client_path, running_backends

pytestmark = pytest.mark.anyio
ROOT = Path(__file__).resolve().parents[2]


class ServeProcess:
    """``wspipe serve`` with its stderr collected line by line."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", "127.0.0.1:0", *args],
            cwd=ROOT, env=env, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    async def wait_ready(self, timeout: float = 10.0) -> int:
        """Wait for the "ready" line; return the bound port."""
        with anyio.fail_after(timeout):
            while not any(line.endswith(": ready") for line in self.lines):
                assert self.proc.poll() is None, "\n".join(self.lines)
                await anyio.sleep(0.02)
        for line in self.lines:
            if match := re.search(r"listening on ws://127\.0\.0\.1:(\d+)", line):
                return int(match.group(1))
        raise AssertionError("no listening line:\n" + "\n".join(self.lines))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._reader.join(5)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_signal_closes_clients_with_1001_and_exits_0(anyio_backend: str,
                                                          signum: signal.Signals) -> None:
    async with running_backends(Backend(), timeout=20) as (backend,):
        serve = ServeProcess("--backend", backend.url, "--async-lib", anyio_backend,
                             "--ping-interval", "0", "--shutdown-grace", "5")
        try:
            port = await serve.wait_ready()
            clients = [await Client.connect(f"ws://127.0.0.1:{port}{client_path()}")
                       for _ in range(2)]
            for number, client in enumerate(clients):
                await client.send(f"hi {number}")
                assert await client.recv() == f"hi {number}"
            serve.proc.send_signal(signum)
            for client in clients:
                code, _ = await client.wait_closed()
                assert code == 1001
            returncode = await anyio.to_thread.run_sync(serve.proc.wait, 10)
            assert returncode == 0, "\n".join(serve.lines)
        finally:
            serve.stop()


def test_listen_address_in_use_exits_1_with_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=20)
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("wspipe: ") and "address" in last.lower(), result.stderr

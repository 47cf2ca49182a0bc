"""Helpers of the fleet tests: a real ``redis-server`` and ``wspipe serve`` instances.

Nothing is mocked: each test starts its own Redis on a free loopback port (no
persistence: ``--save '' --appendonly no``), kills it with SIGKILL and starts it again
on the same port for the fault tests, and runs two or three ``python -m wspipe_anyio
serve --store ...`` processes with their admin API.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from test_admin_serve import free_port, wait_healthy

TOKEN = "fleet-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class RedisServer:
    """A ``redis-server`` process on 127.0.0.1 that the test owns."""

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __init__(self, password: str | None = None, extra: Sequence[str] = ()) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.password = password
        self.extra = list(extra)

    def start(self, timeout: float = 10) -> RedisServer:
        auth = ["--requirepass", self.password, "--masterauth", self.password
                ] if self.password else []
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes", *auth, *self.extra],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "redis-server exited"
            with contextlib.suppress(OSError):
                if self.command("PING") == b"+PONG":
                    return self
            time.sleep(0.02)
        raise TimeoutError("redis-server did not answer")

    def command(self, *words: str) -> bytes:
        """Send one command (RESP) and return the first line of the answer."""
        payload = f"*{len(words)}\r\n" + "".join(f"${len(w.encode())}\r\n{w}\r\n"
                                                  for w in words)
        if self.password:
            auth = f"*2\r\n$4\r\nAUTH\r\n${len(self.password)}\r\n{self.password}\r\n"
            payload = auth + payload
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(payload.encode())
            data = b""
            if self.password:  # skip the +OK of AUTH
                while not data.startswith(b"+OK\r\n") or len(data) < 5:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                    if data.startswith(b"-"):
                        return data.split(b"\r\n", 1)[0]
                data = data[5:]
            while b"\r\n" not in data:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
            if data.startswith(b"$") and not data.startswith(b"$-1"):
                size = int(data[1:data.index(b"\r\n")])
                while len(data) < data.index(b"\r\n") + 2 + size:
                    data += sock.recv(65536)
                start = data.index(b"\r\n") + 2
                return data[start:start + size]
            return data.split(b"\r\n", 1)[0]

    def pause(self) -> None:
        """SIGSTOP: the store is reachable but answers nothing (a black hole)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL (no goodbye), and wait for it."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(5)
            self.proc = None


@contextlib.contextmanager
def redis_server(password: str | None = None) -> Iterator[RedisServer]:
    server = RedisServer(password).start()
    try:
        yield server
    finally:
        server.kill()


class SentinelGroup:
    """Redis HA on loopback: a primary, its replica and one ``redis-sentinel``, each a
    process the test owns. The Sentinel calls the primary down after 1 s without an
    answer and then promotes the replica (quorum 1)."""

    SERVICE = "wspipe-test"

    def __init__(self, tmp: str, password: str | None = None) -> None:
        # (--dir: a replica's full sync writes dump.rdb there)
        self.primary = RedisServer(password, ["--dir", tmp])
        self.replica = RedisServer(password, ["--dir", tmp, "--replicaof", "127.0.0.1",
                                              str(self.primary.port)])
        self.sentinel_port = free_port()
        self.config = os.path.join(tmp, f"sentinel-{self.sentinel_port}.conf")
        self.password = password
        self.sentinel: subprocess.Popen[bytes] | None = None

    def url(self, sentinels: Sequence[int] = ()) -> str:
        """The ``redis+sentinel://`` URL (``sentinels``: ports listed before ours)."""
        hosts = ",".join(f"127.0.0.1:{p}" for p in (*sentinels, self.sentinel_port))
        return f"redis+sentinel://{hosts}/{self.SERVICE}/0"

    def primary_port(self) -> int:
        """The primary's port as the Sentinel reports it."""
        payload = ("*3\r\n$8\r\nSENTINEL\r\n$23\r\nget-master-addr-by-name\r\n"
                   f"${len(self.SERVICE)}\r\n{self.SERVICE}\r\n")
        with socket.create_connection(("127.0.0.1", self.sentinel_port), timeout=2) as sock:
            sock.sendall(payload.encode())
            data = b""
            while data.count(b"\r\n") < 5:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return int(data.split(b"\r\n")[4])

    def start(self, timeout: float = 20) -> SentinelGroup:
        self.primary.start()
        self.replica.start()
        lines = [f"port {self.sentinel_port}", "bind 127.0.0.1", "protected-mode no",
                 f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1",
                 f"sentinel down-after-milliseconds {self.SERVICE} 1000",
                 f"sentinel failover-timeout {self.SERVICE} 10000"]
        if self.password:
            lines.append(f"sentinel auth-pass {self.SERVICE} {self.password}")
        with open(self.config, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        self.sentinel = subprocess.Popen(["redis-sentinel", self.config],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:  # the Sentinel knows the replica, which is in sync
            assert self.sentinel.poll() is None, "redis-sentinel exited"
            with contextlib.suppress(OSError, ValueError, IndexError):
                if (b"master_link_status:up" in self.replica.command("INFO", "replication")
                        and b"slaves=1" in self._sentinel_info()):
                    return self
            time.sleep(0.1)
        raise TimeoutError("the Sentinel did not see the replica in sync")

    def _sentinel_info(self) -> bytes:
        with socket.create_connection(("127.0.0.1", self.sentinel_port), timeout=2) as sock:
            sock.sendall(b"*2\r\n$4\r\nINFO\r\n$8\r\nsentinel\r\n")
            data = b""
            while b"master0:" not in data or not data.endswith(b"\r\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data

    def stop(self) -> None:
        if self.sentinel is not None:
            self.sentinel.kill()
            self.sentinel.wait(5)
            self.sentinel = None
        self.replica.kill()
        self.primary.kill()


@dataclass
class Instance:
    """One ``wspipe serve --store`` process with its admin API."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    admin: str
    log: list[str] = field(default_factory=list)

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def http(self) -> httpx.Client:
        return httpx.Client(base_url=self.admin, headers=AUTH, timeout=5)

    def get(self, path: str) -> Any:
        with self.http() as http:
            answer = http.get(path)
            answer.raise_for_status()
            return answer.json()


def start_instance(name: str, store: str, async_lib: str, *, backends: Sequence[str] = (),
                   args: Sequence[str] = (), env: dict[str, str] | None = None) -> Instance:
    port, admin_port = free_port(), free_port()
    cmd = [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"127.0.0.1:{port}",
           "--admin", f"127.0.0.1:{admin_port}", "--store", store, "--instance-id", name,
           "--lease-ttl", "3", "--ping-interval", "0", "--async-lib", async_lib,
           "--log-level", "info", "--shutdown-grace", "3", *args]
    for backend in backends:
        cmd += ["--backend", backend]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN, **(env or {})})
    instance = Instance(name, proc, port, f"http://127.0.0.1:{admin_port}")
    wait_healthy(instance.admin, proc, timeout=20)
    return instance


def stop_instance(instance: Instance) -> tuple[int, str]:
    if instance.proc.poll() is None:
        instance.proc.send_signal(signal.SIGTERM)
    try:
        _, err = instance.proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        instance.proc.kill()
        _, err = instance.proc.communicate(timeout=5)
    return instance.proc.returncode, err


def wait_for(condition: Any, timeout: float, what: str, step: float = 0.05) -> Any:
    """Poll ``condition()`` until it is truthy (bounded by ``timeout``); return it."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            last = condition()
            if last:
                return last
        time.sleep(step)
    raise TimeoutError(f"{what} (last: {last!r})")


@contextlib.contextmanager
def sentinel_group(tmp: str, password: str | None = None) -> Iterator[SentinelGroup]:
    group = SentinelGroup(tmp, password)
    try:
        yield group.start()
    finally:
        group.stop()

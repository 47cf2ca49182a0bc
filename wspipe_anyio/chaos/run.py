"""The chaos run: a proxy, managed echo backends, clients, seeded faults, the table.

Everything listens on 127.0.0.1. The proxy (the user's configuration, with chaos's
own backends, listen and admin addresses) and each backend are subprocesses, so a
SIGKILL or SIGSTOP is the kernel's. The clients run here, each sending numbered text
and binary messages of mixed sizes at ``rate`` per second; what the backends'
applications processed is read back from their record files (or the ledger, for
``acked``) and counted by :mod:`.report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import secrets
import signal
import socket
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

import anyio
from anyio.abc import Process, SocketStream, TaskGroup
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from ..admin_cli import AdminError, request
from .ledger import Ledger
from .report import FAULT_KINDS, Counts, Fault, Record, broken_promises, count

#: Bounds of the flags (a chaos run must stay a test, not a load attack).
MAX_CLIENTS = 1000
MAX_BACKENDS = 32
MAX_DURATION = 600.0
MAX_RATE = 50.0
MAX_TOTAL_RATE = 10_000.0
#: Message sizes a client picks from (bytes, weight): mostly small, some large.
SIZES = ((16, 40), (64, 20), (200, 15), (1024, 10), (4096, 8), (16384, 5), (65536, 2))
#: Seconds a killed backend stays down before it is started again.
RESTART_DELAY = 0.3
#: Longest wait for a process to start, a drain to end, the last messages to arrive.
START_TIMEOUT = 20.0
DRAIN_TIMEOUT = 60.0
QUIET_TIMEOUT = 3.0
SETTLE_TIMEOUT = 30.0
#: Admin API calls: timeout of each attempt, attempts.
API_TIMEOUT = 20.0
API_ATTEMPTS = 3
#: Client upgrades in progress at once.
CONNECT_CONCURRENCY = 16
#: Backends left alone by faults, at least.
MIN_HEALTHY = 2
EXIT_BROKEN = 1
EXIT_INTERRUPTED = 130
#: The run itself failed (a process would not start, the admin API did not answer).
EXIT_FAILED = 3


def _first_error(exc: BaseException) -> BaseException:
    """The first leaf of nested exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


class ChaosUsageError(Exception):
    """A chaos flag is out of bounds or cannot be honoured."""


@dataclasses.dataclass(frozen=True)
class ChaosOptions:
    """What to run: how many of everything, how long, which faults, which seed."""

    clients: int = 20
    backends: int = 4
    duration: float = 30.0
    rate: float = 5.0
    faults_per_kind: int = 5
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 1
    progress_interval: float = 2.0
    #: Keep the run's directory (logs, record files, faults.json) and say where.
    keep: bool = False

    def check(self) -> None:
        """:raises ChaosUsageError: A value out of bounds."""
        if not 1 <= self.clients <= MAX_CLIENTS:
            raise ChaosUsageError(f"--clients must be 1..{MAX_CLIENTS}")
        if not MIN_HEALTHY + 1 <= self.backends <= MAX_BACKENDS:
            raise ChaosUsageError(f"--echo-backends must be {MIN_HEALTHY + 1}..{MAX_BACKENDS}")
        if not 1 <= self.duration <= MAX_DURATION:
            raise ChaosUsageError(f"--duration must be 1..{MAX_DURATION:g} seconds")
        if not 0 < self.rate <= MAX_RATE or self.rate * self.clients > MAX_TOTAL_RATE:
            raise ChaosUsageError(f"--rate must be > 0 and <= {MAX_RATE:g} per client, "
                                  f"{MAX_TOTAL_RATE:g} in all")
        if not 0 <= self.faults_per_kind <= 10_000:
            raise ChaosUsageError("--faults-per-kind must be 0..10000")
        unknown = set(self.kinds) - set(FAULT_KINDS)
        if unknown or not self.kinds:
            raise ChaosUsageError(f"--faults takes {', '.join(FAULT_KINDS)}")


def to_toml(settings: dict[str, Any]) -> str:
    """Merged settings as the config file ``wspipe serve --config`` reads back."""
    lines = [f"{key} = {_toml_value(value)}" for key, value in settings.items()
             if value is not None and key != "plugin_settings"]
    for name, table in (settings.get("plugin_settings") or {}).items():
        lines.append(f"[plugins.{json.dumps(name)}]")
        lines += [f"{json.dumps(k)} = {_toml_value(v)}" for k, v in table.items()
                  if v is not None]
    return "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value in (float("inf"), float("-inf")):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, int | float | str):
        return json.dumps(value)  # JSON numbers and strings are TOML ones
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml_value(v)}"
                               for k, v in value.items()) + "}"
    if isinstance(value, list | tuple | set | frozenset):
        items = sorted(value) if isinstance(value, set | frozenset) else value
        return "[" + ", ".join(_toml_value(v) for v in items) + "]"
    raise ChaosUsageError(f"cannot pass {value!r} to the proxy")


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclasses.dataclass
class Backend:
    """A managed echo backend: its port, its process, its record files."""

    id: str
    port: int
    proc: Process | None = None
    generation: int = 0
    busy: bool = False
    registered: bool = True

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


class Client:
    """One chaos client: a wsproto WebSocket sending numbered messages."""

    def __init__(self, index: int, port: int, rng: random.Random, rate: float) -> None:
        self.index = index
        self.port = port
        self.rng = rng
        self.rate = rate
        self.sent: list[tuple[int, float]] = []
        self.echoes = 0
        self.disconnected: float | None = None
        #: How the connection ended, when it did before the run.
        self.why = ""
        self.ending = False
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.stream: SocketStream | None = None
        self.lock = anyio.Lock()

    async def connect(self) -> None:
        """Open the WebSocket through the proxy."""
        self.stream = await anyio.connect_tcp("127.0.0.1", self.port)
        await self.stream.send(self.ws.send(Request(host=f"127.0.0.1:{self.port}",
                                                    target=f"/{uuid.uuid4()}")))
        while True:
            self.ws.receive_data(await self.stream.receive())
            for event in self.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise ChaosUsageError(f"the proxy refused a client: {event.status_code}")

    async def _send(self, data: bytes) -> None:
        assert self.stream is not None
        async with self.lock:
            await self.stream.send(data)

    async def read(self) -> None:
        """Answer pings, count echoes, notice the end."""
        assert self.stream is not None
        try:
            while True:
                data = await self.stream.receive()
                self.ws.receive_data(data)
                for event in self.ws.events():
                    if isinstance(event, TextMessage | BytesMessage):
                        self.echoes += event.message_finished
                    elif isinstance(event, Ping):
                        if self.ws.state is ConnectionState.OPEN:  # not once we closed
                            await self._send(self.ws.send(event.response()))
                    elif isinstance(event, CloseConnection):
                        self._lost(f"close {event.code} {event.reason or ''}".strip())
                        if self.ws.state is ConnectionState.REMOTE_CLOSING:
                            await self._send(self.ws.send(event.response()))
                        return
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self._lost(type(exc).__name__)

    def _lost(self, why: str) -> None:
        if not self.ending and self.disconnected is None:
            self.disconnected = time.monotonic()
            self.why = why

    def message(self, n: int) -> TextMessage | BytesMessage:
        """Message ``n``: ``"<client> <n> "`` then filler; text or binary, mixed sizes."""
        size = self.rng.choices([s for s, _ in SIZES], [w for _, w in SIZES])[0]
        head = f"{self.index} {n} "
        body = head + "x" * max(0, size - len(head))
        if self.rng.random() < 0.5:
            return TextMessage(data=body)
        return BytesMessage(data=body.encode())

    async def write(self, stop: anyio.Event) -> None:
        """Send numbered messages at ``rate`` (jittered) until ``stop``."""
        n = 1
        interval = 1.0 / self.rate
        await anyio.sleep(self.rng.random() * interval)
        while not stop.is_set() and self.disconnected is None:
            when = time.monotonic()
            try:
                await self._send(self.ws.send(self.message(n)))
            except (anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                self._lost(f"send failed: {type(exc).__name__}")
                return
            self.sent.append((n, when))
            n += 1
            await anyio.sleep(interval * (0.5 + self.rng.random()))

    async def close(self) -> None:
        """End the session with 1000 (not a disconnect)."""
        self.ending = True
        if self.stream is None:
            return
        try:
            if self.ws.state is ConnectionState.OPEN:
                await self._send(self.ws.send(CloseConnection(code=1000)))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass
        await self.stream.aclose()


class RecordFiles:
    """Reads the wsproto backends' record files as they grow."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.records: list[Record] = []
        self._offsets: dict[Path, int] = {}
        self._lines: dict[Path, int] = {}

    def poll(self) -> None:
        for path in sorted(self.directory.glob("*.rec")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as file:
                file.seek(offset)
                data = file.read()
            end = data.rfind(b"\n") + 1
            if not end:
                continue
            self._offsets[path] = offset + end
            backend = path.name.split(".")[0]
            position = self._lines.get(path, 0)
            for line in data[:end].splitlines():
                client, n, link, when = line.split()
                self.records.append(Record(int(client), int(n), backend, int(link),
                                           position, float(when)))
                position += 1
            self._lines[path] = position


class Run:
    """One chaos run (see the module docstring)."""

    def __init__(self, options: ChaosOptions, proxy_settings: dict[str, Any], work: Path,
                 out: TextIO, err: TextIO) -> None:
        self.options = options
        self.settings = proxy_settings
        self.work = work
        self.out = out
        self.err = err
        self.delivery = str(proxy_settings.get("delivery", "at-most-once"))
        self.acked = self.delivery == "acked"
        self.rng = random.Random(options.seed)
        self.token = secrets.token_urlsafe(24)
        self.admin_port = free_port()
        self.proxy_port = free_port()
        self.admin = f"http://127.0.0.1:{self.admin_port}"
        self.backends: list[Backend] = []
        self.ledger = Ledger()
        self.ledger_port = 0
        self.files = RecordFiles(work)
        self.faults: list[Fault] = []
        self.started: dict[str, int] = {kind: 0 for kind in FAULT_KINDS}
        self.clients: list[Client] = []
        self.proxy: Process | None = None
        self._next_backend = 0
        #: Faults in progress, and faults whose end did not complete.
        self.in_flight = 0
        self.incomplete = 0
        #: The longest the clients' event loop was late (a starved chaos process).
        self.lag = 0.0
        hold = float(proxy_settings["ping_interval"]) + float(proxy_settings["ping_timeout"])
        #: How long a black hole lasts: beyond the proxy's ping timeout.
        self.blackhole = hold + 0.5

    # -- processes

    def _log(self, name: str) -> Any:
        return (self.work / name).open("ab")

    async def start_backend(self, backend: Backend) -> None:
        backend.generation += 1
        argv = [sys.executable, "-m", "wspipe_anyio.chaos.backend", "--port",
                str(backend.port), "--id", backend.id,
                "--record", str(self.work / f"{backend.id}.{backend.generation}.rec")]
        if self.acked:
            argv += ["--ledger", f"127.0.0.1:{self.ledger_port}"]
        with self._log(f"{backend.id}.err") as err:
            proc = await anyio.open_process(argv, stdin=None, stderr=err)
        backend.proc = proc
        await self._wait_line(proc, b"READY", f"backend {backend.id}")

    async def _wait_line(self, proc: Process, word: bytes, what: str) -> None:
        assert proc.stdout is not None
        seen = b""
        with anyio.fail_after(START_TIMEOUT):
            while word not in seen:
                try:
                    seen += await proc.stdout.receive()
                except anyio.EndOfStream:
                    raise ChaosUsageError(f"{what} did not start (see {self.work})") from None

    def new_backend(self) -> Backend:
        self._next_backend += 1
        backend = Backend(f"e{self._next_backend}", free_port())
        self.backends.append(backend)
        return backend

    async def start_proxy(self) -> None:
        settings = {**self.settings, "listen": [f"127.0.0.1:{self.proxy_port}"],
                    "backends": [b.url for b in self.backends],
                    "admin": f"127.0.0.1:{self.admin_port}", "admin_token": self.token}
        path = self.work / "proxy.toml"
        path.write_text(to_toml(settings))
        path.chmod(0o600)  # it holds the admin token
        # The settings are merged already (flags, $WSPIPE_*, file): the file is all.
        env = {k: v for k, v in os.environ.items() if not k.startswith("WSPIPE_")}
        with self._log("proxy.log") as err:
            self.proxy = await anyio.open_process(
                [sys.executable, "-m", "wspipe_anyio", "serve", "--config", str(path)],
                stdin=None, stdout=None, stderr=err, env=env)
        with anyio.fail_after(START_TIMEOUT):
            while True:
                try:
                    if len(await self.api("GET", "/backends", attempts=1)) == len(
                            self.backends):
                        return
                except AdminError:
                    pass
                if self.proxy.returncode is not None:
                    raise ChaosUsageError(f"the proxy did not start: see {self.work}/proxy.log")
                await anyio.sleep(0.1)

    async def api(self, method: str, path: str, body: Any = None, *,
                  attempts: int = API_ATTEMPTS) -> Any:
        """One admin API call; a call that got no answer (a loaded machine) is retried,
        ``attempts`` in all (chaos's calls are safe to repeat: the result is checked)."""
        def call() -> Any:
            return request(self.admin, method, path, token=self.token, body=body,
                           timeout=API_TIMEOUT)

        for attempt in range(attempts):
            try:
                return await anyio.to_thread.run_sync(call)
            except AdminError as exc:
                if " HTTP " in str(exc) or attempt == attempts - 1:
                    raise  # an answer, or the last attempt
                print(f"chaos: admin API: {exc}; again", file=self.err, flush=True)
        raise AssertionError("unreachable")

    async def metric(self, name: str) -> float | None:
        """A metric of the proxy's, summed over its labels."""
        from prometheus_client.parser import text_string_to_metric_families

        def fetch() -> str:
            req = urllib.request.Request(self.admin + "/metrics")
            req.add_header("Authorization", f"Bearer {self.token}")
            with urllib.request.urlopen(req, timeout=10) as response:
                text: str = response.read().decode()
                return text

        try:
            text = await anyio.to_thread.run_sync(fetch)
        except OSError:
            return None
        return sum(sample.value for family in text_string_to_metric_families(text)
                   for sample in family.samples if sample.name == name)

    @staticmethod
    async def stop_process(proc: Process | None, sig: signal.Signals = signal.SIGTERM,
                           timeout: float = 10.0) -> None:
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        with anyio.move_on_after(timeout):
            await proc.wait()
            return
        proc.kill()
        await proc.wait()

    # -- faults

    def _candidates(self) -> list[Backend]:
        return [b for b in self.backends if b.registered and not b.busy]

    def _can(self, kind: str) -> bool:
        """Whether a fault of ``kind`` may start now: never on a backend under a fault,
        never leaving fewer than :data:`MIN_HEALTHY` untouched, the pool kept within
        two backends of its starting size."""
        registered = sum(b.registered for b in self.backends)
        if kind == "add":
            return registered < self.options.backends + 2
        return len(self._candidates()) > MIN_HEALTHY and (
            kind != "drain" or registered > MIN_HEALTHY + 1)

    async def inject(self, kind: str, backend: Backend) -> None:
        start = time.monotonic()
        backend.busy = True
        self.in_flight += 1
        failed = False
        try:
            if kind == "kill":
                assert backend.proc is not None
                backend.proc.kill()
                await backend.proc.wait()
                await anyio.sleep(RESTART_DELAY)
                await self.start_backend(backend)
            elif kind == "restart":
                await self.stop_process(backend.proc, signal.SIGUSR1, 5.0)
                await self.start_backend(backend)
            elif kind == "blackhole":
                assert backend.proc is not None
                backend.proc.send_signal(signal.SIGSTOP)
                try:
                    await anyio.sleep(self.blackhole)
                finally:
                    backend.proc.send_signal(signal.SIGCONT)
            elif kind == "drain":
                await self._drain(backend)
            elif kind == "add":
                await self.start_backend(backend)
                try:
                    await self.api("POST", "/backends", {"url": backend.url})
                except AdminError as exc:
                    if "HTTP 409" not in str(exc):  # 409: a retried call that had worked
                        raise
        except (AdminError, TimeoutError, ChaosUsageError) as exc:
            # The fault happened, its end did not (a backend that would not start, a drain
            # or an admin call that timed out on a starved machine): the run goes on
            # without that backend, and says so.
            print(f"chaos: {kind} of backend {backend.id} did not complete: "
                  f"{type(exc).__name__}: {exc}", file=self.err, flush=True)
            self.incomplete += 1
            failed = True
        finally:
            backend.busy = failed or kind == "drain"  # no more faults on it
            self.in_flight -= 1
        self.faults.append(Fault(kind, backend.id, start, time.monotonic()))

    async def _drain(self, backend: Backend) -> None:
        backend.registered = False
        listed = {b["url"]: b["id"] for b in await self.api("GET", "/backends")}
        ident = listed.get(backend.url)
        if ident is None:
            raise ChaosUsageError(f"backend {backend.url} is not in the proxy's pool")
        try:
            await self.api("DELETE", f"/backends/{ident}?migrate=true")
        except AdminError as exc:
            if "HTTP 404" not in str(exc):  # 404: a retried call that had worked
                raise
        with anyio.fail_after(DRAIN_TIMEOUT):
            while any(b["id"] == ident for b in await self.api("GET", "/backends")):
                await anyio.sleep(0.1)
        await self.stop_process(backend.proc)

    async def faults_loop(self, tg: TaskGroup, deadline: float) -> None:
        kinds = list(self.options.kinds)
        total = self.options.faults_per_kind * len(kinds)
        if not total:
            await anyio.sleep(max(0.0, deadline - time.monotonic()))
            return
        interval = max(0.05, (deadline - time.monotonic()) / total)
        deck: list[str] = []
        for _ in range(total):
            if not deck:
                deck = kinds[:]
                self.rng.shuffle(deck)
            kind = deck.pop()
            # Wait for room: bounded, and given up when no fault is in progress (then
            # nothing will make room, e.g. a drain with the pool at its smallest).
            while not self._can(kind):
                if time.monotonic() > deadline + SETTLE_TIMEOUT or (
                        time.monotonic() > deadline and not self.in_flight):
                    return
                await anyio.sleep(0.05)
            target = (self.new_backend() if kind == "add"
                      else self.rng.choice(self._candidates()))
            target.busy = True
            self.started[kind] += 1
            tg.start_soon(self.inject, kind, target)
            await anyio.sleep(interval)

    # -- the run

    def progress(self, started: float) -> str:
        sent = sum(len(c.sent) for c in self.clients)
        gone = sum(c.disconnected is not None for c in self.clients)
        done = ", ".join(f"{k} {self.started[k]}" for k in self.options.kinds)
        return (f"chaos: {time.monotonic() - started:5.0f}s  sent {sent}  faults "
                f"{len(self.faults)} done ({done})  client disconnects {gone}")

    def disconnect_lines(self) -> list[str]:
        """How the disconnected clients' connections ended, and how late the clients'
        event loop ran at worst (late pongs get clients dropped by the proxy)."""
        reasons: dict[str, int] = {}
        for client in self.clients:
            if client.disconnected is not None:
                reasons[client.why] = reasons.get(client.why, 0) + 1
        lines = [f"client disconnects: {n} x {why}" for why, n in sorted(reasons.items())]
        if reasons:
            got = {(r.client, r.n) for r in self.records()}
            lost = sum(1 for c in self.clients if c.disconnected is not None
                       for n, _ in c.sent if (c.index, n) not in got)
            lines.append(f"lost by the disconnected clients: {lost}")
        if self.incomplete:
            lines.append(f"faults that did not complete: {self.incomplete}")
        return [*lines, f"clients' event loop lag, worst: {self.lag * 1000:.0f}ms"]

    def records(self) -> list[Record]:
        if self.acked:
            return self.ledger.records
        self.files.poll()
        return self.files.records

    async def settle(self) -> None:
        """Wait until every client's last message was processed, or nothing moves."""
        last = {c.index: c.sent[-1][0] for c in self.clients if c.sent}
        quiet_since, seen = time.monotonic(), -1
        with anyio.move_on_after(SETTLE_TIMEOUT):
            while True:
                records = self.records()
                got = {(r.client, r.n) for r in records}
                if all((client, n) in got for client, n in last.items()):
                    return
                if len(records) != seen:
                    quiet_since, seen = time.monotonic(), len(records)
                elif time.monotonic() - quiet_since > QUIET_TIMEOUT:
                    return
                await anyio.sleep(0.1)

    async def main(self) -> tuple[Counts, list[str]] | None:
        """The run; ``None`` if SIGINT or SIGTERM stopped it (everything started is
        stopped either way)."""
        result: tuple[Counts, list[str]] | None = None
        with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with anyio.create_task_group() as tg:
                async def watch() -> None:
                    async for signum in signals:  # bounded: the first one returns
                        print(f"chaos: {signal.Signals(signum).name}: stopping",
                              file=self.err, flush=True)
                        tg.cancel_scope.cancel()
                        return

                async def run() -> None:
                    nonlocal result
                    result = await self._main()
                    tg.cancel_scope.cancel()

                tg.start_soon(watch)
                tg.start_soon(run)
        return result

    async def _main(self) -> tuple[Counts, list[str]]:
        async with anyio.create_task_group() as services:
            if self.acked:
                listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
                self.ledger_port = listener.extra(anyio.abc.SocketAttribute.local_port)
                services.start_soon(listener.serve, self.ledger.serve)
            try:
                result = await self._run()
            finally:
                with anyio.CancelScope(shield=True):
                    for client in self.clients:
                        client.ending = True
                        if client.stream is not None:
                            await client.stream.aclose()
                    await self.stop_process(self.proxy)
                    for backend in self.backends:
                        if backend.proc is not None and backend.proc.returncode is None:
                            backend.proc.send_signal(signal.SIGCONT)
                            await self.stop_process(backend.proc, timeout=5.0)
                services.cancel_scope.cancel()
        return result

    async def _run(self) -> tuple[Counts, list[str]]:
        opts = self.options
        for _ in range(opts.backends):
            await self.start_backend(self.new_backend())
        await self.start_proxy()
        self.clients = [Client(i, self.proxy_port, random.Random(opts.seed * 7919 + i),
                               opts.rate) for i in range(1, opts.clients + 1)]
        # A few upgrades at a time: the proxy answers 408 beyond max_pending_per_peer.
        limiter = anyio.CapacityLimiter(CONNECT_CONCURRENCY)

        stop = anyio.Event()
        async with anyio.create_task_group() as readers:
            async def connect(client: Client) -> None:
                async with limiter:
                    await client.connect()
                readers.start_soon(client.read)  # at once: the proxy's pings start now

            with anyio.fail_after(START_TIMEOUT + opts.clients * 0.05):
                async with anyio.create_task_group() as tg:
                    for client in self.clients:
                        tg.start_soon(connect, client)
            started = time.monotonic()
            async with anyio.create_task_group() as writers:
                for client in self.clients:
                    writers.start_soon(client.write, stop)

                async def report_progress() -> None:
                    while True:
                        lag = 0.0
                        until = time.monotonic() + opts.progress_interval
                        while (now := time.monotonic()) < until:  # bounded by the interval
                            await anyio.sleep(0.1)
                            lag = max(lag, time.monotonic() - now - 0.1)
                        self.lag = max(self.lag, lag)
                        print(f"{self.progress(started)}  loop lag {lag * 1000:.0f}ms",
                              file=self.err, flush=True)

                readers.start_soon(report_progress)
                async with anyio.create_task_group() as faults:
                    deadline = started + opts.duration - min(2.0, opts.duration / 4)
                    await anyio.sleep(min(1.0, opts.duration / 10))  # traffic first
                    await self.faults_loop(faults, deadline)
                await anyio.sleep(max(0.0, started + opts.duration - time.monotonic()))
                stop.set()
            await self.settle()
            possibly_lost = await self.metric("wspipe_messages_possibly_lost_total")
            for client in self.clients:
                await client.close()
            readers.cancel_scope.cancel()
        print(self.progress(started), file=self.err, flush=True)
        (self.work / "faults.json").write_text(json.dumps([dataclasses.asdict(f)
                                                           for f in self.faults]))
        counts = count({c.index: c.sent for c in self.clients}, self.records(), self.faults,
                       {c.index: c.disconnected for c in self.clients
                        if c.disconnected is not None}, by_link=not self.acked)
        lines = [f"delivery {self.delivery}, {opts.clients} clients, {opts.backends} "
                 f"backends, {opts.duration:g}s, {opts.rate:g} msg/s per client, seed "
                 f"{opts.seed}, on {self.settings.get('async_lib', 'asyncio')}",
                 counts.as_text(),
                 *self.disconnect_lines(),
                 f"possibly lost (proxy metric): "
                 f"{'-' if possibly_lost is None else f'{possibly_lost:.0f}'}; "
                 f"echoes received by clients: {sum(c.echoes for c in self.clients)}"]
        print("\n".join(lines), file=self.out, flush=True)
        return counts, broken_promises(self.delivery, counts.total, possibly_lost)


#: Proxy settings chaos sets when the user did not (its faults need short timeouts).
PROXY_DEFAULTS: dict[str, Any] = {"ping_interval": 1.0, "ping_timeout": 5.0,
                                  "shutdown_grace": 2.0,
                                  "log_level": "warning"}
#: Settings chaos replaces (its own backends, loopback addresses).
REPLACED = ("backends", "listen", "admin", "admin_token", "admin_token_file")


def run_chaos(options: ChaosOptions, settings: dict[str, Any],
              validate: Callable[[dict[str, Any]], Any], *, out: TextIO | None = None,
              err: TextIO | None = None) -> int:
    """Run chaos with the proxy ``settings`` (merged flags and config file); the exit
    status: 0 the mode's promise held, 1 it was broken (said on stderr).

    :param validate: Checks proxy settings as ``wspipe serve`` would (raises on error).
    :raises ChaosUsageError: A chaos option out of bounds.
    """
    out = out or sys.stdout
    err = err or sys.stderr
    options.check()
    for key in REPLACED:
        if settings.pop(key, None) and key in ("backends", "listen"):
            print(f"chaos: ignoring {key}: chaos runs its own backends on 127.0.0.1",
                  file=err)
    settings = {**PROXY_DEFAULTS, **settings}
    validate({**settings, "listen": ["127.0.0.1:0"], "admin": "127.0.0.1:0",
              "admin_token": "x" * 32})
    if settings.get("delivery") == "acked":
        import importlib.util

        if importlib.util.find_spec("websockets") is None:
            raise ChaosUsageError("acked chaos runs wspipe_backend on websockets: "
                                  "pip install 'wspipe[backend]'")
    async_lib = str(settings.get("async_lib", "asyncio"))
    with tempfile.TemporaryDirectory(prefix="wspipe-chaos-") as work:
        run = Run(options, settings, Path(work), out, err)
        try:
            result = anyio.run(run.main, backend=async_lib)
        except Exception as exc:  # one line, not a traceback
            failure = _first_error(exc)
            print(f"chaos: the run could not complete: {type(failure).__name__}: {failure} "
                  "(--keep-logs keeps its logs)", file=err)
            return EXIT_FAILED
        finally:
            if options.keep:
                import shutil

                kept = shutil.copytree(work, work + "-kept")
                print(f"chaos: logs kept in {kept}", file=err)
    if result is None:
        return EXIT_INTERRUPTED
    broken = result[1]
    for line in broken:
        print(f"chaos: PROMISE BROKEN: {line}", file=err)
    if not broken:
        print(f"chaos: {run.delivery} kept its promise", file=err)
    return EXIT_BROKEN if broken else 0

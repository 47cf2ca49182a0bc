"""End-to-end benchmark over loopback: throughput, latency, idle memory and failover.

Every party is its own process, all on 127.0.0.1:

* echo backends: ``websockets`` on asyncio + uvloop (compression off), echoing each
  message; in ``--tag`` mode (failover only) they answer ``"<port> <message>"``;
* the load generator: ``websockets`` on uvloop, closed loop — each connection sends
  one message and awaits its echo, again and again, for ``--duration`` seconds;
* the targets, measured in the same run and interleaved:

  ``direct``          load generator -> backend, no proxy
  ``wspipe-asyncio``  ``python -m wspipe_anyio serve --async-lib asyncio`` (uvloop)
  ``wspipe-trio``     ``python -m wspipe_anyio serve --async-lib trio``
  ``floor-asyncio``   ``benchmarks/floor_relay.py`` on asyncio (uvloop): wsproto + anyio,
                      no wspipe logic — the floor of our own stack
  ``floor-trio``      the same on trio
  ``wspipe-asyncio-alo``, ``wspipe-trio-alo``  wspipe with ``--delivery at-least-once``,
                      compared with the same wspipe target at most once (opt-in targets)
  ``websockets``      ``benchmarks/websockets_relay.py``: a naive proxy written with
                      ``websockets`` (asyncio + uvloop, C framing and masking) — opt-in
  ``nginx``           nginx (one worker process, ``master_process off``) proxying the
                      upgrade — opt-in, when ``nginx`` is installed
  ``before-asyncio``, ``before-trio``  wspipe from another tree (``--before DIR``, e.g.
                      a ``git archive`` of main), compared with ``wspipe-*`` — opt-in

``--pin CPU`` runs every target under ``taskset -c CPU`` (one core for the proxy;
the load generator and the backend share the rest).

``--peers c`` (throughput section and ``--profile``) replaces the echo backend and the
load generator with ``wsload`` (``benchmarks/wsload.c``, built here with gcc and
libcrypto into ``benchmarks/.build/``): the same closed loop with ``--inflight``
messages in flight per connection, every echo checked, a few µs of CPU per round trip.
With Python peers on 2 cores, the peers' core is what runs out first at 64 KiB (their
CPU per round trip is reported: ``peers us/msg``); with ``wsload`` it is the target's.

Sections (``--sections``, default all):

``throughput``  msgs/s (round trips), p50/p99 round-trip latency and the target's CPU
                time per round trip, per message size, with ``--connections`` clients.
                Each cell runs ``--repeat`` times; medians are shown.
``idle``        RSS per idle pipe: a fresh target process, VmRSS before and after
                ``--idle`` clients connect and each completes one echo (so every link
                is open), divided by the number of clients.
``failover``    wspipe with two backends; one client sends a numbered message every
                ``--interval`` seconds; the backend its pipe is on is SIGKILLed; the time
                from the kill to the first echo from the other backend is the failover
                time (the first link attempt after an interruption has no backoff, so
                nothing is subtracted). The killed backend is restarted for the next trial.

Quick mode (< 60 s)::

    python benchmarks/e2e.py --quick

Full run, one section at a time (each < 2 min)::

    python benchmarks/e2e.py --sections throughput --sizes 64 --repeat 3 --duration 4
    python benchmarks/e2e.py --sections throughput --sizes 1KiB --repeat 3 --duration 4
    python benchmarks/e2e.py --sections throughput --sizes 64KiB --repeat 3 --duration 4
    python benchmarks/e2e.py --sections idle,failover
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import platform
import queue
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wspipe_anyio.units import parse_size

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BUILD = HERE / ".build"
WSLOAD_SOURCE = HERE / "wsload.c"
HOST = "127.0.0.1"
ALL_TARGETS = ("direct", "wspipe-asyncio", "wspipe-trio", "floor-asyncio", "floor-trio",
               "wspipe-asyncio-alo", "wspipe-trio-alo", "websockets", "nginx",
               "before-asyncio", "before-trio")
PROXIES = ALL_TARGETS[1:]

# ----------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[Any] | None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            try:
                sock.connect((HOST, port))
                return
            except OSError:
                time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {HOST}:{port} after {timeout}s")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` (all threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def build_wsload() -> Path:
    """Compile ``wsload.c`` (when newer than the binary); its path."""
    binary = BUILD / "wsload"
    if binary.exists() and binary.stat().st_mtime >= WSLOAD_SOURCE.stat().st_mtime:
        return binary
    if shutil.which("gcc") is None:
        raise SystemExit("gcc not found (needed to build benchmarks/wsload.c)")
    if not Path("/usr/include/openssl/sha.h").exists():
        raise SystemExit("OpenSSL headers missing (apt-get install libssl-dev): "
                         "needed to build benchmarks/wsload.c")
    BUILD.mkdir(exist_ok=True)
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(WSLOAD_SOURCE), "-lcrypto"],
                   check=True)
    return binary


def raise_nofile(want: int = 65536) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = min(want, hard) if hard != resource.RLIM_INFINITY else want
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size >= 1024 and size % 1024 == 0 else f"{size} B"


def use_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def pctl(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


# ----------------------------------------------------------------------------- child roles


async def _backend_main(port: int, tag: bool) -> None:
    from websockets.asyncio.server import serve

    prefix = f"{port} "

    async def echo(ws: Any) -> None:
        with contextlib.suppress(Exception):  # a benchmark peer going away is normal
            async for message in ws:
                await ws.send(prefix + message if tag and isinstance(message, str) else message)

    async with serve(echo, HOST, port, compression=None, max_size=None, ping_interval=None,
                     backlog=4096):
        print("ready", flush=True)
        await asyncio.Future()


async def _load_main(url: str, conns: int, size: int, duration: float, warmup: float,
                     inflight: int = 1) -> None:
    from websockets.asyncio.client import connect

    payload = bytes(size)
    sockets = [await connect(url.replace("{uuid}", str(uuid.uuid4())), compression=None,
                             max_size=None, ping_interval=None)
               for _ in range(conns)]
    latencies: list[float] = []
    counting = False
    count = 0
    stop = False
    clock = time.perf_counter

    async def loop(ws: Any) -> None:
        nonlocal count
        send, recv = ws.send, ws.recv
        sent: collections.deque[float] = collections.deque()
        for _ in range(inflight - 1):  # keep ``inflight`` messages outstanding
            sent.append(clock())
            await send(payload)
        while not stop:
            sent.append(clock())
            await send(payload)
            reply = await recv()
            t0 = sent.popleft()
            if counting:
                latencies.append(clock() - t0)
                count += 1
            if len(reply) != size:
                raise RuntimeError(f"echo of {len(reply)} bytes, sent {size}")

    tasks = [asyncio.ensure_future(loop(ws)) for ws in sockets]
    await asyncio.sleep(warmup)
    counting = True
    print(json.dumps({"event": "start"}), flush=True)
    start = clock()
    await asyncio.sleep(duration)
    counting = False
    elapsed = clock() - start
    print(json.dumps({"event": "stop"}), flush=True)
    stop = True
    await asyncio.wait(tasks, timeout=10)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    for ws in sockets:
        await ws.close()
    print(json.dumps({"event": "result", "messages": count, "elapsed": elapsed,
                      "p50": pctl(latencies, 0.5), "p99": pctl(latencies, 0.99)}), flush=True)


async def _idle_main(url: str, conns: int, concurrency: int) -> None:
    from websockets.asyncio.client import connect

    sem = asyncio.Semaphore(concurrency)

    async def one(i: int) -> Any:
        async with sem:
            ws = await connect(url.replace("{uuid}", str(uuid.uuid4())), compression=None,
                               ping_interval=None, open_timeout=30)
            await ws.send(b"x")
            await ws.recv()
            return ws

    start = time.perf_counter()
    sockets = await asyncio.gather(*(one(i) for i in range(conns)))
    print(json.dumps({"event": "ready", "seconds": time.perf_counter() - start}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # the parent says when
    await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)


async def _failover_client(url: str, interval: float) -> None:
    """Send numbered text messages; print every echo; obey 'quit' on stdin."""
    from websockets.asyncio.client import connect

    ws = await connect(url, compression=None, ping_interval=None)
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def sender() -> None:
        seq = 0
        while not done.is_set():
            await ws.send(f"{seq} {time.monotonic()!r}")
            seq += 1
            await asyncio.sleep(interval)

    async def receiver() -> None:
        async for message in ws:
            port, seq, _ = message.split(" ", 2)
            print(f"{time.monotonic()!r} {port} {seq}", flush=True)

    async def control() -> None:
        await loop.run_in_executor(None, sys.stdin.readline)
        done.set()

    print("ready", flush=True)
    tasks = [asyncio.ensure_future(c) for c in (sender(), receiver(), control())]
    await tasks[2]
    for task in tasks[:2]:
        task.cancel()
    await ws.close()


def child_main(argv: list[str]) -> int:
    role = argv[0]
    parser = argparse.ArgumentParser(prog=f"e2e.py {role}")
    parser.add_argument("--port", type=int)
    parser.add_argument("--tag", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.002)
    parser.add_argument("--inflight", type=int, default=1)
    args = parser.parse_args(argv[1:])
    raise_nofile()
    use_uvloop()
    if role == "_backend":
        asyncio.run(_backend_main(args.port, args.tag))
    elif role == "_load":
        asyncio.run(_load_main(args.url, args.conns, args.size, args.duration, args.warmup,
                               args.inflight))
    elif role == "_idle":
        asyncio.run(_idle_main(args.url, args.conns, args.concurrency))
    elif role == "_failover_client":
        asyncio.run(_failover_client(args.url, args.interval))
    else:
        raise SystemExit(f"unknown role {role}")
    return 0


# ----------------------------------------------------------------------------- processes


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.popen.pid

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


@dataclass
class Procs:
    """Every process this script started; stopped (by pid) at exit."""

    items: list[Proc] = field(default_factory=list)
    #: Each target's and backend's stderr goes to a file here (reported at the end).
    log_dir: Path = field(default_factory=lambda: Path(f"/tmp/wspipe-bench-{os.getpid()}"))
    logs: dict[str, Path] = field(default_factory=dict)

    def start(self, name: str, cmd: list[str], port: int, *, stdin: bool = False,
              wait: bool = True, cwd: Path = ROOT, env: dict[str, str] | None = None) -> Proc:
        self.log_dir.mkdir(exist_ok=True)
        path = self.log_dir / f"{name.replace(':', '-')}-{port}.log"
        self.logs[path.name] = path
        with path.open("w") as err:
            popen = subprocess.Popen(
                cmd, cwd=cwd, text=True, stdout=subprocess.DEVNULL, stderr=err,
                stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                env=None if env is None else {**os.environ, **env})
        proc = Proc(name, popen, port)
        self.items.append(proc)
        if wait:
            wait_port(port, popen)
        return proc

    def stop_all(self) -> None:
        for proc in reversed(self.items):
            proc.stop()
        self.items.clear()


def start_backend(procs: Procs, port: int | None = None, tag: bool = False) -> Proc:
    port = port or free_port()
    if WSLOAD is not None and not tag:
        return procs.start(f"backend:{port}", [str(WSLOAD), "echo", str(port)], port)
    cmd = [sys.executable, str(HERE / "e2e.py"), "_backend", "--port", str(port)]
    return procs.start(f"backend:{port}", cmd + (["--tag"] if tag else []), port)


#: ``--pin CPU``: the ``taskset`` prefix of every target's command.
PIN: list[str] = []
#: ``--before DIR``: the tree the ``before-*`` targets run.
BEFORE: Path | None = None
#: ``--peers c``: the built ``wsload`` (echo backend and load generator); else ``None``.
WSLOAD: Path | None = None

NGINX_CONF = """worker_processes 1; master_process off; daemon off; worker_rlimit_nofile 65536;
pid {dir}/nginx-{port}.pid; error_log stderr warn;
events {{ worker_connections 20000; }}
http {{
  access_log off;
  client_body_temp_path {dir}/nginx-body; proxy_temp_path {dir}/nginx-proxy;
  fastcgi_temp_path {dir}/nginx-fcgi; uwsgi_temp_path {dir}/nginx-uwsgi;
  scgi_temp_path {dir}/nginx-scgi;
  server {{
    listen {host}:{port} backlog=4096;
    location / {{
      proxy_pass {backend};
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
      proxy_read_timeout 3600s;
      proxy_buffering off;
    }}
  }}
}}
"""


def start_target(procs: Procs, target: str, backends: list[str],
                 profile_to: str | None = None) -> Proc:
    port = free_port()
    python = [*PIN, sys.executable,
              *(["-m", "cProfile", "-o", profile_to] if profile_to else [])]
    if target.startswith("before-"):
        if BEFORE is None:
            raise SystemExit("the before-* targets need --before DIR")
        cmd = [*python, "-m", "wspipe_anyio", "serve", "--listen", f"{HOST}:{port}",
               "--async-lib", target.split("-")[1], "--log-level", "warning",
               "--no-entrypoints", "--max-connections", "20000"]
        for url in backends:
            cmd += ["--backend", url]
        return procs.start(target, cmd, port, cwd=BEFORE, env={"PYTHONPATH": str(BEFORE)})
    if target == "websockets":
        cmd = [*python, str(HERE / "websockets_relay.py"), "--listen", f"{HOST}:{port}",
               "--backend", backends[0]]
        return procs.start(target, cmd, port)
    if target == "nginx":
        procs.log_dir.mkdir(exist_ok=True)
        conf = procs.log_dir / f"nginx-{port}.conf"
        conf.write_text(NGINX_CONF.format(dir=procs.log_dir, host=HOST, port=port,
                                          backend=backends[0].replace("ws://", "http://")))
        return procs.start(target, [*PIN, "nginx", "-e", "stderr", "-p", str(procs.log_dir),
                                    "-c", str(conf)], port)
    if target.startswith("wspipe-"):
        cmd = [*python, "-m", "wspipe_anyio", "serve", "--listen", f"{HOST}:{port}",
               "--async-lib", target.split("-")[1], "--log-level", "warning",
               "--no-entrypoints", "--max-connections", "20000"]
        if target.endswith("-alo"):
            cmd += ["--delivery", "at-least-once"]
        for url in backends:
            cmd += ["--backend", url]
    elif target.startswith("floor-"):
        cmd = [*python, str(HERE / "floor_relay.py"), "--listen", f"{HOST}:{port}",
               "--backend", backends[0], "--async-lib", target.split("-", 1)[1]]
    else:
        raise ValueError(target)
    return procs.start(target, cmd, port)


def target_url(target: str, proxies: dict[str, Proc], backend_port: int,
               path: str | None = None) -> str:
    port = backend_port if target == "direct" else proxies[target].port
    return f"ws://{HOST}:{port}{path if path is not None else '/' + str(uuid.uuid4())}"


#: Each client of the load generator replaces this with a fresh UUID (its client id).
PER_CLIENT = "/{uuid}"


def run_child(args: list[str], timeout: float) -> list[dict[str, Any]]:
    out = subprocess.run([sys.executable, str(HERE / "e2e.py"), *args], cwd=ROOT, text=True,
                         capture_output=True, timeout=timeout, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]


# ----------------------------------------------------------------------------- sections


class LineReader:
    """Lines of a child's stdout, read by a thread, with a timeout per line."""

    def __init__(self, stream: Any) -> None:
        self._queue: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._run, args=(stream,), daemon=True)
        self._thread.start()

    def _run(self, stream: Any) -> None:
        for line in stream:
            self._queue.put(line)
        self._queue.put("")

    def readline(self, timeout: float = 10.0) -> str:
        try:
            line = self._queue.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no output from the child within {timeout}s") from None
        if not line:
            raise RuntimeError("the child exited")
        return line


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def load_command(url: str, conns: int, size: int, duration: float, warmup: float,
                 inflight: int) -> list[str]:
    """The load generator's command line: ``e2e.py _load``, or ``wsload load``."""
    if WSLOAD is not None:
        rest = url.split("://", 1)[1]
        hostport, _, path = rest.partition("/")
        host, _, port = hostport.rpartition(":")
        return [str(WSLOAD), "load", host, port, "/" + path, str(conns), str(inflight),
                str(size), str(duration), str(warmup)]
    return [sys.executable, str(HERE / "e2e.py"), "_load", "--url", url, "--conns",
            str(conns), "--size", str(size), "--duration", str(duration), "--warmup",
            str(warmup), "--inflight", str(inflight)]


def run_load(cmd: list[str], pid: int, timeout: float,
             peers: tuple[int, ...] = ()) -> tuple[dict[str, Any], float, float]:
    """Run the load generator ``cmd``; its result, ``pid``'s CPU seconds while counting,
    and the CPU seconds of ``peers`` and the load generator meanwhile."""
    child = subprocess.Popen(cmd, cwd=ROOT, text=True,
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    lines = LineReader(child.stdout)

    def marks() -> tuple[float, float]:
        return cpu_seconds(pid), sum(cpu_seconds(p) for p in (*peers, child.pid))

    start = stop = (0.0, 0.0)
    result: dict[str, Any] | None = None
    try:
        while result is None:
            line = lines.readline(timeout)
            if not line.startswith("{"):
                continue
            message = json.loads(line)
            if message["event"] == "start":
                start = marks()
            elif message["event"] == "stop":
                stop = marks()
            elif message["event"] == "result":
                result = message
    finally:
        if child.poll() is None:
            try:
                child.wait(timeout)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(5)
    if child.returncode:
        raise RuntimeError(f"load generator failed with {child.returncode}")
    return result, stop[0] - start[0], stop[1] - start[1]


def section_throughput(args: argparse.Namespace, procs: Procs) -> list[dict[str, Any]]:
    backend = start_backend(procs)
    backend_url = f"ws://{HOST}:{backend.port}"
    proxies = {t: start_target(procs, t, [backend_url]) for t in args.targets if t != "direct"}
    rows: list[dict[str, Any]] = []
    for size in args.sizes:
        runs: dict[str, list[dict[str, float]]] = {t: [] for t in args.targets}
        for rep in range(args.repeat):
            for target in args.targets:
                url = target_url(target, proxies, backend.port, PER_CLIENT)
                pid = proxies[target].pid if target in proxies else backend.pid
                cmd = load_command(url, args.connections, size, args.duration, args.warmup,
                                   args.inflight)
                result, cpu, peers = run_load(
                    cmd, pid, timeout=args.duration + args.warmup + 60,
                    peers=(backend.pid,) if target in proxies else ())
                if backend.popen.poll() is not None:
                    raise RuntimeError(f"the echo backend exited ({backend.popen.returncode})")
                n = result["messages"]
                rate = n / result["elapsed"]
                runs[target].append({"rate": rate, "p50": result["p50"], "p99": result["p99"],
                                     "cpu_us": cpu / n * 1e6 if n else float("nan"),
                                     "busy": cpu / result["elapsed"],
                                     "peers_us": peers / n * 1e6 if n else float("nan")})
                log(f"  {size_label(size):>7} {target:<15} run {rep + 1}: {rate:>9,.0f} msgs/s"
                    f"  p50 {result['p50'] * 1e3:6.2f} ms  p99 {result['p99'] * 1e3:6.2f} ms"
                    f"  {'proxy' if target in proxies else 'backend'} CPU "
                    f"{runs[target][-1]['cpu_us']:.0f} us/msg ({cpu / result['elapsed']:.2f}"
                    f" cores), peers {runs[target][-1]['peers_us']:.0f} us/msg")
        for target in args.targets:
            med = {k: statistics.median(r[k] for r in runs[target]) for k in runs[target][0]}
            row = {"size": size, "target": target, **med,
                   "rates": [r["rate"] for r in runs[target]],
                   "cpus": [r["cpu_us"] for r in runs[target]]}
            lib = target.split("-")[1] if "-" in target else ""
            # An -alo target is priced against the same proxy at most once; others
            # against the floor relay of their library.
            floor = runs.get(f"wspipe-{lib}" if target.endswith("-alo") else f"floor-{lib}")
            before = runs.get(f"before-{lib}")
            if target.startswith("wspipe-") and not target.endswith("-alo") and before:
                row["vs_before"] = statistics.median(
                    w["rate"] / b["rate"] for w, b in zip(runs[target], before, strict=True))
                row["cpu_vs_before"] = statistics.median(
                    w["cpu_us"] / b["cpu_us"] for w, b in zip(runs[target], before, strict=True))
            if target.startswith("wspipe-") and floor:
                # Paired by repetition (the same minute of machine load), then the median.
                row["vs_floor"] = statistics.median(
                    w["rate"] / f["rate"] for w, f in zip(runs[target], floor, strict=True))
                row["cpu_vs_floor"] = statistics.median(
                    f["cpu_us"] / w["cpu_us"] for w, f in zip(runs[target], floor, strict=True))
            rows.append(row)
    return rows


def section_idle(args: argparse.Namespace, procs: Procs) -> list[dict[str, Any]]:
    backend = start_backend(procs)
    backend_url = f"ws://{HOST}:{backend.port}"
    rows: list[dict[str, Any]] = []
    for target in [t for t in args.targets if t != "direct"]:
        proxy = start_target(procs, target, [backend_url])
        try:
            # Warm up: one client, one echo, gone; then let the process settle.
            run_child(["_idle", "--url", target_url(target, {target: proxy}, 0, PER_CLIENT),
                       "--conns", "1"], timeout=30)
            time.sleep(args.settle)
            before = rss_kib(proxy.pid)
            idle = subprocess.Popen(
                [sys.executable, str(HERE / "e2e.py"), "_idle", "--url",
                 target_url(target, {target: proxy}, 0, PER_CLIENT), "--conns", str(args.idle),
                 # under wspipe's max_pending_per_peer (64): all clients come from 127.0.0.1
                 "--concurrency", "32"],
                cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            procs.items.append(Proc("idle-clients", idle, 0))
            assert idle.stdout is not None and idle.stdin is not None
            line = idle.stdout.readline()
            if not line:
                raise RuntimeError(f"idle clients failed on {target}")
            ready = json.loads(line)
            time.sleep(args.settle)
            after = rss_kib(proxy.pid)
            idle.stdin.write("done\n")
            idle.stdin.flush()
            idle.wait(60)
            per_pipe = (after - before) / args.idle
            rows.append({"target": target, "before_kib": before, "after_kib": after,
                         "per_pipe_kib": per_pipe, "connect_s": ready["seconds"]})
            log(f"  idle {target:<15} {before:,} KiB -> {after:,} KiB with {args.idle} clients:"
                f" {per_pipe:.1f} KiB per pipe (connected in {ready['seconds']:.1f} s)")
        finally:
            proxy.stop()
    return rows


def section_failover(args: argparse.Namespace, procs: Procs) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for target in [t for t in args.targets if t.startswith("wspipe-")]:
        backends = {p.port: p for p in (start_backend(procs, tag=True),
                                        start_backend(procs, tag=True))}
        proxy = start_target(procs, target, [f"ws://{HOST}:{port}" for port in backends])
        client = subprocess.Popen(
            [sys.executable, str(HERE / "e2e.py"), "_failover_client", "--url",
             target_url(target, {target: proxy}, 0), "--interval", str(args.interval)],
            cwd=ROOT, text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.items.append(Proc("failover-client", client, 0))
        assert client.stdout is not None and client.stdin is not None
        lines = LineReader(client.stdout)
        if lines.readline().strip() != "ready":
            raise RuntimeError("failover client did not start")
        times: list[float] = []
        lost: list[int] = []
        try:
            for trial in range(args.trials):
                # Find the backend of the pipe: the port in the latest echo.
                line = lines.readline().split()
                current = int(line[1])
                last_seq = int(line[2])
                victim = backends[current]
                t_kill = time.monotonic()
                os.kill(victim.pid, signal.SIGKILL)
                first = None
                seqs: list[int] = []
                deadline = t_kill + 10
                while time.monotonic() < deadline:
                    stamp, port, seq = lines.readline().split()
                    if int(port) != current:
                        first = float(stamp)
                        seqs.append(int(seq))
                        break
                    last_seq = int(seq)
                if first is None:
                    raise RuntimeError(f"{target}: no echo from another backend after kill")
                victim.popen.wait(5)
                procs.items.remove(victim)
                # Sequence numbers between the last echo of the old backend and the first
                # of the new one that never come back were lost (at-most-once window).
                for _ in range(20):
                    stamp, port, seq = lines.readline().split()
                    seqs.append(int(seq))
                gap = sorted(set(range(last_seq + 1, seqs[0])) - set(seqs))
                ms = (first - t_kill) * 1e3
                times.append(ms)
                lost.append(len(gap))
                log(f"  failover {target:<15} trial {trial + 1}: {ms:6.1f} ms "
                    f"(kill -> first echo from the other backend), {len(gap)} message(s) lost")
                backends[current] = start_backend(procs, port=current, tag=True)
                time.sleep(0.3)
            rows.append({"target": target, "median_ms": statistics.median(times),
                         "max_ms": max(times), "min_ms": min(times), "trials": times,
                         "lost": lost})
        finally:
            client.stdin.write("quit\n")
            client.stdin.flush()
            with contextlib.suppress(subprocess.TimeoutExpired):
                client.wait(10)
            proxy.stop()
            for backend in backends.values():
                backend.stop()
    return rows


LAYERS = (("wspipe_core", "wspipe_core/"), ("wspipe_anyio (driver)", "wspipe_anyio/"),
          ("floor_relay", "floor_relay.py"), ("wsproto", "wsproto/"), ("h11", "h11/"),
          ("anyio", "anyio/"), ("trio", "trio/"), ("asyncio", "asyncio/"))


def print_layers(stats: Any) -> None:
    """Self time by layer (file path), as a share of the profiled run."""
    totals: dict[str, float] = {}
    for (filename, _, _), (_, _, tottime, _, _) in stats.stats.items():
        layer = next((name for name, marker in LAYERS if marker in filename),
                     "builtins and other")
        totals[layer] = totals.get(layer, 0.0) + tottime
    grand = sum(totals.values()) or 1.0
    print("| layer | self time | share |")
    print("|---|---:|---:|")
    for layer, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"| {layer} | {seconds:.2f} s | {seconds / grand:.0%} |")
    print()


def profile_target(args: argparse.Namespace, procs: Procs, target: str) -> None:
    """Run one throughput cell with the target under cProfile; print its hot spots."""
    import pstats
    import tempfile

    backend = start_backend(procs)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "target.prof")
        proxy = start_target(procs, target, [f"ws://{HOST}:{backend.port}"], profile_to=out)
        url = target_url(target, {target: proxy}, backend.port, PER_CLIENT)
        size = args.sizes[0]
        cmd = load_command(url, args.connections, size, args.duration, args.warmup,
                           args.inflight)
        result, cpu, _ = run_load(cmd, proxy.pid, timeout=args.duration + args.warmup + 60)
        rate = result["messages"] / result["elapsed"]
        proxy.stop()  # SIGTERM: the target shuts down and cProfile writes its file
        print(f"\n### {target} under cProfile: {size_label(size)}, {args.connections} "
              f"connections: {rate:,.0f} msgs/s, {cpu / max(result['messages'], 1) * 1e6:.0f} "
              f"us CPU per round trip (profiler overhead included)\n")
        stats = pstats.Stats(out)
        print_layers(stats)
        stats.strip_dirs().sort_stats("tottime").print_stats(args.top)
        stats.sort_stats("cumulative").print_stats(args.top)


# ----------------------------------------------------------------------------- output


def print_tables(args: argparse.Namespace, results: dict[str, list[dict[str, Any]]]) -> None:
    print(f"\nwspipe end to end, loopback, python {platform.python_version()}, "
          f"{os.cpu_count()} CPUs, load average at start {args.loadavg}")
    if "throughput" in results:
        rows = results["throughput"]
        print(f"\n### Throughput and latency ({args.connections} connections, closed loop, "
              f"binary messages, median of {args.repeat} x {args.duration:g} s)\n")
        print(f"Peers: {'wsload (C)' if WSLOAD else 'Python (websockets on uvloop)'}, "
              f"{args.inflight} in flight per connection.\n")
        print("| size | target | msgs/s | vs floor | p50 ms | p99 ms | target CPU us/msg "
              "| target cores | peers CPU us/msg | CPU vs floor | msgs/s vs before "
              "| CPU vs before |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            vs = f"{r['vs_floor']:.0%}" if "vs_floor" in r else ""
            cpu_vs = f"{r['cpu_vs_floor']:.0%}" if "cpu_vs_floor" in r else ""
            vb = f"{r['vs_before']:.0%}" if "vs_before" in r else ""
            cb = f"{r['cpu_vs_before']:.0%}" if "cpu_vs_before" in r else ""
            print(f"| {size_label(r['size'])} | {r['target']} | {r['rate']:,.0f} | {vs} | "
                  f"{r['p50'] * 1e3:.3f} | {r['p99'] * 1e3:.3f} | {r['cpu_us']:.1f} | "
                  f"{r.get('busy', float('nan')):.2f} | {r.get('peers_us', float('nan')):.1f} | "
                  f"{cpu_vs} | {vb} | {cb} |")
        print("\nvs floor: wspipe msgs/s over the floor relay's on the same library; CPU vs floor: "
              "the floor's CPU per round trip over wspipe's. Both are paired by repetition "
              "(measured back to back), then the median. For an -alo target (at-least-once "
              "delivery) both compare with the same wspipe target at most once instead. "
              "vs before: wspipe-X over before-X, paired the same way (CPU: after / before). "
              "target cores: the target's CPU seconds per second while counting (1.00: its "
              "core ran out); peers: the backend's and the load generator's CPU per round "
              "trip.")
    if "idle" in results:
        print(f"\n### RSS per idle pipe ({args.idle} idle clients, each linked)\n")
        print("| target | RSS before KiB | RSS after KiB | KiB per idle pipe |")
        print("|---|---:|---:|---:|")
        for r in results["idle"]:
            print(f"| {r['target']} | {r['before_kib']:,} | {r['after_kib']:,} | "
                  f"{r['per_pipe_kib']:.1f} |")
    if "failover" in results:
        print(f"\n### Failover (backend SIGKILLed; {args.trials} trials; a message every "
              f"{args.interval * 1e3:g} ms; first attempt has no backoff)\n")
        print("| target | median ms | min ms | max ms | messages lost per trial |")
        print("|---|---:|---:|---:|---|")
        for r in results["failover"]:
            print(f"| {r['target']} | {r['median_ms']:.1f} | {r['min_ms']:.1f} | "
                  f"{r['max_ms']:.1f} | {', '.join(map(str, r['lost']))} |")


def summarize(paths: list[str]) -> None:
    """Paired ratios to the floor over the repetitions of several ``--json`` results."""
    tp: dict[tuple[int, str], list[float]] = {}
    cpu: dict[tuple[int, str], list[float]] = {}
    for path in paths:
        rows = json.loads(Path(path).read_text()).get("throughput", [])
        by = {(r["size"], r["target"]): r for r in rows}
        for (size, target), r in by.items():
            if not target.startswith("wspipe-") or "cpus" not in r:
                continue
            lib = target.split("-", 1)[1]
            floor = by.get((size, f"floor-{lib}"))
            if floor is None:
                continue
            for w_rate, f_rate, w_cpu, f_cpu in zip(r["rates"], floor["rates"], r["cpus"],
                                                    floor["cpus"], strict=True):
                tp.setdefault((size, lib), []).append(w_rate / f_rate)
                cpu.setdefault((size, lib), []).append(f_cpu / w_cpu)
    print(f"\n### wspipe vs the floor relay over {len(paths)} result file(s), paired by "
          "repetition\n")
    print("| size | library | pairs | msgs/s vs floor: median (min-max) | "
          "CPU vs floor: median (min-max) |")
    print("|---:|---|---:|---|---|")
    for key in sorted(tp):
        a, b = tp[key], cpu[key]
        print(f"| {size_label(key[0])} | {key[1]} | {len(a)} | {statistics.median(a):.0%} "
              f"({min(a):.0%}-{max(a):.0%}) | {statistics.median(b):.0%} "
              f"({min(b):.0%}-{max(b):.0%}) |")


def report_logs(procs: Procs) -> None:
    """Say which target logged tracebacks (a driver or core error under load)."""
    for name, path in sorted(procs.logs.items()):
        if not path.exists():
            continue
        text = path.read_text(errors="replace")
        errors = text.count("Traceback")
        if errors:
            last = [line for line in text.splitlines() if "Error" in line][-1:]
            log(f"note: {name} logged {errors} traceback(s), see {path}: "
                f"{last[0].strip() if last else ''}")


def main(argv: list[str]) -> int:
    if argv and argv[0].startswith("_"):
        return child_main(argv)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="throughput,idle,failover")
    parser.add_argument("--inflight", type=int, default=1,
                        help="messages each connection keeps outstanding (default 1)")
    parser.add_argument("--targets", default=",".join(ALL_TARGETS[:5]),
                        help="comma-separated (default the first five; the -alo targets run "
                             "wspipe with --delivery at-least-once)")
    parser.add_argument("--sizes", default="64,1KiB,64KiB")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per cell")
    parser.add_argument("--warmup", type=float, default=0.5, help="seconds before counting")
    parser.add_argument("--repeat", type=int, default=1, help="runs per cell (median)")
    parser.add_argument("--idle", type=int, default=2000, help="idle clients")
    parser.add_argument("--trials", type=int, default=5, help="failover trials per target")
    parser.add_argument("--interval", type=float, default=0.002,
                        help="failover client send interval (s)")
    parser.add_argument("--settle", type=float, default=1.0,
                        help="idle: seconds to wait before each RSS reading (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.add_argument("--profile", metavar="TARGET",
                        help="instead of the sections: cProfile TARGET for one throughput cell "
                        "(first of --sizes) and print its hot spots")
    parser.add_argument("--top", type=int, default=30, help="profile rows (default 30)")
    parser.add_argument("--summarize", nargs="+", metavar="JSON",
                        help="instead of measuring: summarize --json results of earlier runs")
    parser.add_argument("--pin", metavar="CPU", type=int,
                        help="run every target under taskset -c CPU")
    parser.add_argument("--peers", choices=("python", "c"), default="python",
                        help="throughput peers: Python websockets (default) or wsload (C)")
    parser.add_argument("--before", metavar="DIR",
                        help="the source tree the before-* targets run (git archive of main)")
    parser.add_argument("--quick", action="store_true",
                        help="1 s cells, 1 repeat, 300 idle clients, 3 failover trials (< 60 s)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat, args.idle, args.trials = 1.0, 1, 300, 3
        args.warmup, args.settle = 0.2, 0.3
    args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    args.targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    global BEFORE, WSLOAD
    if args.peers == "c":
        WSLOAD = build_wsload()
    if args.pin is not None:
        PIN[:] = ["taskset", "-c", str(args.pin)]
    if args.before:
        BEFORE = Path(args.before).resolve()
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [t for t in args.targets if t not in ALL_TARGETS] + [
        s for s in sections if s not in ("throughput", "idle", "failover")]
    if bad:
        parser.error(f"unknown target or section: {', '.join(bad)}")
    if not (0 < args.duration <= 10 and 1 <= args.repeat <= 5 and 1 <= args.idle <= 5000
            and 1 <= args.trials <= 10 and 1 <= args.connections <= 1000):
        parser.error("limits: duration (0, 10], repeat 1-5, idle 1-5000, trials 1-10, "
                     "connections 1-1000")
    raise_nofile()
    args.loadavg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    procs = Procs()
    results: dict[str, list[dict[str, Any]]] = {}
    start = time.monotonic()
    if args.summarize:
        summarize(args.summarize)
        return 0
    if args.profile:
        if args.profile not in PROXIES:
            parser.error(f"--profile takes one of {', '.join(PROXIES)}")
        try:
            profile_target(args, procs, args.profile)
        finally:
            procs.stop_all()
        return 0
    try:
        for section in sections:
            log(f"== {section}")
            results[section] = {"throughput": section_throughput, "idle": section_idle,
                                "failover": section_failover}[section](args, procs)
            procs.stop_all()
    finally:
        procs.stop_all()
    print_tables(args, results)
    log(f"(took {time.monotonic() - start:.0f} s)")
    report_logs(procs)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Client resume under load: many clients dropping and resuming in waves while streaming.

Three processes on 127.0.0.1:

* a streaming backend (``websockets``, its own process): every connection gets numbered
  text messages ``"<n> <padding>"``, ``--rate`` per second, ``--size`` bytes each; it
  counts its connections per client id (the ``x-wspipe-client-id`` header);
* the proxy, in this process (``wspipe_anyio.ProxyServer`` on asyncio + uvloop, or
  trio), with ``resume_window`` on; an observer records each ``parked`` event's count
  of messages possibly lost towards the client;
* ``--clients`` clients (``websockets``, their own process). Every ``--wave-every``
  seconds a random ``--wave`` fraction of the connected clients drops its connection
  abruptly (``transport.abort()``: no Close frame), stays away ``--away`` seconds
  (uniform in the range), and reconnects with the same client id (a 409 — the proxy has
  not noticed the drop yet — is retried after 50 ms).

Each client checks its stream: a message numbered at or below the last one it saw is a
duplicate or a reordering; a jump forward anywhere but at the first message after a
resume is a loss. The jump at a resume — messages written to the socket that died — must
not exceed the proxy's count of possibly lost messages for that client's drops (in total
per client id); everything the backend sent after the proxy parked the session
must arrive. The run fails loudly if any check fails.

Two phases run in the same invocation, the reference first: ``steady`` (the same
clients and stream, nobody drops) and ``waves``. The table gives, per phase: messages
relayed, drops and resumes, the checks, the proxy's RSS (start, peak, end), the memory
budget's high water against its limit, the most held for one parked client, and CPU.

    python benchmarks/resume_soak.py                       # 1,000 clients, 20 s per phase
    python benchmarks/resume_soak.py --clients 200 --duration 5
    python benchmarks/resume_soak.py --memory-budget 2MiB --buffer-policy pause --size 1KiB
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import logging
import os
import platform
import random
import resource
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # the benchmarks' own helpers: processes, ports, RSS

from wspipe_anyio import ProxyServer
from wspipe_anyio.units import parse_size
from wspipe_core import BufferFullAction, PipeEvent, PipeEventKind, ProxyConfig, hookimpl

HERE = Path(__file__).resolve()

# ----------------------------------------------------------------------------- backend


async def _backend_main(port: int, rate: float, size: int) -> None:
    from websockets.asyncio.server import serve

    per_client: collections.Counter[str] = collections.Counter()
    sent = 0
    pad = "x" * max(0, size - 8)

    async def stream(ws: Any) -> None:
        nonlocal sent
        per_client[ws.request.headers.get("x-wspipe-client-id", "?")] += 1
        n = 0
        start = time.monotonic()
        with contextlib.suppress(Exception):  # a connection ending is normal
            while True:
                n += 1
                await ws.send(f"{n:07d} {pad}")
                sent += 1
                await asyncio.sleep(max(0.0, start + n / rate - time.monotonic()))

    stop = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set_result, None)
    async with serve(stream, e2e.HOST, port, compression=None, max_size=None,
                     ping_interval=None, backlog=4096):
        print("ready", flush=True)
        await stop
    print(json.dumps({"connections": sum(per_client.values()), "client_ids": len(per_client),
                      "most_per_client_id": max(per_client.values(), default=0),
                      "sent": sent}), flush=True)


# ----------------------------------------------------------------------------- clients


class StreamCheck:
    """What one client saw of its numbered stream."""

    def __init__(self) -> None:
        self.last = 0
        self.received = 0
        self.duplicates = 0
        self.losses = 0  # jumps forward outside a resume
        self.resumed = False  # the next message is the first after a resume
        self.gaps: list[int] = []  # the jump at each resume (written to the dead socket)

    def see(self, n: int) -> None:
        self.received += 1
        if n <= self.last:
            self.duplicates += 1
            return
        if self.resumed:
            self.gaps.append(n - self.last - 1)
            self.resumed = False
        elif n != self.last + 1:
            self.losses += n - self.last - 1
        self.last = n


async def _clients_main(url: str, clients: int, duration: float, wave_every: float,
                        wave: float, away: tuple[float, float], seed: int) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidStatus

    rng = random.Random(seed)
    ids = [str(uuid.uuid4()) for _ in range(clients)]
    checks = {cid: StreamCheck() for cid in ids}
    sockets: dict[str, Any] = dict.fromkeys(ids)
    counts: collections.Counter[str] = collections.Counter()
    away_until: dict[str, float] = {}
    connected: set[str] = set()
    opening = asyncio.Semaphore(50)  # handshakes in progress at once
    stopping = asyncio.Event()

    async def open_(cid: str) -> Any:
        for _ in range(100):  # bounded: a real client gives up some time
            try:
                async with opening:
                    return await connect(url + cid, compression=None, max_size=None,
                                         ping_interval=None, open_timeout=10)
            except InvalidStatus as exc:
                if exc.response.status_code != 409:
                    raise
                counts["retried_409"] += 1  # the proxy has not seen the drop yet
            except (TimeoutError, OSError):
                # The proxy may have answered after we gave up: its session is parked.
                counts["retried_timeout"] += 1
                checks[cid].resumed = True
            await asyncio.sleep(0.05)
        raise RuntimeError(f"client {cid}: no connection after 100 attempts")

    async def run(cid: str) -> None:
        check = checks[cid]
        while True:
            ws = sockets[cid] = await open_(cid)
            connected.add(cid)
            try:
                async for message in ws:
                    check.see(int(str(message)[:7]))
            except ConnectionClosed:
                pass
            connected.discard(cid)
            if stopping.is_set() or ws.close_code in (1000, 1001):
                return  # a clean end (the run is over)
            # Anything else (1006: the connection died; 1011: the proxy missed our pong)
            # is a blip to a client that can resume: it reconnects.
            await asyncio.sleep(away_until.pop(cid, 0.0) - time.monotonic())
            check.resumed = True
            counts["resumes"] += 1

    tasks = [asyncio.ensure_future(run(cid)) for cid in ids]
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(120):
            while len(connected) < clients and not any(t.done() for t in tasks):
                await asyncio.sleep(0.05)
    print(json.dumps({"event": "connected", "clients": len(connected)}), flush=True)
    deadline = time.monotonic() + duration
    while wave and time.monotonic() + wave_every < deadline:
        await asyncio.sleep(wave_every)
        up = [c for c in ids if c in connected and c not in away_until]
        for cid in rng.sample(up, int(len(up) * wave)):
            away_until[cid] = time.monotonic() + rng.uniform(*away)
            sockets[cid].transport.abort()  # no Close: a network blip
            counts["drops"] += 1
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
    with contextlib.suppress(TimeoutError):  # the last wave comes back
        async with asyncio.timeout(max(away) + 15):
            while len(connected) < clients and not any(t.done() for t in tasks):
                await asyncio.sleep(0.05)
    stopping.set()
    print(json.dumps({"event": "stopping"}), flush=True)
    await asyncio.gather(*(sockets[c].close() for c in list(connected)), return_exceptions=True)
    await asyncio.wait(tasks, timeout=15)
    pending = sum(1 for t in tasks if not t.done())
    errors = [repr(t.exception()) for t in tasks
              if t.done() and not t.cancelled() and t.exception() is not None]
    print(json.dumps({
        "event": "result", "drops": counts["drops"], "resumes": counts["resumes"],
        "retried_409": counts["retried_409"], "retried_timeout": counts["retried_timeout"],
        "pending": pending, "errors": errors[:5],
        "received": sum(c.received for c in checks.values()),
        "duplicates": sum(c.duplicates for c in checks.values()),
        "losses": sum(c.losses for c in checks.values()),
        "gaps": {cid: c.gaps for cid, c in checks.items() if c.gaps},
    }), flush=True)


# ----------------------------------------------------------------------------- proxy side


class ParkLog:
    """Each ``parked`` event's count of messages possibly lost towards the client."""

    def __init__(self) -> None:
        self.by_client: dict[str, list[int]] = collections.defaultdict(list)
        self.expired = 0

    @hookimpl
    def wspipe_pipe_event(self, event: PipeEvent) -> None:
        if event.kind is PipeEventKind.PARKED:
            lost = int(event.extra.get("possibly_lost_to_client", 0))
            self.by_client[event.pipe.client_id].append(lost)
        elif event.kind is PipeEventKind.EXPIRED:
            self.expired += 1


class Policy:
    """The buffer policy chosen with ``--buffer-policy``."""

    def __init__(self, action: BufferFullAction) -> None:
        self.action = action

    @hookimpl
    def wspipe_buffer_full(self) -> BufferFullAction:
        return self.action


def cpu_self() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def phase(args: argparse.Namespace, backend_url: str, waves: bool) -> dict[str, Any]:
    parks = ParkLog()
    plugins: list[object] = [parks]
    if args.buffer_policy != "close":
        plugins.append(Policy(BufferFullAction(args.buffer_policy.replace("-", "_"))))
    config = ProxyConfig(backends=(backend_url,), max_connections=20_000,
                         resume_window=args.resume_window, buffer_limit=args.buffer_limit,
                         memory_budget=args.memory_budget,
                         max_message_size=min(args.buffer_limit, 1 << 20),
                         ping_interval=args.ping_interval,
                         ping_timeout=2 * args.ping_interval)
    pid = os.getpid()
    rss: list[int] = []
    held_max = 0
    async with ProxyServer(config, listen=[(e2e.HOST, 0)], plugins=plugins) as server:
        rss_start = e2e.rss_kib(pid)
        cpu_start = cpu_self()
        cmd = [sys.executable, str(HERE), "_clients", "--url",
               f"ws://{e2e.HOST}:{server.port}/", "--clients", str(args.clients),
               "--duration", str(args.duration), "--wave-every", str(args.wave_every),
               "--wave", str(args.wave if waves else 0), "--away", args.away,
               "--seed", str(args.seed)]
        result: dict[str, Any] = {}
        async with await anyio.open_process(cmd, cwd=e2e.ROOT,
                                            stderr=subprocess.STDOUT) as clients:
            assert clients.stdout is not None

            async def read() -> None:
                buffered = b""
                async for chunk in clients.stdout:  # type: ignore[union-attr]
                    buffered += chunk
                    *lines, buffered = buffered.split(b"\n")
                    for line in lines:
                        if line.startswith(b'{"event": "result"'):
                            result.update(json.loads(line))
                        elif not line.startswith(b"{"):
                            print(line.decode(errors="replace"), file=sys.stderr)

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                with anyio.fail_after(args.duration + 240):
                    while clients.returncode is None:
                        rss.append(e2e.rss_kib(pid))
                        held_max = max([held_max, *(p.held_for_client for p in server.pipes())])
                        await anyio.sleep(0.25)
                    await clients.wait()
        cpu = cpu_self() - cpu_start
        stats = server.stats
        budget = server.budget
        row = {
            "phase": "waves" if waves else "steady", "rss_start": rss_start,
            "rss_peak": max(rss, default=rss_start), "rss_end": e2e.rss_kib(pid),
            "cpu": cpu, "messages_out": stats.messages_out, "parked": stats.parked,
            "client_resumes": stats.client_resumes, "expired": stats.resume_expired,
            "possibly_lost_to_client": stats.possibly_lost_to_client,
            "budget_high_water": budget.high_water,
            "budget_limit": args.memory_budget, "held_max": held_max,
            "closed": dict(stats.clients_closed), "dropped": stats.messages_dropped,
        }
    gaps: dict[str, list[int]] = result.get("gaps", {})
    # Per client: what its stream skipped at its resumes is at most what the proxy
    # counted as written to its dead connections.
    over = sum(1 for cid, seen in gaps.items() if sum(seen) > sum(parks.by_client.get(cid, [])))
    row.update({k: result.get(k) for k in ("drops", "resumes", "retried_409",
                                            "retried_timeout", "received",
                                            "duplicates", "losses", "pending", "errors")})
    row["gap_total"] = sum(sum(g) for g in gaps.values())
    row["clients_over_count"] = over
    return row


def check(row: dict[str, Any], clients: int) -> list[str]:
    """What went wrong in a phase (nothing, if the promise held)."""
    problems = []
    for key in ("duplicates", "losses", "clients_over_count", "pending",
                "expired", "dropped"):
        if row.get(key):
            problems.append(f"{key} = {row[key]}")
    if row.get("errors"):
        problems.append(f"client errors: {row['errors']}")
    if (row.get("resumes") or 0) > row["client_resumes"]:  # (a client-side timeout retry
        # the proxy had answered resumes too: more resumes than reconnects is fine)
        problems.append(f"{row['resumes']} reconnects but {row['client_resumes']} resumes")
    if row["budget_high_water"] > row["budget_limit"]:
        problems.append("memory budget exceeded")
    return problems


def main(argv: list[str]) -> int:
    if argv and argv[0].startswith("_"):
        return child(argv)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase (20)")
    parser.add_argument("--rate", type=float, default=5.0,
                        help="messages per second the backend sends each client (5)")
    parser.add_argument("--size", type=parse_size, default=128)
    parser.add_argument("--wave-every", type=float, default=2.0)
    parser.add_argument("--wave", type=float, default=0.25,
                        help="fraction of the connected clients that drop in each wave (0.25)")
    parser.add_argument("--away", default="0.5,3.0",
                        help="seconds a dropped client stays away: min,max (0.5,3.0)")
    parser.add_argument("--resume-window", type=float, default=10.0)
    parser.add_argument("--ping-interval", type=float, default=5.0,
                        help="keepalive ping interval (5; the timeout is twice that): how "
                             "often a client's reading is confirmed, which bounds the "
                             "possibly-lost count")
    parser.add_argument("--buffer-limit", type=parse_size, default=parse_size("256KiB"))
    parser.add_argument("--memory-budget", type=parse_size, default=parse_size("64MiB"))
    parser.add_argument("--buffer-policy", choices=("close", "pause", "drop-oldest"),
                        default="close")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", metavar="FILE", help="write the proxy's log (INFO) here")
    args = parser.parse_args(argv)
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.INFO,
                            format="%(asctime)s %(name)s %(levelname)s %(message)s")
    away = [float(x) for x in args.away.split(",")]
    if (not 1 <= args.clients <= 5000 or not 0 < args.duration <= 300
            or not 0 < args.rate <= 1000 or not 0 <= args.wave <= 1 or len(away) != 2
            or not 0 <= away[0] <= away[1] < args.resume_window):
        parser.error("--clients in [1, 5000], --duration in (0, 300], --rate in (0, 1000], "
                     "--wave in [0, 1], --away min,max below --resume-window")
    e2e.raise_nofile()
    e2e.use_uvloop()
    port = e2e.free_port()
    backend = subprocess.Popen(
        [sys.executable, str(HERE), "_backend", "--port", str(port), "--rate", str(args.rate),
         "--size", str(args.size)], cwd=e2e.ROOT, text=True, stdout=subprocess.PIPE)
    rows = []
    try:
        e2e.wait_port(port, backend)
        for waves in (False, True):
            rows.append(anyio.run(phase, args, f"ws://{e2e.HOST}:{port}", waves))
    finally:
        backend.send_signal(signal.SIGTERM)
        try:
            out, _ = backend.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            backend.kill()
            out, _ = backend.communicate(timeout=5)
    seen = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    backend_view = seen[-1] if seen else {}
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nClient resume soak: {args.clients} clients x {args.rate:g} msg/s of "
          f"{e2e.size_label(args.size)}, {args.duration:g} s per phase; waves of "
          f"{args.wave:.0%} every {args.wave_every:g} s, away {args.away} s; resume_window "
          f"{args.resume_window:g} s, buffer_limit {e2e.size_label(args.buffer_limit)}, "
          f"memory_budget {e2e.size_label(args.memory_budget)}, policy {args.buffer_policy}; "
          f"python {platform.python_version()}, load average {load}\n")
    print("| phase | relayed to clients | drops / resumes (retried after 409 + timeout) "
          "| duplicates / losses | gap at resumes (counted as possibly lost) "
          "| proxy RSS start / peak / end MiB "
          "| budget high water | most held for one client | CPU s |")
    print("|---|---:|---|---|---|---|---:|---:|---:|")
    failed = False
    if (backend_view.get("connections") != 2 * args.clients
            or backend_view.get("most_per_client_id") != 1):
        failed = True
        print("FAILED: the backend saw a new connection for a resumed session", file=sys.stderr)
    for r in rows:
        print(f"| {r['phase']} | {r['messages_out']:,} | {r['drops']} / {r['client_resumes']} "
              f"({r['retried_409']} + {r['retried_timeout']}) | {r['duplicates']} / "
              f"{r['losses']} | {r['gap_total']} "
              f"({r['possibly_lost_to_client']}) | {r['rss_start'] / 1024:.0f} / "
              f"{r['rss_peak'] / 1024:.0f} / {r['rss_end'] / 1024:.0f} | "
              f"{r['budget_high_water'] / 1024:,.0f} KiB | {r['held_max']} msgs | "
              f"{r['cpu']:.1f} |")
        problems = check(r, args.clients)
        if problems:
            failed = True
            print(f"FAILED ({r['phase']}): " + "; ".join(problems), file=sys.stderr)
    print(f"\nThe backend saw {backend_view.get('connections')} connections for "
          f"{backend_view.get('client_ids')} client ids (at most "
          f"{backend_view.get('most_per_client_id')} per id) and sent "
          f"{backend_view.get('sent', 0):,} messages.")
    return 1 if failed else 0


def child(argv: list[str]) -> int:
    role = argv[0]
    parser = argparse.ArgumentParser(prog=f"resume_soak.py {role}")
    parser.add_argument("--port", type=int)
    parser.add_argument("--rate", type=float, default=5.0)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--url")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--wave-every", type=float, default=2.0)
    parser.add_argument("--wave", type=float, default=0.25)
    parser.add_argument("--away", default="0.5,3.0")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv[1:])
    e2e.raise_nofile()
    e2e.use_uvloop()
    if role == "_backend":
        asyncio.run(_backend_main(args.port, args.rate, args.size))
    elif role == "_clients":
        lo, hi = (float(x) for x in args.away.split(","))
        asyncio.run(_clients_main(args.url, args.clients, args.duration, args.wave_every,
                                  args.wave, (lo, hi), args.seed))
    else:
        raise SystemExit(f"unknown role {role}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``--workers`` throughput and the store's per-message cost, over loopback.

Targets, each its own process tree, measured in the same run and interleaved
(repetition by repetition, so each pair sees the same minute of machine load):

``nostore``   ``wspipe serve`` without a store (the reference)
``store``     ``wspipe serve --store redis://...`` (one process)
``workers2``  ``wspipe serve --store ... --workers 2`` (a supervisor and two workers
              sharing the port with SO_REUSEPORT)

The load generator and the echo backend are ``wsload`` (``benchmarks/wsload.c``, one
thread each, epoll), compiled here with ``gcc -O2 ... -lcrypto`` into the ignored
``benchmarks/.build/``: on 2 cores a Python load generator and backend took most of the
second core and hid what a second worker adds. ``wsload`` costs a few µs of CPU per
round trip, nearly all of it the kernel's loopback (it is reported: ``peers us/msg``).
A ``redis-server`` is started on a free loopback port (``--save ''``). The load is one
``wsload load`` with ``--connections`` clients, each keeping ``--depth`` binary messages
in flight, every echo checked (order, length, content). Reported per run: round trips
per second, the target's CPU (supervisor and workers) per round trip, the peers' CPU
(``wsload`` load + echo + redis) per round trip, and the CPU other processes on the
machine took meanwhile (``/proc/stat`` busy time minus ours, in cores), which says when
a run competed with something else.

    python benchmarks/workers.py --sizes 64,1KiB --repeat 5 --duration 4
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from e2e import (  # noqa: E402  (a script beside this one)
    HOST,
    PER_CLIENT,
    LineReader,
    Procs,
    build_wsload,
    cpu_seconds,
    free_port,
    log,
    size_label,
    wait_port,
)

TARGETS = ("nostore", "store", "workers2")


def tree(pid: int) -> list[int]:
    """``pid`` and its children (the workers of a supervisor)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            out += [int(c) for c in (task / "children").read_text().split()]
    return out


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for p in tree(pid):
            with contextlib.suppress(OSError, ValueError):
                total += cpu_seconds(p)
    return total


def machine_busy() -> float:
    """CPU seconds every core spent not idle since boot (``/proc/stat``)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def start_target(procs: Procs, target: str, backend: str, store: str) -> Any:
    port = free_port()
    cmd = [sys.executable, "-m", "wspipe_anyio", "serve", "--listen", f"{HOST}:{port}",
           "--backend", backend, "--log-level", "warning", "--no-entrypoints",
           "--max-connections", "20000", "--async-lib", "asyncio"]
    if target != "nostore":
        cmd += ["--store", store]
    if target == "workers2":
        cmd += ["--workers", "2"]
    proc = procs.start(target, cmd, port)
    if target == "workers2":  # both workers listening
        deadline = time.monotonic() + 15
        while len(tree(proc.pid)) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
    return proc


def load(wsload: Path, port: int, args: argparse.Namespace, size: int, target: int,
         peers: list[int]) -> dict[str, float]:
    """One closed-loop run against ``port``; rates and CPU between its start and stop."""
    child = subprocess.Popen(
        [str(wsload), "load", HOST, str(port), PER_CLIENT, str(args.connections),
         str(args.depth), str(size), str(args.duration), str(args.warmup)],
        text=True, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert child.stdout is not None
    lines = LineReader(child.stdout)
    marks: dict[str, tuple[float, float, float]] = {}
    result: dict[str, Any] | None = None
    timeout = args.duration + args.warmup + 60
    try:
        while result is None:
            message = json.loads(lines.readline(timeout))
            if message["event"] in ("start", "stop"):
                marks[message["event"]] = (tree_cpu([target]),
                                           tree_cpu([*peers, child.pid]), machine_busy())
            elif message["event"] == "result":
                result = message
    finally:
        try:
            child.wait(timeout)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait(5)
    if child.returncode:
        raise RuntimeError(f"wsload load failed with {child.returncode}")
    (t0, p0, m0), (t1, p1, m1) = marks["start"], marks["stop"]
    n, elapsed = result["messages"], result["elapsed"]
    return {"rate": n / elapsed, "cpu_us": (t1 - t0) / n * 1e6,
            "peers_us": (p1 - p0) / n * 1e6,
            "other_cores": max(0.0, (m1 - m0) - (t1 - t0) - (p1 - p0)) / elapsed}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,1KiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--depth", type=int, default=32, help="messages in flight per client")
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--json", help="write every run and the medians here")
    args = parser.parse_args(argv)
    sizes = [int(s[:-3]) * 1024 if s.endswith("KiB") else int(s) for s in args.sizes.split(",")]
    targets = args.targets.split(",")
    wsload = build_wsload()
    procs = Procs()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", HOST,
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_port(redis_port, None)
        store = f"redis://{HOST}:{redis_port}/0"
        backend_port = free_port()
        backend = procs.start("backend", [str(wsload), "echo", str(backend_port)],
                              backend_port)
        backend_url = f"ws://{HOST}:{backend_port}"
        peers = [backend.pid, redis.pid]
        log(f"load average before: {os.getloadavg()}")
        rows: list[dict[str, Any]] = []
        runs_out: list[dict[str, Any]] = []
        for size in sizes:
            runs: dict[str, list[dict[str, float]]] = {t: [] for t in targets}
            for rep in range(args.repeat):
                for target in targets:
                    proc = start_target(procs, target, backend_url, store)
                    run = load(wsload, proc.port, args, size, proc.pid, peers)
                    run["load1"] = os.getloadavg()[0]
                    runs[target].append(run)
                    runs_out.append({"size": size_label(size), "target": target,
                                     "rep": rep + 1, **run})
                    log(f"  {size_label(size):>6} {target:<9} run {rep + 1}: "
                        f"{run['rate']:>9,.0f} msgs/s, target CPU {run['cpu_us']:6.1f} us/msg,"
                        f" peers {run['peers_us']:5.1f} us/msg, other processes "
                        f"{run['other_cores']:.2f} cores, load {run['load1']:.2f}")
                    proc.stop()
                    procs.items.remove(proc)
            for target in targets:
                row: dict[str, Any] = {
                    "size": size_label(size), "target": target,
                    **{k: statistics.median(r[k] for r in runs[target])
                       for k in ("rate", "cpu_us", "peers_us", "other_cores")}}
                for ref in ("nostore", "store"):
                    if target != ref and ref in runs:
                        row[f"rate_vs_{ref}"] = statistics.median(
                            a["rate"] / b["rate"]
                            for a, b in zip(runs[target], runs[ref], strict=True))
                        row[f"cpu_vs_{ref}"] = statistics.median(
                            a["cpu_us"] / b["cpu_us"]
                            for a, b in zip(runs[target], runs[ref], strict=True))
                rows.append(row)
        log(f"load average after: {os.getloadavg()}")
        print(f"{'size':>6} {'target':<9} {'msgs/s':>9} {'CPU us/msg':>10} {'peers us':>8} "
              f"{'others':>6} {'rate/nostore':>12} {'rate/store':>10} {'CPU/nostore':>11}")
        for row in rows:
            print(f"{row['size']:>6} {row['target']:<9} {row['rate']:>9,.0f} "
                  f"{row['cpu_us']:>10.1f} {row['peers_us']:>8.1f} {row['other_cores']:>6.2f} "
                  f"{row.get('rate_vs_nostore', 1.0):>12.2f} "
                  f"{row.get('rate_vs_store', float('nan')):>10.2f} "
                  f"{row.get('cpu_vs_nostore', 1.0):>11.2f}")
        if args.json:
            Path(args.json).write_text(json.dumps(
                {"args": vars(args), "runs": runs_out, "medians": rows}, indent=1) + "\n")
    finally:
        procs.stop_all()
        redis.kill()
        redis.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

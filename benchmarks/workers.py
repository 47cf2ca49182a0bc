"""``--workers`` throughput and the store's per-message cost, over loopback.

Targets, each its own process tree, measured in the same run and interleaved
(repetition by repetition, so each pair sees the same minute of machine load):

``nostore``   ``wspipe serve`` without a store (the reference)
``store``     ``wspipe serve --store redis://...`` (one process)
``workers2``  ``wspipe serve --store ... --workers 2`` (a supervisor and two workers
              sharing the port with SO_REUSEPORT)

Each runs against the same echo backend (``e2e.py _backend``, websockets on uvloop) and a
``redis-server`` this script starts on a free loopback port (``--save ''``). The load is
``--loadgens`` closed-loop load generators (``e2e.py _load``) at once, each with
``--connections`` clients; the result is the sum of their round trips per second, and the
CPU time of the target's processes (supervisor and workers) per round trip.

    python benchmarks/workers.py --sizes 64,1KiB --repeat 3 --duration 4
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from e2e import (  # noqa: E402  (a script beside this one)
    HOST,
    PER_CLIENT,
    Procs,
    cpu_seconds,
    free_port,
    log,
    run_load,
    size_label,
    start_backend,
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


def tree_cpu(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(p)
    return total


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


def load(url: str, args: argparse.Namespace, size: int, pid: int) -> tuple[float, float]:
    """Run ``--loadgens`` generators at once; (round trips/s summed, target CPU µs each)."""
    results: list[tuple[dict[str, Any], float]] = []
    cpu0 = tree_cpu(pid)
    threads = []
    for _ in range(args.loadgens):
        cmd = ["_load", "--url", url, "--conns", str(args.connections), "--size", str(size),
               "--duration", str(args.duration), "--warmup", str(args.warmup)]
        thread = threading.Thread(target=lambda c=cmd: results.append(
            run_load(c, os.getpid(), timeout=args.duration + args.warmup + 60)))
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(args.duration + args.warmup + 90)
    cpu = tree_cpu(pid) - cpu0  # (includes warm-up: same for every target)
    messages = sum(r["messages"] for r, _ in results)
    rate = sum(r["messages"] / r["elapsed"] for r, _ in results)
    total = messages * (args.duration + args.warmup) / args.duration
    return rate, cpu / total * 1e6 if total else float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="64,1KiB")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--loadgens", type=int, default=2)
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args(argv)
    sizes = [int(s[:-3]) * 1024 if s.endswith("KiB") else int(s) for s in args.sizes.split(",")]
    targets = args.targets.split(",")
    procs = Procs()
    redis_port = free_port()
    redis = subprocess.Popen(["redis-server", "--port", str(redis_port), "--bind", HOST,
                              "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    try:
        wait_port(redis_port, None)
        store = f"redis://{HOST}:{redis_port}/0"
        backend = start_backend(procs)
        backend_url = f"ws://{HOST}:{backend.port}"
        log(f"load average before: {os.getloadavg()}")
        rows = []
        for size in sizes:
            runs: dict[str, list[tuple[float, float]]] = {t: [] for t in targets}
            for rep in range(args.repeat):
                for target in targets:
                    proc = start_target(procs, target, backend_url, store)
                    url = f"ws://{HOST}:{proc.port}{PER_CLIENT}"
                    rate, cpu = load(url, args, size, proc.pid)
                    runs[target].append((rate, cpu))
                    log(f"  {size_label(size):>6} {target:<9} run {rep + 1}: {rate:>9,.0f} "
                        f"msgs/s, target CPU {cpu:6.1f} us/msg, load {os.getloadavg()[0]:.2f}")
                    proc.stop()
                    procs.items.remove(proc)
            for target in targets:
                row = {"size": size_label(size), "target": target,
                       "rate": statistics.median(r for r, _ in runs[target]),
                       "cpu_us": statistics.median(c for _, c in runs[target])}
                if target != "nostore" and "nostore" in runs:
                    row["rate_vs_nostore"] = statistics.median(
                        a[0] / b[0] for a, b in zip(runs[target], runs["nostore"], strict=True))
                if target == "workers2" and "store" in runs:
                    row["rate_vs_store"] = statistics.median(
                        a[0] / b[0] for a, b in zip(runs[target], runs["store"], strict=True))
                rows.append(row)
        log(f"load average after: {os.getloadavg()}")
        print(f"{'size':>6} {'target':<9} {'msgs/s':>9} {'CPU us/msg':>10} {'vs nostore':>10}"
              f" {'vs store':>9}")
        for row in rows:
            print(f"{row['size']:>6} {row['target']:<9} {row['rate']:>9,.0f} "
                  f"{row['cpu_us']:>10.1f} {row.get('rate_vs_nostore', 1.0):>10.2f} "
                  f"{row.get('rate_vs_store', float('nan')):>9.2f}")
    finally:
        procs.stop_all()
        redis.kill()
        redis.wait(5)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

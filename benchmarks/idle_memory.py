"""Where the memory of an idle pipe goes: wspipe in-process under tracemalloc.

Runs ``wspipe_anyio.ProxyServer`` in this process (asyncio + uvloop, or trio), an
echo backend and ``--clients`` idle clients in child processes (the roles of
``benchmarks/e2e.py``). Each client connects and completes one echo, so every
pipe has an open link; then the script prints VmRSS per pipe and the Python
allocation sites that grew, per pipe, grouped by ``--group`` (file or line).

    python benchmarks/idle_memory.py --clients 1000 [--async-lib trio] [--group line]

tracemalloc slows the proxy and adds its own overhead to RSS: use the RSS figure
of ``e2e.py --sections idle`` for the number, this script for the breakdown.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import anyio

from wspipe_anyio import ProxyServer
from wspipe_anyio.cli import run_async
from wspipe_core import ProxyConfig

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e  # noqa: E402  (the benchmark's helpers and child roles)


async def measure(args: argparse.Namespace, backend_port: int) -> None:
    config = ProxyConfig(backends=(f"ws://{e2e.HOST}:{backend_port}",), max_connections=20000)
    port = e2e.free_port()
    async with ProxyServer(config, listen=[(e2e.HOST, port)]) as server:
        url = f"ws://{e2e.HOST}:{port}{e2e.PER_CLIENT}"

        def spawn(n: int) -> subprocess.Popen[str]:
            return subprocess.Popen(
                [sys.executable, str(HERE / "e2e.py"), "_idle", "--url", url, "--conns", str(n),
                 "--concurrency", "32"],  # under max_pending_per_peer (64)
                text=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE)

        async def ready(child: subprocess.Popen[str]) -> None:
            assert child.stdout is not None
            line = await anyio.to_thread.run_sync(child.stdout.readline)
            if not line:
                raise RuntimeError("idle clients failed")
            json.loads(line)

        async def finish(child: subprocess.Popen[str]) -> None:
            assert child.stdin is not None
            child.stdin.write("done\n")
            child.stdin.flush()
            await anyio.to_thread.run_sync(child.wait)

        warm = spawn(5)
        await ready(warm)
        await finish(warm)
        await anyio.sleep(0.5)
        gc.collect()
        rss0 = e2e.rss_kib(_pid())
        types0 = _types()
        snap0 = tracemalloc.take_snapshot()
        child = spawn(args.clients)
        await ready(child)
        await anyio.sleep(1.0)
        gc.collect()
        snap1 = tracemalloc.take_snapshot()
        rss1 = e2e.rss_kib(_pid())
        types1 = _types()
        pipes = len(server.pipes())
        await finish(child)
    n = args.clients
    stats = snap1.compare_to(snap0, "lineno" if args.group == "line" else "filename")
    traced = sum(s.size_diff for s in stats)
    print(f"\n{n} idle pipes ({pipes} live at measurement) on {args.async_lib}: VmRSS "
          f"{rss0:,} -> {rss1:,} KiB = {(rss1 - rss0) / n:.1f} KiB per pipe (tracemalloc "
          f"overhead included); Python heap traced: {traced / n / 1024:.1f} KiB per pipe\n")
    print("| bytes per pipe | blocks per pipe | where |")
    print("|---:|---:|---|")
    for stat in stats[: args.top]:
        frame = stat.traceback[0]
        where = f"{_short(frame.filename)}:{frame.lineno}" if args.group == "line" else _short(
            frame.filename)
        print(f"| {stat.size_diff / n:,.0f} | {stat.count_diff / n:.1f} | {where} |")
    print("\n| live objects per pipe | type |")
    print("|---:|---|")
    grown = sorted(((types1[t] - types0.get(t, 0)) / n, t) for t in types1)
    for count, name in reversed(grown[-args.top:]):
        print(f"| {count:.1f} | {name} |")


def _types() -> dict[str, int]:
    """Live objects tracked by the garbage collector, by type."""
    counts: dict[str, int] = {}
    for obj in gc.get_objects():
        name = f"{type(obj).__module__}.{type(obj).__qualname__}"
        counts[name] = counts.get(name, 0) + 1
    return counts


def _pid() -> int:
    import os

    return os.getpid()


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--async-lib", choices=("asyncio", "trio"), default="asyncio")
    parser.add_argument("--group", choices=("file", "line"), default="line")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 5000:
        parser.error("--clients must be 1-5000")
    e2e.raise_nofile()
    procs = e2e.Procs()
    try:
        backend = e2e.start_backend(procs)
        tracemalloc.start(1)
        start = time.monotonic()
        run_async(lambda: measure(args, backend.port), args.async_lib)
        print(f"\n(took {time.monotonic() - start:.0f} s)", file=sys.stderr)
    finally:
        procs.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())

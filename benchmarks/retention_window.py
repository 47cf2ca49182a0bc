"""The retained window of at-least-once delivery under load: how much waits for a pong.

A proxy (in this process, asyncio, uvloop when installed) with ``--delivery
at-least-once`` relays ``--connections`` closed-loop clients (the load generator of
``e2e.py``, its own process) to an echo backend (also ``e2e.py``'s, its own process).
Every ``--sample`` seconds the proxy's pipes are read: how many client messages each
holds written-but-unconfirmed, and their bytes. The table gives the median, p99 and
maximum per pipe and over the whole proxy, so a reader can check the window stays
bounded (one confirmation ping in flight per link: about one round trip of messages).

    python benchmarks/retention_window.py                  # 50 connections, 64 B and 1 KiB
    python benchmarks/retention_window.py --sizes 64KiB --duration 5
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))
import e2e  # the benchmarks' own helpers: processes, load generator

from wspipe_anyio import ProxyServer
from wspipe_anyio.units import parse_size
from wspipe_core import ProxyConfig


async def measure(size: int, connections: int, duration: float, sample: float,
                  backend_url: str, inflight: int) -> dict[str, float]:
    config = ProxyConfig(backends=(backend_url,), delivery="at-least-once",
                         max_connections=20_000)
    per_pipe_msgs: list[float] = []
    per_pipe_bytes: list[float] = []
    total_bytes: list[float] = []
    async with ProxyServer(config, listen=[(e2e.HOST, 0)]) as server:
        cmd = [sys.executable, str(e2e.HERE / "e2e.py"), "_load", "--url",
               f"ws://{e2e.HOST}:{server.port}{e2e.PER_CLIENT}", "--conns", str(connections),
               "--size", str(size), "--duration", str(duration), "--warmup", "1",
               "--inflight", str(inflight)]
        async with await anyio.open_process(cmd, cwd=e2e.ROOT) as load:
            done = anyio.Event()

            async def wait_for_load() -> None:
                await load.wait()
                done.set()

            async with anyio.create_task_group() as tg:
                tg.start_soon(wait_for_load)
                with anyio.fail_after(duration + 60):
                    while not done.is_set():
                        pipes = server.pipes()
                        per_pipe_msgs += [p.unconfirmed_messages for p in pipes]
                        per_pipe_bytes += [p.unconfirmed_bytes for p in pipes]
                        total_bytes.append(sum(p.unconfirmed_bytes for p in pipes))
                        await anyio.sleep(sample)
        stats = server.stats
        confirmations = stats.confirmations
        relayed = stats.messages_in
    return {"size": size, "samples": len(total_bytes),
            "msgs_p50": e2e.pctl(per_pipe_msgs, 0.5), "msgs_p99": e2e.pctl(per_pipe_msgs, 0.99),
            "msgs_max": max(per_pipe_msgs, default=0),
            "bytes_p99": e2e.pctl(per_pipe_bytes, 0.99), "bytes_max": max(per_pipe_bytes,
                                                                          default=0),
            "total_p99": e2e.pctl(total_bytes, 0.99), "total_max": max(total_bytes, default=0),
            "messages": relayed, "per_confirmation": relayed / confirmations
            if confirmations else float("nan")}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,1KiB")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--sample", type=float, default=0.01)
    parser.add_argument("--inflight", type=int, default=16,
                        help="messages each connection keeps outstanding (16)")
    args = parser.parse_args(argv)
    if (not 1 <= args.connections <= 2000 or not 0 < args.duration <= 60
            or not 1 <= args.inflight <= 1000):
        parser.error("--connections must be in [1, 2000], --duration in (0, 60] and "
                     "--inflight in [1, 1000]")
    e2e.use_uvloop()
    procs = e2e.Procs()
    rows = []
    try:
        backend = e2e.start_backend(procs)
        for size in (parse_size(s) for s in args.sizes.split(",")):
            rows.append(anyio.run(measure, size, args.connections, args.duration, args.sample,
                                  f"ws://{e2e.HOST}:{backend.port}", args.inflight))
    finally:
        procs.stop_all()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nRetained window, at-least-once, {args.connections} connections x "
          f"{args.inflight} in flight, "
          f"python {platform.python_version()}, load average {load}\n")
    print("| size | samples | per pipe msgs p50 / p99 / max | per pipe bytes p99 / max "
          "| whole proxy bytes p99 / max | messages per confirmation |")
    print("|---:|---:|---|---|---|---:|")
    for r in rows:
        print(f"| {e2e.size_label(int(r['size']))} | {r['samples']:.0f} | {r['msgs_p50']:.0f} / "
              f"{r['msgs_p99']:.0f} / {r['msgs_max']:.0f} | {r['bytes_p99']:,.0f} / "
              f"{r['bytes_max']:,.0f} | {r['total_p99']:,.0f} / {r['total_max']:,.0f} | "
              f"{r['per_confirmation']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

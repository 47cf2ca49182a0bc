"""Instructions per round trip through a proxy, counted by callgrind: stable under load.

On a shared machine, msgs/s and CPU seconds swing with whatever else runs; the
number of instructions the proxy executes per message does not. For each target
(the same names as ``benchmarks/e2e.py``) this script starts an echo backend, runs
the target under ``valgrind --tool=callgrind``, sends ``--warmup`` round trips of
``--size`` bytes over one connection, zeroes the counters (``callgrind_control
-z``), sends ``--messages`` more, dumps the counters (``callgrind_control -d``) and
reports the target's instructions (Ir) per round trip (a message each way).

    python benchmarks/callgrind_relay.py --targets wspipe-asyncio,before-asyncio \\
        --before /tmp/wspipe-before --sizes 64,1KiB,64KiB          # ~3 min
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import e2e  # noqa: E402  (the targets, backends and processes of the end-to-end benchmark)

from wspipe_anyio.units import parse_size  # noqa: E402


def wait_listening(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((e2e.HOST, port)) == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


async def round_trips(url: str, size: int, count: int) -> None:
    from websockets.asyncio.client import connect

    payload = bytes(size)
    async with connect(url, compression=None, max_size=None, ping_interval=None,
                       open_timeout=60) as ws:
        for _ in range(count):
            await ws.send(payload)
            reply = await ws.recv()
            if len(reply) != size:
                raise RuntimeError(f"echo of {len(reply)} bytes, sent {size}")


def ir_of(path: Path) -> int:
    """The instruction count (Ir) in a callgrind dump."""
    text = path.read_text(errors="replace")
    match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no totals in {path}")
    return int(match.group(1))


def measure(target: str, size: int, args: argparse.Namespace, procs: e2e.Procs,
            backend_url: str) -> float:
    out_dir = procs.log_dir / f"callgrind-{target}-{size}"
    out_dir.mkdir(parents=True, exist_ok=True)
    e2e.PIN[:] = ["valgrind", "--tool=callgrind", "--quiet",
                  f"--callgrind-out-file={out_dir}/callgrind.out.%p"]
    original = e2e.wait_port
    e2e.wait_port = lambda port, proc, timeout=0: wait_listening(port, 180)  # type: ignore
    try:
        proxy = e2e.start_target(procs, target, [backend_url])
    finally:
        e2e.wait_port = original
        e2e.PIN[:] = []
    try:
        url = e2e.target_url(target, {target: proxy}, 0)
        asyncio.run(round_trips(url, size, args.warmup))
        subprocess.run(["callgrind_control", "-z", str(proxy.pid)], check=True,
                       capture_output=True, timeout=120)
        asyncio.run(round_trips(url, size, args.messages))
        subprocess.run(["callgrind_control", "-d", str(proxy.pid)], check=True,
                       capture_output=True, timeout=120)
        dumps = sorted(out_dir.glob(f"callgrind.out.{proxy.pid}.*"),
                       key=lambda p: p.stat().st_mtime)
        if not dumps:
            raise RuntimeError(f"no callgrind dump for {target}")
        return ir_of(dumps[-1]) / args.messages
    finally:
        proxy.stop(timeout=60)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--targets", default="wspipe-asyncio,wspipe-trio")
    parser.add_argument("--sizes", default="64,1KiB,64KiB")
    parser.add_argument("--messages", type=int, default=400, help="counted round trips")
    parser.add_argument("--warmup", type=int, default=100, help="round trips first")
    parser.add_argument("--before", metavar="DIR", help="the tree of the before-* targets")
    parser.add_argument("--json", metavar="FILE")
    args = parser.parse_args(argv)
    if not (1 <= args.messages <= 5000 and 0 <= args.warmup <= 5000):
        parser.error("limits: messages 1-5000, warmup 0-5000")
    if args.before:
        e2e.BEFORE = Path(args.before).resolve()
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    procs = e2e.Procs()
    rows: list[dict[str, Any]] = []
    try:
        backend = e2e.start_backend(procs)
        backend_url = f"ws://{e2e.HOST}:{backend.port}"
        for size in sizes:
            for target in targets:
                ir = measure(target, size, args, procs, backend_url)
                rows.append({"size": size, "target": target, "ir_per_round_trip": ir})
                e2e.log(f"  {e2e.size_label(size):>7} {target:<15} {ir:>12,.0f} Ir per round trip")
    finally:
        procs.stop_all()
    print(f"\n### Instructions per round trip (callgrind, 1 connection, {args.messages} round "
          f"trips after {args.warmup})\n")
    print("| size | target | Ir per round trip |")
    print("|---:|---|---:|")
    for r in rows:
        print(f"| {e2e.size_label(r['size'])} | {r['target']} | {r['ir_per_round_trip']:,.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Candidate optimizations from .notes/perf.md, monkeypatched in, to measure before adopting.

Nothing here is used by wspipe. Each candidate patches wspipe_anyio at run time, the way
the owners could implement it properly. Candidates already adopted (the core's fast path
for whole messages, keeping only wsproto's ``Connection`` once open, lazy channel events)
were removed from here once they landed, so no stale copy of the core's code stays.

``s4``  write reports (``*DataSent``) that cannot resume anything only decrement the
        pending count, without a full ``Proxy.handle()``.
``d1``  ``Channel.send`` writes at once when the writer task is idle and nothing is queued
        (no writer task hop): on asyncio with ``transport.write()`` when the transport's
        buffer is empty, on trio with a non-blocking ``send()`` on the raw socket (a partial
        write queues the rest for the writer). The write is reported (``on_sent``) from a
        ``call_soon``/``run_sync_soon`` callback, outside the core's dispatch. It relies on
        anyio's private transport objects: a real implementation needs a public surface.

Commands::

    # end to end: one wspipe process per patch set, same run, with the floor relay
    python benchmarks/experiments/candidates.py e2e --patches none,d1,s4,d1+s4 --floor
    # a patched server by hand
    python benchmarks/experiments/candidates.py serve d1 -- serve --backend ws://...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from wsproto.connection import ConnectionState
from wsproto.events import (
    BytesMessage,
    TextMessage,
)

from wspipe_core import events as ev

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))

_MESSAGE = (TextMessage, BytesMessage)
_OPEN = ConnectionState.OPEN


def apply(patches: set[str]) -> None:
    """Monkeypatch the named candidates into wspipe_core / wspipe_anyio."""
    from wspipe_anyio import connection as connection_mod
    from wspipe_anyio import server as server_mod

    unknown = patches - {"s4", "d1"}
    if unknown:
        raise SystemExit(f"unknown patch: {', '.join(sorted(unknown))}")
    if "s4" in patches:
        feed = server_mod.ProxyServer._feed

        def _feed(self: Any, event: ev.Event) -> None:
            kind = type(event)
            if kind is ev.ClientDataSent:
                pipe = self.proxy._pipes.get(event.conn)  # type: ignore[attr-defined]
                if pipe is not None and not (pipe.link is not None and pipe.link.paused):
                    pipe.pending -= event.nbytes  # type: ignore[attr-defined]
                    return
            elif kind is ev.LinkDataSent:
                link = self.proxy._links.get(event.link)  # type: ignore[attr-defined]
                if link is not None and not (link.pipe is not None and link.pipe.backpressured):
                    link.pending -= event.nbytes  # type: ignore[attr-defined]
                    return
            feed(self, event)

        server_mod.ProxyServer._feed = _feed  # type: ignore[method-assign]
    if "d1" in patches:
        _patch_direct_write(connection_mod)


def _patch_direct_write(connection_mod: Any) -> None:
    """d1: write from ``Channel.send`` when nothing is queued (asyncio streams only)."""
    import asyncio
    import math

    import anyio

    channel = connection_mod.Channel
    send = channel.send

    def direct_send(self: Any, data: bytes) -> None:
        stream = self._stream
        if (stream is None or self._closing or self._outbox
                or not getattr(self, "_writer_idle", False)):
            send(self, data)
            return
        transport = getattr(stream, "_transport", None)
        if transport is not None:  # asyncio
            if stream._protocol.write_event.is_set() and not transport.is_closing():
                transport.write(data)
                asyncio.get_running_loop().call_soon(self._on_sent, len(data))
                return
        elif hasattr(stream, "_trio_socket"):  # trio: no user-space buffer below us
            import trio

            try:
                sent = stream._trio_socket._sock.send(data)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                send(self, data)  # let the writer report the failure
                return
            if sent:
                trio.lowlevel.current_trio_token().run_sync_soon(self._on_sent, sent)
            if sent < len(data):
                send(self, data[sent:])
            return
        send(self, data)

    async def _write_loop(self: Any, stream: Any) -> None:
        # The driver's loop, plus the idle flag that direct_send needs.
        while True:
            while not self._outbox:
                if self._closing:
                    return
                self._writer_wakeup = anyio.Event()
                self._writer_idle = True
                try:
                    await self._writer_wakeup.wait()
                finally:
                    self._writer_idle = False
                    if hasattr(self, "_wake_writer"):  # the driver's lazy events (3a9f281)
                        self._writer_wakeup = None
            chunk = self._take()
            try:
                await stream.send(chunk)
            except connection_mod.SOCKET_ERRORS as exc:
                self._report_eof(f"write failed: {exc!r}")
                self._outbox.clear()
                self._write_scope.deadline = -math.inf
                return
            self._on_sent(len(chunk))

    channel.send = direct_send
    channel._write_loop = _write_loop


def parse_patches(text: str) -> set[str]:
    return set() if text in ("none", "") else {p for p in text.split("+") if p}


# ----------------------------------------------------------------------------- modes


def mode_e2e(args: argparse.Namespace) -> None:
    import e2e

    e2e.raise_nofile()
    procs = e2e.Procs()
    sets = args.patches.split(",")

    def start(patches: str, backend_url: str) -> Any:
        port = e2e.free_port()
        cmd = [sys.executable, str(Path(__file__).resolve()), "serve", patches, "--", "serve",
               "--listen", f"{e2e.HOST}:{port}", "--async-lib", args.async_lib,
               "--log-level", "warning", "--no-entrypoints", "--max-connections", "20000",
               "--backend", backend_url]
        return procs.start(f"patched-{patches}", cmd, port)

    try:
        backend = e2e.start_backend(procs)
        backend_url = f"ws://{e2e.HOST}:{backend.port}"
        size = e2e.parse_size(args.size)
        runs: dict[str, list[tuple[float, float]]] = {p: [] for p in sets}
        servers = {p: start(p, backend_url) for p in sets}
        if args.floor:
            servers[f"floor-{args.async_lib}"] = e2e.start_target(
                procs, f"floor-{args.async_lib}", [backend_url])
            sets = [*sets, f"floor-{args.async_lib}"]
            runs[sets[-1]] = []
        for _ in range(args.repeat):
            for patches, proc in servers.items():
                url = f"ws://{e2e.HOST}:{proc.port}{e2e.PER_CLIENT}"
                result, cpu = e2e.run_load(
                    ["_load", "--url", url, "--conns", "50", "--size", str(size),
                     "--duration", str(args.duration), "--warmup", "0.3"], proc.pid, 60)
                runs[patches].append((result["messages"] / result["elapsed"],
                                      cpu / max(result["messages"], 1) * 1e6))
        for proc in servers.values():
            proc.stop()
        print(f"\n{e2e.size_label(size)}, 50 connections, {args.async_lib}, median of "
              f"{args.repeat} x {args.duration:g} s; load average {os.getloadavg()[0]:.2f}\n")
        print("| patches | msgs/s | proxy CPU us per round trip | idle KiB per pipe |")
        print("|---|---:|---:|---:|")
        for patches in sets:
            rate = statistics.median(r for r, _ in runs[patches])
            cpu = statistics.median(c for _, c in runs[patches])
            idle = float("nan")
            if args.idle and not patches.startswith("floor-"):
                idle = idle_rss(e2e, procs, start(patches, backend_url), args.idle)
            print(f"| {patches} | {rate:,.0f} | {cpu:.0f} | {idle:.1f} |", flush=True)
    finally:
        procs.stop_all()


def idle_rss(e2e: Any, procs: Any, proc: Any, clients: int) -> float:
    url = f"ws://{e2e.HOST}:{proc.port}{e2e.PER_CLIENT}"
    try:
        e2e.run_child(["_idle", "--url", url, "--conns", "1"], timeout=30)
        time.sleep(0.5)
        before = e2e.rss_kib(proc.pid)
        idle = subprocess.Popen([sys.executable, str(BENCH / "e2e.py"), "_idle", "--url", url,
                                 "--conns", str(clients)], text=True, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE)
        assert idle.stdin is not None and idle.stdout is not None
        idle.stdout.readline()
        time.sleep(1.0)
        after = e2e.rss_kib(proc.pid)
        idle.stdin.write("done\n")
        idle.stdin.flush()
        idle.wait(60)
        return float(after - before) / clients
    finally:
        proc.stop()


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        # candidates.py serve PATCHES -- <wspipe arguments>
        patches = parse_patches(argv[1])
        rest = argv[argv.index("--") + 1:] if "--" in argv else argv[2:]
        apply(patches)
        from wspipe_anyio.cli import main as wspipe_main

        return wspipe_main(rest)
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    e2e_p = sub.add_parser("e2e")
    e2e_p.add_argument("--patches", default="none,d1,s4,d1+s4",
                       help="comma-separated patch sets; '+' joins patches; none: no patch")
    e2e_p.add_argument("--size", default="1KiB")
    e2e_p.add_argument("--duration", type=float, default=3.0)
    e2e_p.add_argument("--repeat", type=int, default=3)
    e2e_p.add_argument("--idle", type=int, default=0, help="idle clients for RSS (0: skip)")
    e2e_p.add_argument("--async-lib", choices=("asyncio", "trio"), default="asyncio")
    e2e_p.add_argument("--floor", action="store_true",
                       help="also measure benchmarks/floor_relay.py, interleaved")
    args = parser.parse_args(argv)
    mode_e2e(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

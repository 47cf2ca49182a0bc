"""Candidate optimizations from .notes/perf.md, monkeypatched in, to measure before adopting.

Nothing here is used by wspipe. Each candidate patches wspipe_core/wspipe_anyio at
run time, the way the owners could implement it properly:

``s2``  ``FastProxy``: whole single-frame messages on a live link skip the assembler,
        limits bookkeeping and event re-wrapping; isinstance with a constant tuple (S1+S2).
``s4``  write reports (``*DataSent``) that cannot resume anything only decrement the
        pending count, without a full ``Proxy.handle()``.
``m1``  keep only wsproto's ``Connection`` after the upgrade (drop the handshake objects).
``m2``  driver channels do not allocate wakeup events before their first wait (adopted by
        the driver in 3a9f281; the patch is skipped when the driver already does it).
``d1``  ``Channel.send`` writes at once when the writer task is idle and nothing is queued
        (no writer task hop): on asyncio with ``transport.write()`` when the transport's
        buffer is empty, on trio with a non-blocking ``send()`` on the raw socket (a partial
        write queues the rest for the writer). The write is reported (``on_sent``) from a
        ``call_soon``/``run_sync_soon`` callback, outside the core's dispatch.

Commands::

    # core only (like core_relay.py): today's Proxy vs FastProxy vs bare wsproto
    python benchmarks/experiments/candidates.py core --sizes 64,1KiB
    # end to end: one wspipe process per patch set, same run
    python benchmarks/experiments/candidates.py e2e --patches none,m1,s2+s4,m1+s2+s4 --idle 1000
    # a patched server by hand
    python benchmarks/experiments/candidates.py serve m1+s2 -- serve --backend ws://...
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
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

from wspipe_core import events as ev
from wspipe_core.actions import Action, PauseLink, SendToClient, SendToLink
from wspipe_core.assembler import payload_size
from wspipe_core.info import PipeState
from wspipe_core.link import Link, LinkState
from wspipe_core.pipe import Pipe
from wspipe_core.proxy import Proxy

HERE = Path(__file__).resolve().parent
BENCH = HERE.parent
sys.path.insert(0, str(BENCH))

_MESSAGE = (TextMessage, BytesMessage)
_OPEN = ConnectionState.OPEN


def _proto(ws: Any) -> Any:
    """wsproto's FrameProtocol behind a WSConnection or a bare Connection (with m1)."""
    return getattr(ws, "connection", ws)._proto


def _idle(assembler: Any) -> bool:
    """No message in progress (``MessageAssembler.idle``, or the older ``_parts`` list)."""
    idle = getattr(assembler, "idle", None)
    return bool(idle) if idle is not None else not assembler._parts


class FastProxy(Proxy):
    """S1 + S2: the relay fast path for whole messages on a live link."""

    def _pump_client(self, pipe: Pipe, now: float, out: list[Action]) -> None:
        if pipe.buffer_paused:
            return
        ws = pipe.ws
        for event in ws.events():
            if isinstance(event, _MESSAGE):
                if not self._client_message(pipe, event, now, out):
                    return
            elif isinstance(event, Ping):
                if ws.state is _OPEN:
                    self._send_client(pipe, ws.send(event.response()), out)
            elif isinstance(event, Pong):
                pipe.pong_deadline = None
            elif isinstance(event, CloseConnection):
                self._client_close(pipe, event, now, out)
                return

    def _client_message(self, pipe: Pipe, event: TextMessage | BytesMessage, now: float,
                        out: list[Action]) -> bool:
        link = pipe.link
        if (event.message_finished and _idle(pipe.assembler)
                and link is not None and link.state is LinkState.OPEN
                and pipe.state is PipeState.LINKED):
            data = event.data
            n = payload_size(data) if type(data) is str else len(data)
            if n <= self.config.max_message_size:
                stats = self.stats
                stats.messages_in += 1
                stats.bytes_in += n
                frame = _proto(link.ws).send_data(data, True)
                out.append(SendToLink(link.id, frame))
                link.pending += len(frame)
                link.sent_messages += 1
                if not pipe.backpressured and link.pending > self.config.write_high_water:
                    pipe.backpressured = True
                    self._sync_client_pause(pipe, out)
                return True
        return super()._client_message(pipe, event, now, out)

    def _pump_link(self, link: Link, now: float, out: list[Action]) -> None:
        ws = link.ws
        try:
            for event in ws.events():
                if isinstance(event, _MESSAGE):
                    if not self._link_message(link, event, now, out):
                        return
                elif isinstance(event, AcceptConnection):
                    self._link_opened(link, now, out)
                elif isinstance(event, Ping):
                    if ws.state is _OPEN:
                        self._send_link(link, ws.send(event.response()), out)
                elif isinstance(event, Pong):
                    link.pong_deadline = None
                elif isinstance(event, CloseConnection):
                    self._link_close(link, event, now, out)
                    return
                else:  # RejectConnection, RejectData: the original handles them
                    super()._pump_link(link, now, out)
                    return
        except RemoteProtocolError as exc:
            self._link_failed(link, "handshake", f"bad handshake response: {exc}", now, out)

    def _link_message(self, link: Link, event: TextMessage | BytesMessage, now: float,
                      out: list[Action]) -> bool:
        pipe = link.pipe
        if (event.message_finished and _idle(link.assembler) and pipe is not None
                and pipe.link is link and pipe.state is not PipeState.CLOSING
                and pipe.ws.state is _OPEN):
            data = event.data
            n = payload_size(data) if type(data) is str else len(data)
            if n <= self.config.max_message_size:
                stats = self.stats
                stats.messages_out += 1
                stats.bytes_out += n
                frame = _proto(pipe.ws).send_data(data, True)
                out.append(SendToClient(pipe.conn, frame))
                pipe.pending += len(frame)
                if (pipe.pending > self.config.write_high_water
                        and link.state is LinkState.OPEN and not link.paused):
                    link.paused = True
                    out.append(PauseLink(link.id))
                return True
        return super()._link_message(link, event, now, out)


def apply(patches: set[str]) -> None:
    """Monkeypatch the named candidates into wspipe_core / wspipe_anyio."""
    from wspipe_anyio import connection as connection_mod
    from wspipe_anyio import server as server_mod

    unknown = patches - {"m1", "m2", "s2", "s4", "d1"}
    if unknown:
        raise SystemExit(f"unknown patch: {', '.join(sorted(unknown))}")
    if "m1" in patches:
        on_request, link_opened = Proxy._on_request, Proxy._link_opened

        def _on_request(self: Proxy, client: Any, request: Any, now: float,
                        out: list[Action]) -> None:
            on_request(self, client, request, now, out)
            pipe = self._pipes.get(client.conn)
            if pipe is not None and getattr(pipe.ws, "connection", None) is not None:
                pipe.ws = pipe.ws.connection

        def _link_opened(self: Proxy, link: Link, now: float, out: list[Action]) -> None:
            if getattr(link.ws, "connection", None) is not None:
                link.ws = link.ws.connection
            link_opened(self, link, now, out)

        Proxy._on_request = _on_request  # type: ignore[method-assign]
        Proxy._link_opened = _link_opened  # type: ignore[method-assign]
    if "s2" in patches:
        server_mod.Proxy = FastProxy  # type: ignore[misc]
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
    if "m2" in patches and not hasattr(connection_mod.Channel, "_wake_writer"):
        import anyio

        shared: list[anyio.Event] = []
        init = connection_mod.Channel.__init__

        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if not shared:
                event = anyio.Event()
                event.set()
                shared.append(event)
            # Both wakeups are re-created before every wait; until then a shared set one does.
            self._writer_wakeup = self._reader_wakeup = shared[0]

        connection_mod.Channel.__init__ = __init__  # type: ignore[method-assign]


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


def mode_core(args: argparse.Namespace) -> None:
    import core_relay as cr

    sizes = [cr.parse_size(s) for s in args.sizes.split(",")]
    print("| size | direction | Proxy | FastProxy | bare wsproto |")
    print("|---:|---|---:|---:|---:|")
    for size in sizes:
        for direction in cr.DIRECTIONS:
            client_sender, server_sender = cr.peer_senders()
            sender = client_sender if direction == "c2b" else server_sender
            chunks, count = cr.encode_stream(sender, size, "binary",
                                             target_bytes=max(8 * cr.CHUNK, 64 * size))
            rates: dict[str, list[float]] = {"Proxy": [], "FastProxy": [], "wsproto": []}
            for _ in range(args.repeat):
                for name, cls in (("Proxy", Proxy), ("FastProxy", FastProxy)):
                    cr.Proxy = cls
                    cr.verify(direction, size, "binary")
                    feed, _rig = cr.core_runner(direction)
                    rates[name].append(cr.timed(feed, chunks, count, args.duration))
                rates["wsproto"].append(cr.timed(cr.wsproto_runner(direction), chunks, count,
                                                 args.duration))
            med = {k: statistics.median(v) for k, v in rates.items()}
            base = med["wsproto"]
            print(f"| {size} B | {cr.DIRECTION_NAMES[direction]} | {med['Proxy']:,.0f} "
                  f"({med['Proxy'] / base:.0%}) | {med['FastProxy']:,.0f} "
                  f"({med['FastProxy'] / base:.0%}) | {base:,.0f} |", flush=True)


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
    core = sub.add_parser("core")
    core.add_argument("--sizes", default="64,1KiB")
    core.add_argument("--duration", type=float, default=0.5)
    core.add_argument("--repeat", type=int, default=5)
    e2e_p = sub.add_parser("e2e")
    e2e_p.add_argument("--patches", default="none,m1,s2+s4,m1+s2+s4",
                       help="comma-separated patch sets; '+' joins patches; none: no patch")
    e2e_p.add_argument("--size", default="1KiB")
    e2e_p.add_argument("--duration", type=float, default=3.0)
    e2e_p.add_argument("--repeat", type=int, default=3)
    e2e_p.add_argument("--idle", type=int, default=0, help="idle clients for RSS (0: skip)")
    e2e_p.add_argument("--async-lib", choices=("asyncio", "trio"), default="asyncio")
    e2e_p.add_argument("--floor", action="store_true",
                       help="also measure benchmarks/floor_relay.py, interleaved")
    args = parser.parse_args(argv)
    if args.mode == "core":
        mode_core(args)
    else:
        mode_e2e(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

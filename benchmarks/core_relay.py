"""Core relay throughput: the sans-IO ``wspipe_core.Proxy`` against bare wsproto.

No sockets, no event loop: bytes in, bytes out. For each message size and each
direction the script measures, in the same run and interleaved:

``core``
    One pipe of a ``wspipe_core.Proxy`` with one open link. Pre-encoded frames are
    fed in ~64 KiB chunks (``ClientDataReceived`` for client->backend,
    ``LinkDataReceived`` for backend->client), exactly as the driver reads them; the
    ``SendToLink``/``SendToClient`` bytes that come back are counted and acknowledged
    at once (``LinkDataSent``/``ClientDataSent``) so backpressure never pauses.
``wsproto``
    The floor: a bare wsproto connection parses the same chunks, assembles each
    whole message and re-frames it through a second wsproto connection
    (client->backend: a SERVER parses masked client frames, a CLIENT re-sends them
    masked; backend->client: a CLIENT parses, a SERVER re-sends).

The input stream of each cell is generated before timing; a timed run feeds it
over and over (a frame stream can be repeated as is) until ``--duration`` has
passed, then msgs/s = messages relayed / elapsed. Each cell runs ``--repeat``
times, core and wsproto alternating; the table shows medians, and core / wsproto is the
median of the ratios of each core run to the wsproto run right after it.

    python benchmarks/core_relay.py                      # full run (~1 min)
    python benchmarks/core_relay.py --quick              # ~15 s
    python benchmarks/core_relay.py --profile 1024       # cProfile the core, 1 KiB both ways
"""

from __future__ import annotations

import argparse
import bisect
import cProfile
import gc
import io
import itertools
import os
import platform
import pstats
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, BytesMessage, Request, TextMessage

from wspipe_anyio.units import parse_size
from wspipe_core import Proxy, ProxyConfig
from wspipe_core import actions as act
from wspipe_core import events as ev

try:  # the frame layer the server runs on (C masking); older commits have none
    from wspipe_anyio.speedups import fast_wire
    WIRE: dict[str, object] = {"wire": fast_wire()}
except ImportError:
    WIRE = {}

BACKEND_URL = "ws://127.0.0.1:9000/"
CHUNK = 64 * 1024
DIRECTIONS = ("c2b", "b2c")
DIRECTION_NAMES = {"c2b": "client->backend", "b2c": "backend->client"}
NOW = 1.0


# ----------------------------------------------------------------------------- input


def make_message(size: int, kind: str, seq: int) -> bytes | str:
    if kind == "text":
        return (f"{seq:08d}" + "x" * size)[:size]
    return seq.to_bytes(8, "big")[-min(8, size):] + bytes(max(0, size - 8))


def encode_stream(sender: WSConnection, size: int, kind: str, target_bytes: int,
                  min_messages: int = 64) -> tuple[list[bytes], int]:
    """Frames of ``n`` messages from ``sender``, cut into ``CHUNK``-byte reads."""
    chunks, count, _ = encode_stream_counted(sender, size, kind, target_bytes, min_messages)
    return chunks, count


def encode_stream_counted(sender: WSConnection, size: int, kind: str, target_bytes: int,
                          min_messages: int = 64) -> tuple[list[bytes], int, list[int]]:
    """As :func:`encode_stream`, plus how many messages are complete after each chunk."""
    count = max(min_messages, target_bytes // max(size, 1))
    parts = []
    for i in range(count):
        message = make_message(size, kind, i)
        frame = TextMessage(data=message) if isinstance(message, str) else BytesMessage(
            data=message)
        parts.append(sender.send(frame))
    stream = b"".join(parts)
    chunks = [stream[i:i + CHUNK] for i in range(0, len(stream), CHUNK)]
    message_ends = list(itertools.accumulate(len(p) for p in parts))
    ends = [bisect.bisect_right(message_ends, min(len(stream), (i + 1) * CHUNK))
            for i in range(len(chunks))]
    return chunks, count, ends


def open_pair(_unused: ConnectionType = ConnectionType.CLIENT) -> tuple[WSConnection, WSConnection]:
    """Two wsproto connections past the handshake: (client, server)."""
    client = WSConnection(ConnectionType.CLIENT)
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(client.send(Request(host="bench", target="/")))
    for _ in server.events():
        pass
    client.receive_data(server.send(AcceptConnection()))
    for _ in client.events():
        pass
    return client, server


def peer_senders() -> tuple[WSConnection, WSConnection]:
    """A client-side sender (masks) and a server-side sender (does not), both open."""
    client, server = open_pair(ConnectionType.CLIENT)
    return client, server


# ----------------------------------------------------------------------------- core


@dataclass
class CoreRig:
    proxy: Proxy
    conn: int
    link: int
    client_ws: WSConnection  # the client's own end (to decode what the proxy sends it)
    backend_ws: WSConnection  # the backend's end of the link


def make_core(config: ProxyConfig | None = None, delivery: str = "at-most-once") -> CoreRig:
    """A proxy with one pipe whose link to the backend is open."""
    config = config or ProxyConfig(backends=(BACKEND_URL,), delivery=delivery)
    proxy = Proxy(config, **WIRE)
    conn = 1
    client_ws = WSConnection(ConnectionType.CLIENT)
    backend_ws = WSConnection(ConnectionType.SERVER)
    out = proxy.handle(ev.ClientConnected(conn, "127.0.0.1"), NOW)
    request = client_ws.send(Request(host="proxy", target=f"/{uuid.uuid4()}"))
    out += proxy.handle(ev.ClientDataReceived(conn, request), NOW)
    link = next(a.link for a in out if isinstance(a, act.OpenLink))
    for a in out:
        if isinstance(a, act.SendToClient):
            client_ws.receive_data(a.data)
    out = proxy.handle(ev.LinkConnected(link), NOW)
    for a in out:
        if isinstance(a, act.SendToLink):
            backend_ws.receive_data(a.data)
            proxy.handle(ev.LinkDataSent(link, len(a.data)), NOW)
    assert any(isinstance(e, Request) for e in backend_ws.events()), "no backend request"
    accept = backend_ws.send(AcceptConnection())
    proxy.handle(ev.LinkDataReceived(link, accept), NOW)
    assert any(isinstance(e, AcceptConnection) for e in client_ws.events()), "client not accepted"
    assert proxy.pipes()[0].state.value == "linked", proxy.pipes()
    return CoreRig(proxy, conn, link, client_ws, backend_ws)


def core_runner(direction: str, delivery: str = "at-most-once",
                ends: list[int] | None = None, count: int = 0,
                ) -> tuple[Callable[[list[bytes]], int], CoreRig]:
    """A function feeding chunks through a fresh core rig; returns output bytes.

    At least once, the backend answers each confirmation ping: after each read the core
    asks (one ping in flight) for the last message it wrote, and its pong comes back
    right after the write report, as a backend on the same host would answer it.
    """
    rig = make_core(delivery=delivery)
    handle = rig.proxy.handle
    conn, link = rig.conn, rig.link
    send_to_link, send_to_client = act.SendToLink, act.SendToClient
    if direction == "c2b" and delivery == "at-least-once":
        assert ends is not None
        state = {"base": 0}

        def feed(chunks: list[bytes]) -> int:
            total = 0
            base = state["base"]
            for chunk, end in zip(chunks, ends, strict=False):
                n = 0
                for action in handle(ev.ClientDataReceived(conn, chunk), NOW):
                    if type(action) is send_to_link:
                        n += len(action.data)
                if n:
                    handle(ev.LinkDataSent(link, n), NOW)
                    total += n
                    payload = b"wspipe:c%d" % (base + end)
                    handle(ev.LinkDataReceived(link, bytes([0x8A, len(payload)]) + payload),
                           NOW)
            if len(chunks) == len(ends):
                state["base"] = base + count
            return total
    elif direction == "c2b":
        def feed(chunks: list[bytes]) -> int:
            total = 0
            for chunk in chunks:
                n = 0
                for action in handle(ev.ClientDataReceived(conn, chunk), NOW):
                    if type(action) is send_to_link:
                        n += len(action.data)
                if n:  # the driver joins queued writes and reports each write once
                    handle(ev.LinkDataSent(link, n), NOW)
                    total += n
            return total
    else:
        def feed(chunks: list[bytes]) -> int:
            total = 0
            for chunk in chunks:
                n = 0
                for action in handle(ev.LinkDataReceived(link, chunk), NOW):
                    if type(action) is send_to_client:
                        n += len(action.data)
                if n:
                    handle(ev.ClientDataSent(conn, n), NOW)
                    total += n
            return total
    return feed, rig


# ----------------------------------------------------------------------------- bare wsproto


def wsproto_runner(direction: str) -> Callable[[list[bytes]], int]:
    """Parse with one wsproto connection, assemble, re-frame through another."""
    # c2b: a SERVER parses masked client frames, a CLIENT re-sends them (masked).
    # b2c: a CLIENT parses unmasked backend frames, a SERVER re-sends them.
    in_client, in_server = open_pair(ConnectionType.CLIENT)
    out_client, out_server = open_pair(ConnectionType.CLIENT)
    parser, sender = (in_server, out_client) if direction == "c2b" else (in_client, out_server)
    text_message, bytes_message = TextMessage, BytesMessage

    def feed(chunks: list[bytes]) -> int:
        total = 0
        parts: list[bytes | str] = []
        receive, events, send = parser.receive_data, parser.events, sender.send
        for chunk in chunks:
            receive(chunk)
            for event in events():
                t = type(event)
                if t is bytes_message or t is text_message:
                    if not event.message_finished:
                        parts.append(event.data)
                        continue
                    data = event.data
                    if parts:
                        parts.append(data)
                        data = ("".join(parts) if t is text_message  # type: ignore[arg-type]
                                else b"".join(parts))  # type: ignore[arg-type]
                        parts = []
                    total += len(send(t(data=data)))
        return total
    return feed


# ----------------------------------------------------------------------------- checks


def verify(direction: str, size: int, kind: str) -> None:
    """Untimed: the core relays a few messages intact, in order (guards the benchmark)."""
    rig = make_core()
    client_sender, server_sender = peer_senders()
    sender = client_sender if direction == "c2b" else server_sender
    chunks, count = encode_stream(sender, size, kind, target_bytes=4 * CHUNK, min_messages=8)
    receiver = rig.backend_ws if direction == "c2b" else rig.client_ws
    out = bytearray()
    for chunk in chunks:
        event = (ev.ClientDataReceived(rig.conn, chunk) if direction == "c2b"
                 else ev.LinkDataReceived(rig.link, chunk))
        for action in rig.proxy.handle(event, NOW):
            if isinstance(action, act.SendToLink | act.SendToClient):
                out += action.data
    receiver.receive_data(bytes(out))
    got: list[bytes | str] = []
    parts: list[bytes | str] = []
    for event in receiver.events():
        if isinstance(event, BytesMessage | TextMessage):
            parts.append(event.data)
            if event.message_finished:
                got.append("".join(parts) if isinstance(parts[0], str)  # type: ignore[arg-type]
                           else b"".join(parts))  # type: ignore[arg-type]
                parts = []
    expected = [make_message(size, kind, i) for i in range(count)]
    if got != expected:
        raise SystemExit(f"verify failed: {direction} {size} B: {len(got)}/{count} messages")


# ----------------------------------------------------------------------------- timing


def timed(feed: Callable[[list[bytes]], int], chunks: list[bytes], per_pass: int,
          duration: float) -> float:
    """Feed ``chunks`` repeatedly for ``duration`` seconds; return messages per second."""
    feed(chunks[: max(1, len(chunks) // 8)])  # warm up (partial pass: the tail is discarded)
    gc.collect()
    # Re-align: a partial pass may have left a frame half-fed; finish the pass first.
    feed(chunks[max(1, len(chunks) // 8):])
    messages = 0
    clock = time.perf_counter
    start = clock()
    deadline = start + duration
    while True:
        feed(chunks)
        messages += per_pass
        now = clock()
        if now >= deadline:
            return messages / (now - start)


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def run(sizes: list[int], kind: str, duration: float, repeat: int,
        directions: list[str], delivery: str = "at-most-once",
        against: str = "wsproto") -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for size in sizes:
        for direction in directions:
            verify(direction, size, kind)
            client_sender, server_sender = peer_senders()
            sender = client_sender if direction == "c2b" else server_sender
            chunks, count, ends = encode_stream_counted(sender, size, kind,
                                                        target_bytes=max(8 * CHUNK, 64 * size))
            core_rates: list[float] = []
            bare_rates: list[float] = []
            for _ in range(repeat):
                feed, rig = core_runner(direction, delivery, ends, count)
                core_rates.append(timed(feed, chunks, count, duration))
                pipe = rig.proxy.pipes()[0]
                if pipe.state.value != "linked" or pipe.unconfirmed_messages > count:
                    raise SystemExit(f"retention did not keep up: {pipe}")
                if against == "wsproto":
                    reference = wsproto_runner(direction)
                else:
                    reference, _ = core_runner(direction, against, ends, count)
                bare_rates.append(timed(reference, chunks, count, duration))
            core = statistics.median(core_rates)
            bare = statistics.median(bare_rates)
            # Each core run is paired with the wsproto run right after it (same machine load).
            ratio = statistics.median(c / b for c, b in zip(core_rates, bare_rates, strict=True))
            row = {"size": size, "direction": direction, "core": core, "wsproto": bare,
                   "ratio": ratio, "core_runs": core_rates, "wsproto_runs": bare_rates}
            rows.append(row)
            print(f"  {size:>6} B {DIRECTION_NAMES[direction]:<16} core {fmt_rate(core):>10} "
                  f"wsproto {fmt_rate(bare):>10} msgs/s  ({ratio:.0%})",
                  file=sys.stderr, flush=True)
    return rows


def print_table(rows: list[dict[str, object]], kind: str, duration: float, repeat: int) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"\nwspipe_core relay vs bare wsproto ({kind} messages, median of {repeat} x "
          f"{duration:g} s, python {platform.python_version()}, load average now {load})\n")
    print("| size | direction | core msgs/s | wsproto msgs/s | core / wsproto (paired) "
          "| core MB/s |")
    print("|---:|---|---:|---:|---:|---:|")
    for row in rows:
        size = int(row["size"])  # type: ignore[call-overload]
        core = float(row["core"])  # type: ignore[arg-type]
        label = f"{size // 1024} KiB" if size >= 1024 else f"{size} B"
        print(f"| {label} | {DIRECTION_NAMES[str(row['direction'])]} | {fmt_rate(core)} | "
              f"{fmt_rate(float(row['wsproto']))} | "  # type: ignore[arg-type]
              f"{float(row['ratio']):.0%} | {core * size / 1e6:,.1f} |")  # type: ignore[arg-type]


def profile(size: int, kind: str, duration: float, top: int, sort: str) -> None:
    """cProfile the core relay of ``size``-byte messages, both directions."""
    for direction in DIRECTIONS:
        client_sender, server_sender = peer_senders()
        sender = client_sender if direction == "c2b" else server_sender
        chunks, count = encode_stream(sender, size, kind, target_bytes=max(8 * CHUNK, 64 * size))
        feed, _rig = core_runner(direction)
        profiler = cProfile.Profile()
        profiler.enable()
        timed(feed, chunks, count, duration)
        profiler.disable()
        buf = io.StringIO()
        stats = pstats.Stats(profiler, stream=buf)
        stats.strip_dirs().sort_stats(sort).print_stats(top)
        print(f"\n===== core {DIRECTION_NAMES[direction]}, {size} B {kind} messages, "
              f"sorted by {sort} =====")
        print(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="64,1KiB,64KiB",
                        help="comma-separated message sizes (default 64,1KiB,64KiB)")
    parser.add_argument("--kind", choices=("binary", "text"), default="binary")
    parser.add_argument("--duration", type=float, default=0.5,
                        help="seconds per timed run (default 0.5)")
    parser.add_argument("--repeat", type=int, default=9, help="runs per cell (default 9)")
    parser.add_argument("--direction", choices=("both", *DIRECTIONS), default="both")
    parser.add_argument("--quick", action="store_true", help="--duration 0.2 --repeat 5")
    parser.add_argument("--profile", metavar="SIZE",
                        help="instead of the table, cProfile the core at this size")
    parser.add_argument("--top", type=int, default=25, help="profile rows (default 25)")
    parser.add_argument("--sort", default="tottime", help="profile sort key (default tottime)")
    parser.add_argument("--delivery", choices=("at-most-once", "at-least-once"),
                        default="at-most-once", help="the core's delivery mode")
    parser.add_argument("--against", choices=("wsproto", "at-most-once"), default="wsproto",
                        help="the reference each core run is paired with: bare wsproto, or "
                             "the core at most once (to price a delivery mode)")
    args = parser.parse_args(argv)
    if args.quick:
        args.duration, args.repeat = 0.2, 5
    if args.duration <= 0 or args.duration > 10 or not 1 <= args.repeat <= 20:
        parser.error("--duration must be in (0, 10] and --repeat in [1, 20]")
    if args.profile:
        profile(parse_size(args.profile), args.kind, args.duration, args.top, args.sort)
        return 0
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    directions = list(DIRECTIONS) if args.direction == "both" else [args.direction]
    rows = run(sizes, args.kind, args.duration, args.repeat, directions, args.delivery,
               args.against)
    if args.against != "wsproto" or args.delivery != "at-most-once":
        print(f"\ncore: delivery {args.delivery}; reference column: "
              f"{'core at most once' if args.against != 'wsproto' else 'bare wsproto'}")
    print_table(rows, args.kind, args.duration, args.repeat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

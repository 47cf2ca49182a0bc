"""``wspipe serve --workers N``: N processes on one host sharing the listen ports.

Each worker is ``python -m wspipe_anyio serve <the same arguments> --worker``: a whole
instance of its own (its own core, pipes and store client, its own instance id) that
binds the client and admin ports with ``SO_REUSEPORT``, so the kernel spreads new
connections across the workers. They share client-id leases and the pool registry
through the store, which is why ``--workers`` needs ``--store``. The parent only
supervises: it forwards SIGTERM/SIGINT to every worker, starts again (at most once a
second) a worker that died while not stopping, and exits once every worker has exited
(0 when all exited with 0).
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

log = logging.getLogger("wspipe")

#: Seconds between two starts of the same worker slot.
RESTART_EVERY = 1.0


def _command(argv: Sequence[str], index: int) -> list[str]:
    args = list(argv)
    out = [sys.executable, "-m", "wspipe_anyio", *args, "--worker"]
    for i, arg in enumerate(args):  # each worker's instance id must be its own
        if arg == "--instance-id" and i + 1 < len(args):
            out += ["--instance-id", f"{args[i + 1]}-w{index}"]
        elif arg.startswith("--instance-id="):
            out += ["--instance-id", f"{arg.split('=', 1)[1]}-w{index}"]
    return out


def run_workers(count: int, argv: Sequence[str]) -> int:
    """Start ``count`` workers with ``argv`` (the ``serve`` arguments) and supervise them."""
    stopping = False
    received: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        received.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    workers: dict[int, subprocess.Popen[bytes]] = {}
    started: dict[int, float] = {}
    codes: dict[int, int] = {}
    forwarded = 0
    try:
        for index in range(count):
            workers[index] = subprocess.Popen(_command(argv, index))
            started[index] = time.monotonic()
        log.info("started %d workers: pids %s", count,
                 ", ".join(str(p.pid) for p in workers.values()))
        while workers:
            while forwarded < len(received):  # one signal to each worker per signal received
                for proc in workers.values():
                    proc.send_signal(received[forwarded])
                forwarded += 1
            for index, proc in list(workers.items()):
                code = proc.poll()
                if code is None:
                    continue
                del workers[index]
                codes[index] = code
                if stopping:
                    continue
                log.warning("worker %d (pid %d) exited with %d: starting it again", index,
                            proc.pid, code)
                time.sleep(max(0.0, started[index] + RESTART_EVERY - time.monotonic()))
                workers[index] = subprocess.Popen(_command(argv, index))
                started[index] = time.monotonic()
            time.sleep(0.05)
    finally:
        for proc in workers.values():  # (only on an exception in this loop)
            proc.kill()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 0 if all(code == 0 for code in codes.values()) else 1

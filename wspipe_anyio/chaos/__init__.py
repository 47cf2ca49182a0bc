"""``wspipe chaos``: prove a delivery mode's promise against real faults, on this machine.

It starts the proxy with the user's configuration and flags (``wspipe serve``'s, with
its own backends and loopback addresses), ``--echo-backends`` managed echo backends
(subprocesses: :mod:`.backend`), ``--clients`` clients sending numbered text and
binary messages of mixed sizes, and injects seeded faults of each kind:

``kill``       SIGKILL, started again 0.3 s later on the same port;
``restart``    graceful restart: Close 1012 to every connection, dropping what arrives
               after that decision (as uvicorn and aiohttp do), then started again;
``blackhole``  SIGSTOP beyond the proxy's ping timeout, then SIGCONT;
``drain``      drain with migrate over the admin API, then the backend stops;
``add``        a new backend joins the pool.

It prints a progress line, then a table per fault kind (faults, messages sent,
lost, duplicated, reordered, client disconnects, gap p50/p99; :mod:`.report`) and
exits 1 when the mode's promise was broken. Modules: :mod:`.run` (the run),
:mod:`.report` (counting and the verdict), :mod:`.backend`, :mod:`.ledger` (the
acked backends' shared database). The proxy is ``wspipe serve`` itself, in a
subprocess, given the merged settings as its config file.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from .report import FAULT_KINDS
from .run import ChaosOptions, ChaosUsageError, run_chaos

#: The ``chaos`` flags' keys (everything else is the proxy's).
CHAOS_KEYS = ("clients", "echo_backends", "duration", "rate", "faults_per_kind", "faults",
              "seed", "progress_interval", "keep_logs")


def add_chaos_flags(parser: argparse.ArgumentParser) -> None:
    """Add the flags of ``wspipe chaos`` (the proxy's come from ``serve``)."""
    defaults = ChaosOptions()
    add = parser.add_argument_group("chaos").add_argument
    add("--clients", type=int, default=defaults.clients, metavar="N",
        help=f"clients, each with its own session ({defaults.clients}; at most 1000)")
    add("--echo-backends", type=int, default=defaults.backends, metavar="N",
        help=f"managed echo backends at the start ({defaults.backends}; 3..32)")
    add("--duration", type=float, default=defaults.duration, metavar="SECONDS",
        help=f"how long clients send ({defaults.duration:g}; at most 600)")
    add("--rate", type=float, default=defaults.rate, metavar="PER_S",
        help=f"messages per second per client ({defaults.rate:g}; at most 50, 10000 in all)")
    add("--faults-per-kind", type=int, default=defaults.faults_per_kind, metavar="N",
        help=f"faults of each kind, spread over the run ({defaults.faults_per_kind})")
    add("--faults", default=",".join(FAULT_KINDS), metavar="KINDS",
        help=f"fault kinds, comma-separated ({','.join(FAULT_KINDS)})")
    add("--seed", type=int, default=defaults.seed, help="seed of every random choice")
    add("--progress-interval", type=float, default=defaults.progress_interval,
        metavar="SECONDS", help="seconds between two progress lines on stderr")
    add("--keep-logs", action="store_true",
        help="keep the run's directory (proxy and backend logs, record files, faults)")


def chaos_command(settings: dict[str, Any],
                  validate: Callable[[dict[str, Any]], Any]) -> int:
    """Run ``wspipe chaos`` from merged settings (chaos keys and the proxy's)."""
    options = ChaosOptions(
        clients=settings.pop("clients"), backends=settings.pop("echo_backends"),
        duration=settings.pop("duration"), rate=settings.pop("rate"),
        faults_per_kind=settings.pop("faults_per_kind"),
        kinds=tuple(k.strip() for k in str(settings.pop("faults")).split(",") if k.strip()),
        seed=settings.pop("seed"), progress_interval=settings.pop("progress_interval"),
        keep=bool(settings.pop("keep_logs", False)))
    return run_chaos(options, settings, validate)


__all__ = ["CHAOS_KEYS", "ChaosOptions", "ChaosUsageError", "add_chaos_flags",
           "chaos_command", "run_chaos"]

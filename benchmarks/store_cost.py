"""Instructions per relayed message in the core, with and without a fleet store.

Counts instructions with callgrind (stable on a loaded machine, unlike wall time): a
:class:`wspipe_core.testing.Harness` relays ``N`` client messages to an echo backend and
back, once as a self-contained proxy and once as a fleet instance (``instance="A"``
with a :class:`~wspipe_core.testing.store.MemoryStore`). Each mode runs at two values of
``N``; the difference of the totals divided by the difference of ``N`` is the cost of
one round trip, free of start-up.

    python benchmarks/store_cost.py            # needs valgrind
    python benchmarks/store_cost.py --run plain 1000    # (one measured child)
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from pathlib import Path

SIZES = (1000, 3000)


def child(mode: str, n: int) -> None:
    from wspipe_core import ProxyConfig
    from wspipe_core.testing import Harness
    from wspipe_core.testing.store import MemoryStore

    config = ProxyConfig(ping_interval=0)
    h = (Harness(config, instance="A", store=MemoryStore()) if mode == "store"
         else Harness(config))
    h.backend("ws://b1/", echo=True)
    client = h.client("/11111111-1111-4111-8111-111111111111")
    payload = "x" * 64
    for _ in range(n):
        client.send(payload)
    assert len(client.received) == n


def instructions(mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                        sys.executable, __file__, "--run", mode, str(n)], check=True,
                       capture_output=True)
        match = re.search(r"^summary: (\d+)", out.read_text(), re.M)
        assert match, "no summary in the callgrind output"
        return int(match[1])


def main(argv: list[str]) -> int:
    if argv[:1] == ["--run"]:
        child(argv[1], int(argv[2]))
        return 0
    per = {}
    for mode in ("plain", "store"):
        low, high = (instructions(mode, n) for n in SIZES)
        per[mode] = (high - low) / (SIZES[1] - SIZES[0])
        print(f"{mode:<6} {per[mode]:>10,.0f} instructions per 64 B round trip "
              f"(totals {low:,} at {SIZES[0]}, {high:,} at {SIZES[1]})")
    print(f"store / plain: {per['store'] / per['plain']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

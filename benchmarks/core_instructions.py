"""A fixed amount of core relay work, for counting instructions per message with callgrind.

Feeds ``core_relay.py``'s pre-encoded stream of SIZE-byte binary messages (about 1 MiB
per pass) through a core pipe PASSES times in DIRECTION (``c2b`` or ``b2c``) and prints
the messages per pass. Run it under callgrind twice, with 1 and 3 passes: the
difference of the two totals over twice the messages per pass is the core's cost per
message, with start-up and stream generation cancelled out. Instruction counts do not
depend on what else the machine is doing, so two trees can be compared on a busy one
(extract the other tree with ``git archive`` and run this file from it)::

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        python benchmarks/core_instructions.py 1024 c2b 1     # and again with 3
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import core_relay  # the benchmarks' own stream and rig


def main(argv: list[str]) -> int:
    size, direction, passes = int(argv[0]), argv[1], int(argv[2])
    client_ws, server_ws = core_relay.peer_senders()
    sender = client_ws if direction == "c2b" else server_ws
    chunks, count = core_relay.encode_stream(sender, size, "binary", 1 << 20)
    feed, _ = core_relay.core_runner(direction)
    for _ in range(passes):
        feed(chunks)
    print(count)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""``wspipe chaos`` as a user runs it: a subprocess, short runs, each mode on each runtime."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

KINDS = ("kill", "restart", "blackhole", "drain", "add")
#: A short run: 5 backends, every fault kind once in about 5 s.
SHORT = ["--clients", "8", "--echo-backends", "5", "--duration", "7", "--faults-per-kind", "1",
         "--rate", "10", "--progress-interval", "2", "--ping-interval", "0.5",
         "--ping-timeout", "2"]


def chaos(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wspipe_anyio", "chaos", *args],
                          capture_output=True, text=True, timeout=timeout)


def table(stdout: str) -> dict[str, list[str]]:
    """The rows of the printed table, by fault kind."""
    rows = {}
    for line in stdout.splitlines():
        cells = line.split()
        if cells and cells[0] in (*KINDS, "none", "total") and len(cells) == 9:
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.parametrize("async_lib", ["asyncio", "trio"])
@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once", "acked"])
def test_a_short_chaos_run_injects_every_fault_and_the_mode_keeps_its_promise(
        delivery: str, async_lib: str) -> None:
    run = chaos("--delivery", delivery, "--async-lib", async_lib, *SHORT)
    assert run.returncode == 0, run.stdout + run.stderr
    rows = table(run.stdout)
    assert all(rows[kind][0] == "1" for kind in KINDS), run.stdout  # one fault of each kind
    faults, sent, lost, duplicated, reordered, disconnects = map(int, rows["total"][:6])
    assert faults == 5 and sent > 8 * 7 * 10 // 3, run.stdout  # every client kept sending
    assert reordered == 0 and disconnects == 0
    if delivery != "at-most-once":
        assert lost == 0
    if delivery != "at-least-once":
        assert duplicated == 0
    assert f"delivery {delivery}" in run.stdout and f"on {async_lib}" in run.stdout
    assert "chaos:" in run.stderr and "faults 5 done" in run.stderr  # the progress line
    assert f"chaos: {delivery} kept its promise" in run.stderr
    lost_metric = re.search(r"possibly lost \(proxy metric\): (\d+)", run.stdout)
    assert lost_metric is not None and int(lost_metric.group(1)) >= lost


def test_it_exits_1_when_the_promise_is_broken(tmp_path: Path) -> None:
    """A real misconfiguration: 1012 not treated as an interruption, so a graceful
    restart ends the client sessions, which at-least-once promised never to do."""
    config = tmp_path / "wspipe.toml"
    config.write_text("interruption_codes = [1001, 1006, 1011]\n")
    run = chaos("--config", str(config), "--delivery", "at-least-once", "--faults", "restart",
                "--clients", "6", "--echo-backends", "3", "--duration", "4",
                "--faults-per-kind", "1", "--rate", "10")
    assert run.returncode == 1, run.stdout + run.stderr
    disconnects = int(table(run.stdout)["restart"][5])
    assert disconnects > 0, run.stdout
    assert re.search(rf"chaos: PROMISE BROKEN: at-least-once: {disconnects} client "
                     "disconnects", run.stderr), run.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--clients", "0"], "--clients must be 1..1000"),
    (["--clients", "1001"], "--clients must be 1..1000"),
    (["--echo-backends", "2"], "--echo-backends must be 3..32"),
    (["--duration", "601"], "--duration must be 1..600 seconds"),
    (["--rate", "51"], "--rate must be > 0 and <= 50 per client"),
    (["--clients", "1000", "--rate", "20"], "10000 in all"),
    (["--faults", "kill,meteor"], "--faults takes kill, restart, blackhole, drain, add"),
    (["--buffer-limit", "lots"], "invalid size"),
])
def test_bad_flags_exit_2_with_one_line_saying_why(args: list[str], message: str) -> None:
    run = chaos(*args, timeout=30)
    assert run.returncode == 2, run.stdout + run.stderr
    assert run.stderr.startswith("wspipe: error: ") and message in run.stderr, run.stderr
    assert run.stderr.count("\n") == 1 and run.stdout == ""

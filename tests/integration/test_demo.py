"""``python -m wspipe_anyio demo`` exits 0: every message survived two backend restarts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("async_lib", ["asyncio", "trio"])
def test_demo_exits_0_with_nothing_lost(async_lib: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "wspipe_anyio", "demo", "--async-lib", async_lib],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK: every message arrived exactly once and in order" in result.stdout
    assert result.stdout.count("INTERRUPTED") == 2
    assert result.stdout.count("RESUMED") == 2

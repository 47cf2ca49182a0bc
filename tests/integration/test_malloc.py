"""glibc's heap keeps what large relays free: ``tune_malloc`` and ``wspipe serve``.

With glibc's default trim threshold, freeing the buffers of large messages gives the
heap's top back to the OS, and the next ones fault it in again; the proxy can settle
into costing half again as much CPU per 64 KiB message (docs/decisions.md). The
tests check the effect itself (freed heap memory stays resident for reuse), that an
operator's own ``MALLOC_TRIM_THRESHOLD_`` wins, and that ``wspipe serve`` applies it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import anyio
import pytest
from test_process import ServeProcess

ROOT = Path(__file__).resolve().parents[2]
GLIBC = platform.libc_ver()[0] == "glibc"
pytestmark = pytest.mark.skipif(not GLIBC, reason="mallopt(M_TRIM_THRESHOLD) is glibc's")

#: Allocates 20 MB in 100 KB buffers (heap, not mmap: under glibc's 128 KiB mmap
#: threshold), frees them newest first, prints how much RSS the free gave back (KiB).
FREE_AND_MEASURE = """
import sys
from wspipe_anyio.speedups import tune_malloc

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])

applied = tune_malloc() if sys.argv[1] == "tuned" else None
chunks = [bytearray(100_000) for _ in range(200)]
before = rss()
while chunks:
    chunks.pop()
print(applied, before - rss())
"""


def freed_kib(mode: str, **env: str) -> tuple[str, int]:
    """Run FREE_AND_MEASURE without the caller's MALLOC_* settings, plus ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", FREE_AND_MEASURE, mode], cwd=ROOT,
                         env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, timeout=30, check=True)
    applied, freed = out.stdout.split()
    return applied, int(freed)


def test_tuned_heap_keeps_freed_memory_for_reuse() -> None:
    _, untuned = freed_kib("default")
    applied, tuned = freed_kib("tuned")
    assert applied == "True"
    # glibc's default gives the heap's top back at once; tuned, 20 MB stays for reuse.
    assert untuned > 15_000, untuned
    assert tuned < 2_000, tuned


def test_the_operators_own_malloc_setting_wins() -> None:
    applied, freed = freed_kib("tuned", MALLOC_TRIM_THRESHOLD_="131072")
    assert applied == "False"
    assert freed > 15_000  # their 128 KiB threshold, not ours


@pytest.mark.anyio
async def test_serve_tunes_malloc(anyio_backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # serve leaves an operator's own threshold alone: the caller's must not reach it.
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    serve = ServeProcess("--backend", "ws://127.0.0.1:9", "--log-level", "debug",
                         "--async-lib", anyio_backend)
    try:
        await serve.wait_ready()
        with anyio.fail_after(5):
            while not any("malloc: trim threshold set to 33554432 bytes" in line
                          for line in serve.lines):
                await anyio.sleep(0.02)
    finally:
        serve.stop()

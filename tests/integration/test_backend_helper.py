"""wspipe_backend behind wspipe in acked mode: real Starlette-on-uvicorn and websockets
backends, crashed and restarted mid-stream; the application sees every message once."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import logging
import os
import signal
import sqlite3
from pathlib import Path

import anyio
import pytest
from peers import Client, EventLog, ProcessBackend, client_path, running_proxy, url

pytestmark = pytest.mark.anyio

COUNT = 600
CRASH_AT = 200
RESTART_AT = 400


def processed(db: Path) -> list[tuple[str, int, str, int]]:
    """The application's effects, in commit order."""
    with sqlite3.connect(db, timeout=10) as conn:
        return conn.execute("select session, seq, data, pid from processed order by rowid"
                            ).fetchall()


async def wait_processed(db: Path, n: int, timeout: float = 20) -> None:
    with anyio.fail_after(timeout):
        while len(processed(db)) < n:
            await anyio.sleep(0.02)


@pytest.mark.parametrize("framework", ["starlette", "websockets"])
async def test_a_crash_after_processing_and_a_graceful_restart_lose_and_duplicate_nothing(
        framework: str, tmp_path: Path) -> None:
    """The first backend dies right after committing message 200, before acking it
    (only deduplication keeps it from being processed twice); the second is stopped
    gracefully mid-stream (it drops what arrives in its last moments); the third gets
    the rest. The application's database holds each message once, in order."""
    db = tmp_path / "app.db"
    sent = [f"m{i:05d}" for i in range(COUNT)]
    events = EventLog()
    async with ProcessBackend("helper_backend.py", framework, str(db), sent[CRASH_AT]) as a, \
            ProcessBackend("helper_backend.py", framework, str(db)) as b, \
            ProcessBackend("helper_backend.py", framework, str(db)) as c:
        async with running_proxy([a.url], events=events, delivery="acked") as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            server.add_backend(b.url)
            for i, message in enumerate(sent):
                await client.send(message)
                if i == CRASH_AT + 50:  # b now carries the pipe: c joins, b restarts
                    await wait_processed(db, CRASH_AT + 1)
                    server.add_backend(c.url)
                if i == RESTART_AT:
                    os.kill(b.proc.pid, signal.SIGTERM)
                    await events.wait_for("interrupted", count=2, timeout=10)
                if i % 20 == 0:
                    await anyio.sleep(0.005)
            await wait_processed(db, COUNT)
            await anyio.sleep(0.2)  # anything processed twice would show up by now
            rows = processed(db)
            assert [data for _, _, data, _ in rows] == sent  # 0 lost, 0 duplicated, in order
            assert [seq for _, seq, _, _ in rows] == list(range(1, COUNT + 1))
            assert len({session for session, _, _, _ in rows}) == 1
            pids = [pid for _, _, _, pid in rows]
            assert pids[CRASH_AT] == a.proc.pid and pids[CRASH_AT + 1] == b.proc.pid
            assert c.proc.pid in pids  # the third backend took the rest
            assert server.stats.unconfirmed_at_interruption  # replays happened
            replies = await client.recv_until(f"got {sent[-1]}", timeout=10)
            assert not any(r.startswith("\x00") for r in replies)  # no ack reached the client
            assert client.ws.close_code is None
            await client.close()


async def test_a_backend_that_never_acks_hits_the_buffer_limit_and_the_log_says_why(
        caplog: pytest.LogCaptureFixture) -> None:
    """An ordinary echo backend, not using the helper, behind an acked proxy."""
    caplog.set_level(logging.WARNING, logger="wspipe")
    events = EventLog()
    async with ProcessBackend() as backend:
        async with running_proxy([backend.url], events=events, delivery="acked",
                                 buffer_limit=64 * 1024) as server:
            bystander = await Client.connect(url(server, client_path()))
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked", count=2)
            with anyio.fail_after(10):
                for i in range(1000):  # bounded: 1000 x 1 KiB is far over the limit
                    try:
                        await client.send(f"{i:04d}" + "x" * 1020)
                    except Exception:
                        break
                code, reason = await client.wait_closed()
            assert (code, reason) == (1013, "buffer limit reached")
            assert any("buffer_limit reached" in r.getMessage() and "not acknowledged (does "
                       "the backend send acks?)" in r.getMessage() for r in caplog.records)
            await bystander.send("still here")
            assert await bystander.recv() == "still here"
            await bystander.close()

"""The resumed-session signal over the wire: what a real backend is told by each link's
upgrade request, after a migration, in each mode."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import anyio
import pytest
from peers import Backend, Client, EventLog, client_path, running_backends, running_proxy, url

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("delivery", ["at-most-once", "at-least-once", "acked"])
async def test_the_next_backend_is_told_which_session_and_link_it_continues(
        delivery: str) -> None:
    events = EventLog()
    async with running_backends(Backend(), Backend(), timeout=20) as (first, second):
        async with running_proxy([first.url], events=events, delivery=delivery) as server:
            client = await Client.connect(url(server, client_path()))
            await events.wait_for("linked")
            for text in ("one", "two"):
                await client.send(text)
                assert await client.recv() == text
            server.add_backend(second.url)
            server.remove_backend(first.url, migrate=True)  # the proxy closes first: 1001
            await client.send("three")
            await client.recv_until("three")  # (replays are echoed again first)
            with anyio.fail_after(5):
                while not second.requests:
                    await anyio.sleep(0.01)
            before, after = first.requests[0].headers, second.requests[0].headers
            assert after["x-wspipe-session"] == before["x-wspipe-session"] != ""
            assert (before["x-wspipe-link"], after["x-wspipe-link"]) == ("1", "2")
            assert after["x-wspipe-delivery"] == delivery
            assert second.messages() == ["three"] or delivery != "at-most-once"
            if delivery == "at-most-once":
                assert "x-wspipe-seq" not in after and after["x-wspipe-replayed"] == "0"
            elif delivery == "acked":  # nothing was acked: everything is replayed
                assert (after["x-wspipe-seq"], after["x-wspipe-replayed"]) == ("1", "2")
                assert second.messages()[:2] == ["one", "two"]
            else:  # confirmed by pongs before the migration, or replayed from the first
                seq, replayed = int(after["x-wspipe-seq"]), int(after["x-wspipe-replayed"])
                assert seq + replayed == 3 and second.messages()[-1] == "three"
            await client.close()

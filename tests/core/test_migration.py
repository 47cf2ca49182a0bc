"""Drain with migrate: pipes move off a draining backend, paced, losing nothing."""

from __future__ import annotations

from contextlib import ExitStack

import pytest
from wsproto.events import TextMessage

from wspipe_core import InterruptionCause, PipeEventKind, PipeState, hookimpl
from wspipe_core.testing import leftovers

from .helpers import apply, harness


def _state(h, url):
    return next(b for b in h.proxy.backends() if b.url == url)


def test_drain_with_migrate_moves_every_pipe_off_the_backend_losing_nothing():
    h = harness(backoff="fixed", backoff_base=0.1)
    b1 = h.backend("ws://b1/")
    clients = [h.client() for _ in range(4)]
    b2 = h.backend("ws://b2/")
    for i, c in enumerate(clients):
        c.send(f"before-{i}")
    links = list(b1.links)
    # What b1 wrote before it saw our Close is still on the wire.
    late = [link.ws.send(TextMessage(data=f"late-{i}")) for i, link in enumerate(links)]
    with ExitStack() as stack:
        held = [stack.enter_context(link.holding()) for link in links]
        apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
        h.advance(3 / h.proxy.config.migrate_rate)  # paced: the 4th moves 3 intervals later
        for i, c in enumerate(clients):
            c.send(f"after-{i}")
        assert all(link.close is not None and link.close.code == 1001 for link in links)
    # b1's answers arrive: first its late messages, then its Close reply.
    for link, data, replies in zip(links, late, held, strict=True):
        link.send_raw(data)
        assert len(replies) == 1
        link.send_raw(replies[0])
    h.advance(1)
    for i, c in enumerate(clients):
        assert c.received == [f"late-{i}"]
        assert c.close is None
    assert sorted(b1.messages()) == sorted(f"before-{i}" for i in range(4))
    assert sorted(b2.messages()) == sorted(f"after-{i}" for i in range(4))
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert all(p.backend_id == _state(h, "ws://b2/").id for p in h.proxy.pipes())
    assert leftovers(h.proxy)["links"] == 4  # only the new links remain


def test_migrate_with_no_other_backend_waits_on_the_draining_one_until_another_is_up():
    """A pipe never moves to nowhere: it would only buffer, then get 1013."""
    h = harness(backoff="fixed", backoff_base=0.5, migrate_rate=10)
    b1 = h.backend("ws://b1/")
    c = h.client()
    apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
    h.advance(5)
    c.send("kept")
    assert h.proxy.pipes()[0].state is PipeState.LINKED and b1.messages() == ["kept"]
    assert h.proxy.migrations_under_way()[0].waiting
    b2 = h.backend("ws://b2/")
    h.advance(0.1)  # the next turn, one interval later
    c.send("moved")
    assert b2.messages() == ["moved"] and b1.links[0].close is not None
    assert h.proxy.migrations_under_way() == []
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]


def test_drain_with_migrate_moves_a_pipe_whose_link_is_still_handshaking():
    """Else the link may open later on the draining backend and stay there for good."""
    h = harness(handshake_timeout=10)
    b1 = h.backend("ws://b1/", mode="blackhole")  # slow: answers only when told
    c = h.client()
    c.send("early")
    b2 = h.backend("ws://b2/")
    apply(h, h.proxy.remove_backend("ws://b1/", migrate=True, now=h.now))
    assert b1.links[0].tcp_closed
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert b2.messages() == ["early"]
    assert h.proxy.pipes()[0].state is PipeState.LINKED
    assert h.proxy.backends()[0].errors == 0 and h.proxy.stats.link_failures.total() == 0


def test_drain_with_migrate_is_paced_at_migrate_rate_on_the_core_clock():
    moved_at: list[float] = []

    class Recorder:
        @hookimpl
        def wspipe_pipe_event(self, event):
            if event.cause is InterruptionCause.MIGRATE and event.kind is PipeEventKind.INTERRUPTED:
                moved_at.append(event.now)

    h = harness(migrate_rate=4, plugins=[Recorder()])  # one pipe every 0.25 s
    h.backend("ws://b1/")
    clients = [h.client() for _ in range(5)]
    b2 = h.backend("ws://b2/")
    h.advance(1)
    apply(h, h.proxy.remove_backend("b1", migrate=True, now=h.now))
    info = h.proxy.migrations_under_way()[0]
    assert (info.backend_id, info.total, info.moved, info.remaining) == ("b1", 5, 1, 4)
    h.advance(0.7)
    assert moved_at == pytest.approx([1.0, 1.25, 1.5])
    h.advance(10)
    assert moved_at == pytest.approx([1.0, 1.25, 1.5, 1.75, 2.0])  # never two at once
    assert len(b2.links) == 5 and h.proxy.stats.pipes_migrated == 5
    assert h.proxy.migrations_under_way() == []
    assert [b.url for b in h.proxy.backends()] == ["ws://b2/"]
    assert all(c.close is None for c in clients)


def test_pipes_that_ended_before_their_turn_take_no_slot():
    h = harness(migrate_rate=1)
    h.backend("ws://b1/")
    clients = [h.client() for _ in range(3)]
    h.backend("ws://b2/")
    apply(h, h.proxy.remove_backend("b1", migrate=True, now=h.now))  # first moves now
    clients[1].close_ws(1000)  # ends before its turn
    h.advance(1.0)  # one interval: the third moves, not a wasted turn on the second
    assert sorted(p.backend_id for p in h.proxy.pipes()) == ["b2", "b2"]
    assert h.proxy.migrations_under_way() == []

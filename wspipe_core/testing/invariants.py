"""Checks of the core's internal bookkeeping, for property tests (the core's own seam)."""

from __future__ import annotations

from ..info import PipeState
from ..proxy import Proxy


def check_invariants(proxy: Proxy) -> None:
    """Assert what must hold between any two calls of ``proxy`` (for property tests).

    Every pipe holds no more than ``buffer_limit`` and exactly what its buffer and
    its client's message in progress cost; the memory budget is the sum over pipes;
    a backend's load is the pipes whose link (or racing link) it holds; a pipe's live link is
    registered and belongs to it; peers point at each other only on a live relay.
    """
    cfg = proxy.config
    sessions = proxy._sessions
    pipes = list(sessions.by_id.values())
    for pipe in pipes:
        lane = pipe.lane
        assert 0 <= lane.held <= cfg.buffer_limit, (pipe.id, lane.held)
        assert lane.held == (lane.buffer.cost + lane.retained.cost
                             + pipe.client.assembler.size), pipe.id
        link = pipe.link
        if link is not None:
            assert proxy._links.get(link.id) is link, pipe.id
            assert link.owner is pipe, pipe.id
        peer = pipe.client.peer
        if peer is not None:
            assert peer is pipe.link and peer.peer is pipe.client, pipe.id  # type: ignore[union-attr]
            assert pipe.state is PipeState.LINKED, (pipe.id, pipe.state)
    assert 0 <= proxy.budget.used <= cfg.memory_budget
    for pipe in pipes:
        out = pipe.outbound
        assert 0 <= out.held <= cfg.buffer_limit and out.held == out.buffer.cost, pipe.id
        if pipe.parked_until is None:
            assert not len(out.buffer), pipe.id  # held for the client only while it is away
        else:
            assert proxy._sessions.by_conn.get(pipe.conn) is not pipe, pipe.id
    assert proxy.budget.used == sum(p.lane.held + p.outbound.held for p in pipes)
    for backend in proxy.pool:
        assert backend.pipes == sum(1 for p in pipes for link in (p.link, p.racer)
                                    if link is not None and link.backend is backend), backend.id


def leftovers(proxy: Proxy) -> dict[str, int]:
    """What the core still holds, by kind; all zero once every client and link is gone."""
    sessions = proxy._sessions
    return {
        "pending clients": len(proxy._handshakes),
        "pipes": len(sessions.by_conn) + len(sessions.by_id),
        "client ids": len(sessions.by_client_id),
        "links": len(proxy._links),
        "budget waiters": proxy._flow.budget_waiters,
        "budget bytes": proxy.budget.used,
        "deadlines": len(proxy._timers),
        "timer heap": proxy._timers.deadlines.heap_size,
        "unsent actions": len(proxy._flow.out),
    }

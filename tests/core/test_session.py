"""The end of a session: client Close or EOF, close timeout, shutdown."""

from __future__ import annotations

import pytest

from wspipe_core import PipeState
from wspipe_core.testing import leftovers

from .helpers import apply, harness


def test_client_close_sends_close_to_backend_and_frees_the_pipe():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.close_ws(4001, "bye")
    link = b1.links[0]
    assert link.close is not None and (link.close.code, link.close.reason) == (4001, "bye")
    assert c.close is not None and c.close.code == 4001  # the proxy answered the Close
    assert c.tcp_closed and link.tcp_closed
    assert h.proxy.pipes() == [] and h.proxy.idle
    assert h.proxy.backends()[0].pipes == 0
    assert h.proxy.next_deadline() is None


def test_client_eof_closes_the_link_and_frees_the_pipe():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.eof()
    assert b1.links[0].close is not None and b1.links[0].close.code == 1001
    assert h.proxy.pipes() == []
    assert h.proxy.stats.clients_closed[1006] == 1


def test_client_that_does_not_answer_our_close_is_dropped_after_close_timeout():
    h = harness(close_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.ws.receive_data = lambda data: None  # the client reads nothing any more
    b1.links[0].close_ws(1000, "done")
    assert not c.tcp_closed and h.proxy.pipes()[0].state is PipeState.CLOSING
    h.advance(5)
    assert c.tcp_closed and h.proxy.pipes() == []


@pytest.mark.parametrize("how", ["client_close", "client_eof", "backend_app_close"])
def test_backend_message_in_flight_when_the_pipe_ended_is_dropped_not_a_crash(how):
    """The backend wrote before it saw our Close; its bytes arrive after the pipe is gone."""
    from wsproto.events import TextMessage

    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    late = link.ws.send(TextMessage(data="in flight"))
    with link.holding() as held:
        if how == "client_close":
            c.close_ws(1000)
        elif how == "client_eof":
            c.eof()
        else:
            apply(h, h.proxy.shutdown(h.now))
    link.send_raw(late)
    for data in held:
        link.send_raw(data)
    assert c.received == []
    assert leftovers(h.proxy)["links"] == 0


def test_shutdown_completes_within_close_timeout_even_if_peers_never_answer():

    h = harness(close_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.ws.receive_data = lambda data: None  # the client reads nothing any more
    b1.links[0].mute()
    apply(h, h.proxy.shutdown(h.now))
    assert not h.proxy.idle
    assert h.proxy.next_deadline() == 5
    h.advance(5)
    assert h.proxy.idle and c.tcp_closed and b1.links[0].tcp_closed

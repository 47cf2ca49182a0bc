"""Relay of messages through a live link (design note 3) and the end of a session."""

from __future__ import annotations

import pytest
from wsproto.connection import ConnectionState

from wspipe_core import PipeState
from wspipe_core.testing import leftovers

from .helpers import apply, harness, masked_frame

MESSAGES = ["hello", "", "héllo wörld ✓", b"\x00\x01\xff", b"", b"x" * 70_000, "y" * 300]


@pytest.mark.parametrize("client_sends", [True, False], ids=["client->backend", "backend->client"])
def test_text_and_binary_are_relayed_unchanged(client_sends):
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    for message in MESSAGES:
        (c.send if client_sends else link.send)(message)
    received = link.received if client_sends else c.received
    assert received == MESSAGES
    assert [type(m) for m in received] == [type(m) for m in MESSAGES]


@pytest.mark.parametrize("client_sends", [True, False], ids=["client->backend", "backend->client"])
@pytest.mark.parametrize("message", ["fragmented text ✓" * 20, b"fragmented binary" * 20])
def test_fragmented_message_arrives_whole(client_sends, message):
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    link = b1.links[0]
    (c.send if client_sends else link.send)(message, fragments=7)
    (c.send if client_sends else link.send)("after")
    assert (link.received if client_sends else c.received) == [message, "after"]


def test_fragments_arriving_one_read_at_a_time_are_forwarded_only_when_complete():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    from wsproto.events import TextMessage

    first = c.ws.send(TextMessage(data="abc", message_finished=False))
    rest = c.ws.send(TextMessage(data="def", message_finished=True))
    c.send_raw(first)
    assert b1.links[0].received == []
    c.send_raw(rest)
    assert b1.links[0].received == ["abcdef"]


def test_client_message_over_max_message_size_closes_client_with_1009():
    h = harness(max_message_size=1000, buffer_limit=1000)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("ok")
    c.send("x" * 1001, fragments=3)
    assert c.close is not None and c.close.code == 1009
    assert b1.links[0].received == ["ok"]
    assert b1.links[0].close is not None  # the link is closed too
    assert h.proxy.budget.used == 0


def test_unfragmented_client_message_over_max_message_size_closes_client_with_1009():
    h = harness(max_message_size=1000, buffer_limit=1000)
    h.backend("ws://b1/")
    c = h.client()
    c.send(b"x" * 1001)
    assert c.close is not None and c.close.code == 1009


def test_backend_message_over_max_message_size_closes_link_1009_and_pipe_fails_over():
    h = harness(max_message_size=1000, buffer_limit=1000)
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    b1.links[0].send("y" * 1001, fragments=4)
    assert b1.links[0].close is not None and b1.links[0].close.code == 1009
    assert c.close is None and c.received == []
    c.send("still here")
    assert b2.messages() == ["still here"]
    assert h.proxy.backends()[0].errors == 1
    assert h.proxy.stats.interruptions["message_too_big"] == 1


def test_client_ping_is_answered_by_the_proxy_not_forwarded():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    pongs = c.pongs
    c.ping(b"are you there")
    assert pongs == [b"are you there"]
    assert b1.links[0].received == []


def test_invalid_utf8_from_client_closes_it_with_1007():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send_raw(masked_frame(0x1, b"\xff\xfe"))
    assert c.close is not None and c.close.code == 1007
    assert b1.links[0].received == []
    assert b1.links[0].close is not None


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


@pytest.mark.parametrize("code", [1000, 4000, 3000, 1008])
def test_backend_application_close_is_relayed_to_client_with_reason_and_pipe_ends(code):
    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    b1.links[0].close_ws(code, "game over")
    assert c.close is not None and (c.close.code, c.close.reason) == (code, "game over")
    assert b1.links[0].ws.state is ConnectionState.CLOSED  # the proxy answered the backend
    assert b2.links == []  # no failover
    assert c.tcp_closed and h.proxy.pipes() == []


def test_client_that_does_not_answer_our_close_is_dropped_after_close_timeout():
    h = harness(close_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.ws.receive_data = lambda data: None  # the client reads nothing any more
    b1.links[0].close_ws(1000, "done")
    assert not c.tcp_closed and h.proxy.pipes()[0].state is PipeState.CLOSING
    h.advance(5)
    assert c.tcp_closed and h.proxy.pipes() == []


def test_proxy_pings_the_client_and_closes_a_silent_one_with_1011():
    h = harness(ping_interval=5, ping_timeout=5)
    h.backend("ws://b1/")
    c = h.client()
    h.advance(5)  # answered by the fake client
    h.advance(5)
    assert c.close is None
    c.ws.receive_data = lambda data: None  # stops answering pings
    h.advance(10)
    assert c.tcp_closed and h.proxy.stats.clients_closed[1011] == 1


def test_shutdown_closes_clients_with_1001_and_links_and_refuses_new_clients():
    h = harness()
    b1 = h.backend("ws://b1/")
    c1, c2 = h.client(), h.client()
    apply(h, h.proxy.shutdown(h.now))
    assert [c.close.code for c in (c1, c2) if c.close] == [1001, 1001]
    assert all(link.close is not None and link.close.code == 1001 for link in b1.links)
    assert h.proxy.idle
    c3 = h.client()
    assert c3.status == 503 and not c3.accepted


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


def test_backend_close_without_a_code_reaches_the_client_as_1000():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].send_raw(b"\x88\x00")  # Close frame with no payload (1005 on receipt)
    assert c.close is not None and c.close.code == 1000


def test_backend_dying_mid_message_never_leaves_the_client_a_torn_message():
    from wsproto.events import BytesMessage

    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    link = b1.links[0]
    link.send_raw(link.ws.send(BytesMessage(data=b"first half", message_finished=False)))
    link.eof()
    b2.links[0].send(b"whole", fragments=2)
    assert c.received == [b"whole"]


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

"""Close codes: which code each end of a session gets, and why (docs/behaviour.md)."""

from __future__ import annotations

import pytest
from wsproto.connection import ConnectionState

from .helpers import apply, harness, masked_frame


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


def test_invalid_utf8_from_client_closes_it_with_1007():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send_raw(masked_frame(0x1, b"\xff\xfe"))
    assert c.close is not None and c.close.code == 1007
    assert b1.links[0].received == []
    assert b1.links[0].close is not None


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


def test_backend_close_without_a_code_reaches_the_client_as_1000():
    h = harness()
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.links[0].send_raw(b"\x88\x00")  # Close frame with no payload (1005 on receipt)
    assert c.close is not None and c.close.code == 1000


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


def test_no_backend_within_max_interruption_closes_client_with_1013():
    h = harness(max_interruption=30)
    b1 = h.backend("ws://b1/")
    c = h.client()
    b1.kill()
    c.send("lost")
    h.advance(29.9)
    assert c.close is None
    h.advance(0.1)
    assert c.close is not None and c.close.code == 1013 and c.close.reason
    assert h.proxy.pipes() == [] and h.proxy.budget.used == 0


def test_client_accepted_with_no_backend_at_all_gets_1013_after_max_interruption():
    h = harness(max_interruption=5)
    c = h.client()
    assert c.accepted
    h.advance(5)
    assert c.close is not None and c.close.code == 1013


@pytest.mark.parametrize("code", [1012, 1001, 1011, 1013, 1014])
def test_backend_close_with_interruption_code_fails_over(code):
    h = harness()
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    c.send("one")
    b1.links[0].close_ws(code, "restarting")
    c.send("two")
    assert c.close is None
    assert b1.messages() == ["one"] and b2.messages() == ["two"]
    assert b1.links[0].tcp_closed
    assert sum(h.proxy.stats.interruptions.values()) == 1


def test_configured_interruption_codes_replace_the_default():
    h = harness(interruption_codes=frozenset({4500}))
    b1 = h.backend("ws://b1/")
    b2 = h.backend("ws://b2/")
    c = h.client()
    b1.links[0].close_ws(4500)
    assert c.close is None and len(b2.links) == 1
    b2.links[0].close_ws(1012)
    assert c.close is not None and c.close.code == 1012



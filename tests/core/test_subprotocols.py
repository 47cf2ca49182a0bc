"""Subprotocols: a client that asks for some ends up with one its backend accepted, on both hops."""

from __future__ import annotations

from wspipe_core import BackendState, PipeState

from .helpers import harness


def test_with_the_default_config_the_backend_chooses_and_the_client_gets_its_choice():
    """A browser doing new WebSocket(url, ["chat.v2", "chat.v1"]) against a chat.v1 server."""
    h = harness()
    b1 = h.backend("ws://b1/", subprotocols=["chat.v1"])
    c = h.client(subprotocols=["chat.v2", "chat.v1"])
    assert c.accepted and c.subprotocol == "chat.v1"
    assert b1.links[0].request is not None
    assert b1.links[0].request.subprotocols == ["chat.v2", "chat.v1"]
    assert h.pipe(c).subprotocol == "chat.v1"
    c.send("hi")
    assert b1.messages() == ["hi"]


def test_the_client_is_answered_only_once_the_backend_has_chosen():
    h = harness(race_after=0)
    b1 = h.backend("ws://b1/", mode="blackhole", subprotocols=["chat"])
    c = h.client(subprotocols=["chat"])
    assert not c.accepted and c.paused  # nothing to read before our answer
    assert h.proxy.stats.clients_accepted == 0
    b1.links[0].answer()
    assert c.accepted and c.subprotocol == "chat" and not c.paused


def test_a_client_that_asks_for_none_is_answered_before_any_backend_is_reached():
    h = harness()
    h.backend("ws://b1/", mode="blackhole")
    c = h.client()
    assert c.accepted and c.subprotocol is None


def test_with_no_backend_up_the_client_gets_the_first_it_offered_at_once():
    """A client can connect while every backend is down (design note 1)."""
    h = harness(eject_after=1, eject_base=10, backoff="fixed", backoff_base=0.5)
    b1 = h.backend("ws://b1/", mode="refuse", subprotocols=["chat.v2", "chat.v1"])
    h.client()  # its first attempt fails: b1 is ejected
    assert h.proxy.backends()[0].state is BackendState.EJECTED
    c = h.client(subprotocols=["chat.v1", "chat.v2"])
    assert c.accepted and c.subprotocol == "chat.v1"
    c.send("buffered")
    b1.mode = "accept"
    h.advance(11)
    assert b1.messages() == ["buffered"]
    assert b1.links[-1].request is not None
    assert b1.links[-1].request.subprotocols == ["chat.v1"]  # the session's, nothing else


def test_if_no_link_opens_within_handshake_timeout_the_client_gets_the_first_it_offered():
    h = harness(handshake_timeout=2, link_timeout=10, race_after=0)
    h.backend("ws://b1/", mode="blackhole")
    c = h.client(subprotocols=["chat.v2", "chat.v1"])
    h.advance(1.9)
    assert not c.accepted
    h.advance(0.1)
    assert c.accepted and c.subprotocol == "chat.v2"


def test_a_backend_that_chooses_another_subprotocol_is_never_linked_to_that_pipe():
    """Nor is it ejected for it: it is healthy, only not for this session."""
    h = harness(eject_after=1)
    v1 = h.backend("ws://v1/", subprotocols=["chat.v1"])
    c = h.client(subprotocols=["chat.v1", "chat.v2"])
    assert c.subprotocol == "chat.v1"
    v2 = h.backend("ws://v2/", subprotocols=["chat.v2"])  # a newer release, chat.v2 only
    v1.links[0].eof()  # the session fails over: v2 (least connections) is tried first
    assert v2.links[0].request is not None
    assert v2.links[0].request.subprotocols == ["chat.v1"]
    assert v2.links[0].close is not None and v2.links[0].close.code == 1002
    assert "subprotocol mismatch" in v2.links[0].close.reason
    c.send("still chat.v1")
    assert v1.messages() == ["still chat.v1"] and v2.messages() == []
    # eject_after=1: had the mismatch counted as v2's failure, v2 would be ejected now.
    v2_info = h.proxy.backends()[1]
    assert (v2_info.state, v2_info.errors) == (BackendState.UP, 0)
    assert h.proxy.stats.link_failures["subprotocol"] == 1
    v1.links[-1].eof()  # and again: v2 is not tried for this pipe any more
    assert len(v2.links) == 1 and h.pipe(c).state is PipeState.LINKED


def test_a_backend_that_declines_the_subprotocol_is_not_linked_either():
    h = harness()
    chat = h.backend("ws://chat/", subprotocols=["chat"])
    c = h.client(subprotocols=["chat"])
    plain = h.backend("ws://plain/", subprotocols=[])  # speaks no subprotocol
    chat.links[0].eof()
    assert plain.links[0].close is not None and plain.links[0].close.code == 1002
    assert h.pipe(c).backend_id == "b1" and c.subprotocol == "chat"


def test_an_allow_list_keeps_only_its_subprotocols_and_an_empty_one_refuses_them_all():
    h = harness(subprotocols=("chat.v1",))
    b1 = h.backend("ws://b1/")
    c = h.client(subprotocols=["chat.v2", "chat.v1"])
    assert c.subprotocol == "chat.v1"
    assert b1.links[0].request is not None
    assert b1.links[0].request.subprotocols == ["chat.v1"]
    h = harness(subprotocols=())
    b1 = h.backend("ws://b1/")
    c = h.client(subprotocols=["chat"])
    assert c.accepted and c.subprotocol is None
    assert b1.links[0].request is not None and b1.links[0].request.subprotocols == []


def test_a_client_waiting_for_its_answer_at_shutdown_gets_503():
    h = harness(race_after=0)
    h.backend("ws://b1/", mode="blackhole")
    c = h.client(subprotocols=["chat"])
    h.apply(h.proxy.shutdown(h.now))
    assert c.status == 503 and c.tcp_closed and b"proxy shutting down" in c.body
    assert h.proxy.idle or h.proxy.connections == 0

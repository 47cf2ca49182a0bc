"""Client resume: a vanished client's session is parked, and a new connection takes it over."""

from __future__ import annotations

from wspipe_core import Accept, PipeEventKind, ProxyConfig, Reject, hookimpl
from wspipe_core import actions as act

from .helpers import ID1, ID2, harness


class Events:
    def __init__(self) -> None:
        self.events = []

    @hookimpl
    def wspipe_pipe_event(self, event):
        self.events.append(event)

    def kinds(self):
        return [e.kind for e in self.events]


def test_resume_is_on_by_default_for_30_seconds():
    assert ProxyConfig().resume_window == 30.0


def test_a_client_that_vanishes_is_parked_and_the_backend_keeps_its_link():
    events = Events()
    h = harness(resume_window=10, plugins=[events])
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.eof()
    link = b1.links[0]
    assert not link.tcp_closed and link.close is None  # the backend sees nothing
    pipe = h.proxy.pipes()[0]
    assert pipe.parked_until == 10 and pipe.state.value == "linked"
    link.send("while away 1")
    link.send("while away 2")
    assert h.proxy.pipes()[0].held_for_client == 2
    assert PipeEventKind.PARKED in events.kinds()
    assert h.proxy.stats.parked == 1 and h.proxy.connections == 0


def test_a_resuming_connection_gets_what_was_held_first_in_order_then_the_relay():
    events = Events()
    h = harness(resume_window=10, plugins=[events])
    b1 = h.backend("ws://b1/", echo=True)
    c = h.client(f"/{ID1}")
    c.send("before")
    c.eof()
    b1.links[0].send("held 1")
    b1.links[0].send("held 2")
    h.advance(3)
    again = h.client(f"/{ID1}")
    assert again.accepted
    assert again.received == ["held 1", "held 2"]
    again.send("after")
    assert again.received == ["held 1", "held 2", "after"]
    assert b1.messages() == ["before", "after"] and len(b1.links) == 1  # one connection
    resumed = [e for e in events.events if e.kind is PipeEventKind.CLIENT_RESUMED]
    assert resumed and resumed[0].duration == 3
    assert h.proxy.pipes()[0].parked_until is None and h.proxy.stats.client_resumes == 1


def test_a_client_that_closes_with_a_close_frame_ends_its_session_at_once():
    h = harness(resume_window=10)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.close_ws(4001, "bye")
    assert b1.links[0].close is not None and b1.links[0].close.code == 4001
    assert h.proxy.pipes() == [] and h.proxy.stats.parked == 0


def test_a_client_that_stops_answering_pings_is_closed_with_1011_and_parked():
    h = harness(resume_window=10, ping_interval=5, ping_timeout=5)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.mute()
    h.advance(10.1)  # (the pong deadline at 10, and its grace)
    assert h.proxy.pipes()[0].parked_until is not None and not b1.links[0].tcp_closed
    assert c.tcp_closed and h.proxy.stats.parked == 1


def test_the_session_ends_when_nobody_comes_back_within_the_window():
    events = Events()
    h = harness(resume_window=10, plugins=[events])
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.eof()
    h.advance(9.9)
    assert not b1.links[0].tcp_closed
    h.advance(0.1)
    assert b1.links[0].close is not None and b1.links[0].close.code == 1001
    assert b1.links[0].close.reason == "client went away"
    assert h.proxy.pipes() == [] and h.proxy.stats.resume_expired == 1
    assert PipeEventKind.EXPIRED in events.kinds()
    fresh = h.client(f"/{ID1}")  # an expired id is simply a new session
    assert fresh.accepted and len(b1.links) == 2


def test_what_the_backend_sends_while_parked_is_bounded_by_the_buffer_policy():
    h = harness(resume_window=10, buffer_limit=1000, max_message_size=500)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.eof()
    for _ in range(3):
        b1.links[0].send("x" * 400)
    assert b1.links[0].close is not None and b1.links[0].close.code == 1001
    assert h.proxy.pipes() == [] and h.proxy.budget.used == 0


def test_the_pause_policy_stops_reading_the_backend_while_parked_and_loses_nothing():
    h = harness(resume_window=10, buffer_limit=1000, max_message_size=500,
                buffer_policy="pause")
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.eof()
    link = b1.links[0]
    link.send("a" * 400)
    link.send("b" * 400)
    link.send("c" * 400)  # does not fit: the link is no longer read
    assert [a.link for a in h.actions if isinstance(a, act.PauseLink)] == [link.link]
    again = h.client(f"/{ID1}")
    assert again.received == ["a" * 400, "b" * 400, "c" * 400]
    assert any(isinstance(a, act.ResumeLink) and a.link == link.link for a in h.actions)


def test_a_resume_by_another_principal_is_refused_and_the_parked_session_kept():
    class ByHeader:
        @hookimpl
        def wspipe_authenticate(self, request):
            user = request.header("x-user")
            return Accept(user) if user else Reject(401, "who are you?")

    h = harness(resume_window=10, plugins=[ByHeader()])
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}", headers=[("x-user", "alice")])
    c.eof()
    b1.links[0].send("for alice")
    mallory = h.client(f"/{ID1}", headers=[("x-user", "mallory")])
    assert mallory.status == 403 and b"belongs to another principal" in mallory.body
    anonymous = h.client(f"/{ID1}")
    assert anonymous.status == 401
    assert h.proxy.pipes()[0].held_for_client == 1  # untouched
    alice = h.client(f"/{ID1}", headers=[("x-user", "alice")])
    assert alice.received == ["for alice"]


def test_a_live_connection_is_not_taken_over_unless_it_is_suspected_dead():
    h = harness(resume_window=10, ping_interval=4, ping_timeout=4)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    assert h.client(f"/{ID1}").status == 409  # answering: a second connection is refused
    c.mute()  # it stops answering
    h.advance(4)  # a ping goes out
    assert h.client(f"/{ID1}").status == 409  # not overdue yet (half of ping_timeout)
    h.advance(2)
    b1.links[0].send("to the new one")
    new = h.client(f"/{ID1}")
    assert new.accepted and c.tcp_closed
    b1.links[0].send("to the new one")
    assert new.received == ["to the new one"] and len(b1.links) == 1


def test_a_storm_of_resumes_cannot_steal_the_held_messages_twice():
    h = harness(resume_window=10)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.eof()
    b1.links[0].send("once")
    first = h.client(f"/{ID1}")
    others = [h.client(f"/{ID1}") for _ in range(5)]
    assert first.received == ["once"]
    assert [o.status for o in others] == [409] * 5 and all(o.received == [] for o in others)


def test_parked_and_interrupted_at_once_both_recover():
    """The client and the backend are both gone; each comes back on its own."""
    h = harness(resume_window=10, backoff="fixed", backoff_base=0.5)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    c.send("before")
    b2 = h.backend("ws://b2/")
    c.eof()
    b1.links[0].eof()  # the backend goes too: the parked pipe fails over
    assert len(b2.links) == 1
    b2.links[0].send("from the new backend")
    again = h.client(f"/{ID1}")
    assert again.received == ["from the new backend"]
    again.send("after")
    assert b2.messages() == ["after"] and b1.messages() == ["before"]


def test_backend_messages_written_to_the_vanished_socket_are_counted_as_possibly_lost():
    h = harness(resume_window=10)
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    b1.links[0].send("written, never confirmed")
    c.eof()
    assert h.proxy.stats.possibly_lost_to_client == 1


def test_a_resume_must_ask_for_the_sessions_subprotocol():
    h = harness(resume_window=10)
    h.backend("ws://b1/", subprotocols=["chat"])
    c = h.client(f"/{ID1}", subprotocols=["chat"])
    c.eof()
    plain = h.client(f"/{ID1}")
    assert plain.status == 400 and b"must ask for it" in plain.body
    again = h.client(f"/{ID1}", subprotocols=["chat"])
    assert again.accepted and again.subprotocol == "chat"


def test_other_client_ids_are_untouched_by_a_parked_session():
    h = harness(resume_window=10)
    b1 = h.backend("ws://b1/", echo=True)
    c = h.client(f"/{ID1}")
    other = h.client(f"/{ID2}")
    c.eof()
    other.send("still here")
    assert other.received == ["still here"] and len(b1.links) == 2

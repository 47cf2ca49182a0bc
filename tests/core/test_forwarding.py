"""What the backend sees: the link's handshake (design note 2)."""

from __future__ import annotations

from wspipe_core import events as ev

from .helpers import ID1, ID2, harness, upgrade_request


def test_backend_request_carries_path_query_forwarding_headers_and_client_id():
    h = harness()
    b1 = h.backend("ws://b1:8080/base?k=v")
    h.client(f"/app/{ID1}?room=7", peer="10.0.0.9",
             headers=[("Cookie", "s=1"), ("Authorization", "Bearer t"), ("X-Other", "no")])
    link = b1.links[0]
    assert link.request is not None
    assert link.request.target == f"/base/app/{ID1}?k=v&room=7"
    assert link.request.host == "b1:8080"
    assert link.header("x-forwarded-for") == "10.0.0.9"
    assert link.header("x-forwarded-proto") == "http"
    assert link.header("x-wspipe-client-id") == ID1
    assert link.header("cookie") == "s=1"
    assert link.header("authorization") == "Bearer t"
    assert link.header("x-other") is None


def test_backend_request_appends_peer_to_existing_forwarded_for_and_tls_proto():
    h = harness(forward_headers=("x-trace",), client_id_header="X-Session")
    b1 = h.backend("ws://b1/")
    conn = 99
    c = h.raw_client()
    del h.clients[c.conn]
    c.conn = conn
    h.clients[conn] = c
    h.feed(ev.ClientConnected(conn, "10.0.0.2", True))
    c.send_raw(upgrade_request(f"/{ID2}", [("X-Forwarded-For", "1.2.3.4"), ("X-Trace", "t1"),
                                          ("Cookie", "not forwarded")]))
    link = b1.links[0]
    assert link.header("x-forwarded-for") == "1.2.3.4, 10.0.0.2"
    assert link.header("x-forwarded-proto") == "https"
    assert link.header("x-session") == ID2
    assert link.header("x-trace") == "t1"
    assert link.header("cookie") is None


def test_backend_request_without_forward_target_uses_backend_url_target():
    h = harness(forward_target=False)
    b1 = h.backend("ws://b1/fixed")
    h.client(f"/app/{ID1}?q=1")
    assert b1.links[0].request is not None and b1.links[0].request.target == "/fixed"

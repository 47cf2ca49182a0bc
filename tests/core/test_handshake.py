"""The client handshake (design note 1) and the backend request (design note 2)."""

from __future__ import annotations

import pytest
from wsproto.events import Request

from .helpers import ID1, harness, masked_frame, upgrade_request


def test_valid_request_is_accepted_before_any_backend_is_reached():
    h = harness()
    c = h.client(f"/{ID1}")
    assert c.accepted and c.status is None
    assert h.proxy.pipes()[0].client_id == ID1


@pytest.mark.parametrize("path", ["/", "/bad", f"/{ID1}x", "/not-a-uuid/at-all"])
def test_bad_client_id_path_gets_400_with_a_reason(path):
    h = harness()
    c = h.client(path)
    assert c.status == 400 and not c.accepted
    assert b"client id" in c.body and c.body.endswith(b"\n") and c.body.count(b"\n") == 1
    assert c.tcp_closed and h.proxy.connections == 0


def test_client_id_is_the_last_path_segment_lower_cased():
    h = harness()
    h.client(f"/app/room/{ID1.upper()}?x=1")
    assert h.proxy.pipes()[0].client_id == ID1


@pytest.mark.parametrize("data", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello
    b"HELLO WORLD\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",  # HTTP, but not an upgrade
])
def test_garbage_request_gets_400(data):
    h = harness()
    c = h.raw_client(data)
    assert c.status == 400 and c.body.startswith(b"malformed upgrade request")
    assert c.tcp_closed and h.proxy.connections == 0


def test_request_head_over_max_header_size_in_pieces_gets_431():
    h = harness(max_header_size=1024)
    data = upgrade_request(f"/{ID1}", [("X-Big", "a" * 2000)])
    c = h.raw_client()
    for i in range(0, len(data), 500):
        c.send_raw(data[i:i + 500])
        if c.status:
            break
    assert c.status == 431 and b"too large" in c.body


@pytest.mark.parametrize("max_header_size,header", [(1024, 2000), (16 * 1024, 20_000)])
def test_request_head_over_max_header_size_in_one_read_gets_431(max_header_size, header):
    h = harness(max_header_size=max_header_size)
    c = h.client(f"/{ID1}", headers=[("X-Big", "a" * header)])
    assert c.status == 431 and not c.accepted
    assert h.proxy.pipes() == []


def test_duplicate_live_client_id_gets_409_and_id_is_reusable_after_pipe_ends():
    h = harness()
    h.backend("ws://b1/")
    first = h.client(f"/{ID1}")
    second = h.client(f"/{ID1}")
    assert second.status == 409 and ID1.encode() in second.body
    assert first.close is None
    first.close_ws(1000)
    third = h.client(f"/app/{ID1}")
    assert third.accepted


def test_over_max_connections_gets_503():
    h = harness(max_connections=2)
    h.backend("ws://b1/")
    a, b = h.client(), h.client()
    c = h.client()
    assert a.accepted and b.accepted
    assert c.status == 503 and b"max_connections" in c.body
    a.close_ws()
    assert h.client().accepted


def test_unfinished_handshake_gets_408_after_handshake_timeout():
    h = harness(handshake_timeout=10)
    c = h.raw_client(b"GET /" + ID1.encode() + b" HTTP/1.1\r\nHost: x\r\n")
    h.advance(9.9)
    assert c.status is None and not c.tcp_closed
    h.advance(0.1)
    assert c.status == 408 and c.tcp_closed
    assert h.proxy.connections == 0 and h.proxy.next_deadline() is None


def test_client_that_hangs_up_during_handshake_is_forgotten():
    h = harness()
    c = h.raw_client(b"GET / HTTP/1.1\r\n")
    c.eof()
    assert h.proxy.connections == 0 and h.proxy.next_deadline() is None


@pytest.mark.parametrize("offered,allowed,chosen", [
    (["b", "a"], ("a", "b"), "b"),
    (["x", "a", "b"], ("a", "b"), "a"),
    (["x"], ("a",), None),
    (["x", "y"], ("*",), "x"),
    ([], ("a",), None),
])
def test_subprotocol_is_first_client_offered_allowed_and_offered_to_backend(offered, allowed,
                                                                            chosen):
    h = harness(subprotocols=allowed)
    b1 = h.backend("ws://b1/")
    c = h.client(subprotocols=offered)
    assert c.accepted and c.subprotocol == chosen
    request = b1.links[0].request
    assert request is not None  # the backend was offered what the client may have
    assert request.subprotocols == [p for p in offered if p in allowed or "*" in allowed]


def test_unsupported_websocket_version_gets_426_naming_version_13():
    h = harness()
    c = h.raw_client(
        b"GET /" + ID1.encode() + b" HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        b"Sec-WebSocket-Version: 8\r\n\r\n")
    assert c.status == 426 and c.tcp_closed
    response = b"".join(a.data for a in h.actions if getattr(a, "conn", None) == c.conn
                        and hasattr(a, "data"))
    assert b"\r\nsec-websocket-version: 13\r\n" in response.lower()


def test_frames_sent_too_early_do_not_count_towards_the_header_limit():
    # A client that (wrongly) sends a frame right behind its request, in the same
    # read, has a small head: it is accepted, not refused with 431.
    import struct


    h = harness(max_header_size=1024)
    h.backend("ws://b1/")
    c = h.raw_client()
    request = c.ws.send(Request(host="proxy", target="/" + ID1))
    payload, mask = b"x" * 4000, b"\x01\x02\x03\x04"
    frame = (bytes([0x82, 0xFE]) + struct.pack("!H", len(payload)) + mask
             + bytes(p ^ mask[i % 4] for i, p in enumerate(payload)))
    c.send_raw(request + frame)
    assert c.status is None and h.proxy.pipes()[0].client_id == ID1


def test_http_1_0_upgrade_request_gets_400_saying_http_1_1_is_needed():
    h = harness()
    h.backend("ws://b1/")
    c = h.raw_client(upgrade_request(f"/{ID1}", []).replace(b" HTTP/1.1\r\n", b" HTTP/1.0\r\n"))
    assert c.status == 400 and c.tcp_closed
    assert b"needs HTTP/1.1, got HTTP/1.0" in c.body


def test_sec_websocket_version_8_is_named_as_unsupported_not_missing():
    h = harness()
    c = h.raw_client(upgrade_request(f"/{ID1}", []).replace(
        b"Sec-WebSocket-Version: 13", b"Sec-WebSocket-Version: 8"))
    assert c.status == 426
    assert c.body == b"unsupported Sec-WebSocket-Version: this proxy speaks version 13\n"


def test_frames_sent_in_the_same_packet_as_the_request_are_relayed_not_dropped():
    h = harness()
    b1 = h.backend("ws://b1/", echo=True)
    h.raw_client(upgrade_request(f"/{ID1}", []) + masked_frame(0x1, b"eager")
                 + masked_frame(0x2, b"\x00\x01"))
    assert b1.messages() == ["eager", b"\x00\x01"]


def test_idle_pending_connections_of_one_peer_make_room_for_a_real_client():
    """The oldest idle handshake of that peer is closed (408); other peers are untouched."""
    h = harness(max_pending_per_peer=3)
    h.backend("ws://b1/")
    other = h.raw_client(b"GET / HTT", peer="10.0.0.9")
    idle = [h.raw_client(b"GET / HTT") for _ in range(3)]
    real = h.client()  # a fourth connection from the same peer
    assert real.accepted
    assert idle[0].status == 408 and b"more than 3 pending from 127.0.0.1" in idle[0].body
    assert all(c.status is None and not c.tcp_closed for c in idle[1:])
    assert other.status is None and not other.tcp_closed
    assert h.proxy.stats.clients_rejected[408] == 1


def test_pending_handshakes_in_all_are_bounded_by_closing_the_oldest():
    h = harness(max_pending_handshakes=4, max_pending_per_peer=100)
    idle = [h.raw_client(b"GET / HTT", peer=f"10.0.0.{i}") for i in range(6)]
    assert [c.status for c in idle] == [408, 408, None, None, None, None]
    assert b"more than 4 pending handshakes" in idle[0].body
    assert h.proxy.connections == 4

"""The pre-upgrade client side: HTTP errors, request snapshots, subprotocol choice."""

from __future__ import annotations

import h11
import pytest
from wsproto.events import Request

from wspipe_core.handshake import allowed_subprotocols, http_error, request_info


@pytest.mark.parametrize("status", [400, 408, 409, 431, 503, 599])
def test_http_error_is_a_complete_response_with_a_one_line_body(status):
    data = http_error(status, "why\nit\r\nfailed  here")
    conn = h11.Connection(h11.CLIENT)
    conn.send(h11.Request(method="GET", target="/", headers=[("Host", "x")]))
    conn.send(h11.EndOfMessage())
    conn.receive_data(data)
    response = conn.next_event()
    assert isinstance(response, h11.Response) and response.status_code == status
    body = conn.next_event()
    assert isinstance(body, h11.Data) and body.data == b"why it failed here\n"
    assert (b"connection", b"close") in [(k, v) for k, v in response.headers]


def test_http_error_body_is_bounded():
    data = http_error(400, "x" * 10_000)
    assert len(data) < 400


def test_request_info_lower_cases_headers_and_splits_target():
    request = Request(host="proxy", target="/a/b?x=1&y=2", subprotocols=["chat", "v2"],
                      extra_headers=[(b"X-Custom", b"V")])
    info = request_info(request, "10.0.0.1", True)
    assert (info.path, info.query) == ("/a/b", "x=1&y=2")
    assert info.header("x-custom") == "V" and info.header("X-CUSTOM") == "V"
    assert info.header("host") == "proxy"
    assert info.subprotocols == ("chat", "v2")
    assert (info.peer, info.tls) == ("10.0.0.1", True)


@pytest.mark.parametrize("offered,allowed,kept", [
    (("a", "b"), ("b", "a"), ("a", "b")),
    (("x", "b"), ("a", "b"), ("b",)),
    (("x",), (), ()),
    ((), ("*",), ()),
    (("q", "r"), ("*",), ("q", "r")),
    (("q", "r"), None, ("q", "r")),
])
def test_allowed_subprotocols_keep_the_clients_order(offered, allowed, kept):
    assert allowed_subprotocols(offered, allowed) == kept

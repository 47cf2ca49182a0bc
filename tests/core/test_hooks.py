"""Plugins: user implementations win over the built-ins; a misbehaving plugin falls back safely."""

from __future__ import annotations

import pytest

from wspipe_core import (
    BackendRequest,
    ConfigError,
    PipeEventKind,
    PipeState,
    Reject,
    hookimpl,
    make_plugin_manager,
)

from .helpers import ID1, harness


class Boom(Exception):
    pass


# Opt-in arguments: pluggy passes only the arguments an impl names, so name them all.
class _RaisingClientId:
    @hookimpl(tryfirst=True)
    def wspipe_client_id(self, request):
        raise Boom


class _RaisingAuth:
    @hookimpl(tryfirst=True)
    def wspipe_authenticate(self, request, client_id):
        raise Boom


class _RaisingSelect:
    def __init__(self):
        self.raising = True

    @hookimpl(tryfirst=True)
    def wspipe_select_backend(self, pipe, candidates):
        if self.raising:
            raise Boom


class _RaisingBackoff:
    @hookimpl(tryfirst=True)
    def wspipe_backoff(self, pipe, attempt):
        raise Boom


class _RaisingBufferFull:
    @hookimpl(tryfirst=True)
    def wspipe_buffer_full(self, pipe):
        raise Boom


class _RaisingBackendRequest:
    @hookimpl(tryfirst=True)
    def wspipe_backend_request(self, request):
        raise Boom


class _RaisingPipeEvent:
    @hookimpl
    def wspipe_pipe_event(self, event):
        raise Boom


def test_raising_client_id_hook_refuses_that_client_with_400():
    h = harness(plugins=[_RaisingClientId()])
    c = h.client(f"/{ID1}")
    assert c.status == 400 and h.proxy.connections == 0


def test_raising_authenticate_hook_refuses_with_500():
    h = harness(plugins=[_RaisingAuth()])
    c = h.client(f"/{ID1}")
    assert c.status == 500 and b"internal error" in c.body


def test_raising_select_backend_hook_keeps_the_client_and_retries():
    plugin = _RaisingSelect()
    h = harness(plugins=[plugin], backoff="fixed", backoff_base=1)
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("held")
    assert c.accepted and c.close is None and b1.links == []
    plugin.raising = False
    h.advance(1)
    assert b1.messages() == ["held"]


def test_raising_backoff_hook_uses_backoff_base():
    h = harness(plugins=[_RaisingBackoff()], backoff_base=0.25)
    h.backend("ws://b1/", mode="refuse")
    h.client()
    (pipe,) = h.proxy.pipes()
    assert pipe.attempts == 1 and pipe.retry_at == pytest.approx(0.25)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0, "soon", None])
def test_backoff_hook_returning_nonsense_uses_backoff_base(value):
    class Nonsense:
        @hookimpl(tryfirst=True)
        def wspipe_backoff(self):
            return value

    h = harness(plugins=[Nonsense()], backoff="fixed", backoff_base=0.25, max_interruption=5)
    h.backend("ws://b1/", mode="refuse")
    c = h.client()
    assert h.proxy.next_deadline() == pytest.approx(0.25)
    h.advance(5)  # and max_interruption is still enforced
    assert c.close is not None and c.close.code == 1013


def test_raising_buffer_full_hook_closes_that_client_with_1013():
    h = harness(plugins=[_RaisingBufferFull()], buffer_policy="pause", buffer_limit=1000,
                max_message_size=1000)
    h.backend("ws://b1/", mode="refuse")
    c, other = h.client(), h.client()
    c.send(b"x" * 600)
    c.send(b"x" * 600)
    assert c.close is not None and c.close.code == 1013
    assert other.close is None


def test_raising_backend_request_hook_sends_the_request_unchanged():
    h = harness(plugins=[_RaisingBackendRequest()])
    b1 = h.backend("ws://b1/")
    h.client(f"/{ID1}")
    assert b1.links[0].header("x-wspipe-client-id") == ID1
    assert h.proxy.pipes()[0].state is PipeState.LINKED


def test_raising_pipe_event_hook_is_ignored():
    h = harness(plugins=[_RaisingPipeEvent()])
    b1 = h.backend("ws://b1/")
    c = h.client()
    c.send("fine")
    b1.links[0].eof()
    c.close_ws()
    assert b1.messages() == ["fine"] and h.proxy.idle


def test_select_backend_returning_a_non_candidate_is_ignored():
    class Wrong:
        @hookimpl(tryfirst=True)
        def wspipe_select_backend(self, candidates):
            return "b1"

    h = harness(plugins=[Wrong()], max_interruption=3)
    b1 = h.backend("ws://b1/")
    c = h.client()
    assert b1.links == []
    h.advance(3)
    assert c.close is not None and c.close.code == 1013


def test_user_plugins_override_the_builtins():
    class Auth:
        @hookimpl
        def wspipe_authenticate(self, request):
            if request.header("authorization") != "Bearer ok":
                return Reject(401, "no token")
            return None

    class Request:
        @hookimpl
        def wspipe_backend_request(self, request):
            return BackendRequest("/rewritten", (*request.headers, ("x-extra", "1")),
                                  request.subprotocol)

    class ClientId:
        @hookimpl
        def wspipe_client_id(self, request):
            return request.header("x-user")

    h = harness(plugins=[Auth(), Request(), ClientId()])
    b1 = h.backend("ws://b1/")
    refused = h.client("/anything", headers=[("X-User", "alice")])
    assert refused.status == 401 and refused.body == b"no token\n"
    ok = h.client("/anything", headers=[("X-User", "alice"), ("Authorization", "Bearer ok")])
    assert ok.accepted and h.proxy.pipes()[0].client_id == "alice"
    assert b1.links[0].request.target == "/rewritten"
    assert b1.links[0].header("x-extra") == "1"


def test_pipe_events_report_the_life_of_a_pipe():
    events = []

    class Recorder:
        @hookimpl
        def wspipe_pipe_event(self, event):
            events.append(event)

    h = harness(plugins=[Recorder()])
    b1 = h.backend("ws://b1/")
    h.backend("ws://b2/")
    c = h.client()
    b1.links[0].eof()
    c.close_ws(1000)
    kinds = [e.kind for e in events]
    assert kinds == [PipeEventKind.OPENED, PipeEventKind.LINKED, PipeEventKind.INTERRUPTED,
                     PipeEventKind.RESUMED, PipeEventKind.CLOSED]
    assert events[2].backend is not None and events[2].backend.id == "b1"
    assert events[3].backend is not None and events[3].backend.id == "b2"
    assert events[-1].code == 1000


def test_plugin_implementing_an_unknown_hook_is_a_config_error():
    class Typo:
        @hookimpl
        def wspipe_selekt_backend(self):
            return None

    from wspipe_core import ProxyConfig

    with pytest.raises(ConfigError):
        make_plugin_manager(ProxyConfig(), plugins=[Typo()])


def test_unimportable_plugin_module_is_a_config_error():
    from wspipe_core import ProxyConfig

    with pytest.raises(ConfigError, match="no_such_module"):
        make_plugin_manager(ProxyConfig(), plugins=["no_such_module_xyz"])


@pytest.mark.parametrize("bad", [
    BackendRequest("/ok", (("x-bad", "a\r\nb"),), None),
    BackendRequest("no slash and spaces", (), None),
    BackendRequest("/ok", (("bad name", "v"),), None),
])
def test_backend_request_hook_returning_an_invalid_request_sends_the_default(bad):
    class Invalid:
        @hookimpl
        def wspipe_backend_request(self):
            return bad

    h = harness(plugins=[Invalid()])
    b1 = h.backend("ws://b1/")
    c = h.client(f"/{ID1}?q=1")
    assert b1.links[0].request is not None
    assert b1.links[0].request.target == f"/{ID1}?q=1"
    assert b1.links[0].header("x-wspipe-client-id") == ID1
    c.send("through")
    assert b1.messages() == ["through"]


@pytest.mark.parametrize("client_id", ["id\r\nx", "tab\there\x00", " padded", ""])
def test_client_id_hook_returning_an_id_unfit_for_a_header_refuses_with_400(client_id):
    class Weird:
        @hookimpl
        def wspipe_client_id(self):
            return client_id

    h = harness(plugins=[Weird()])
    h.backend("ws://b1/")
    c = h.client("/anything")
    assert c.status == 400 and h.proxy.connections == 0

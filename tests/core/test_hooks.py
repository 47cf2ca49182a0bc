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


class _Observer:
    """Records the kind of every pipe event it sees."""

    def __init__(self):
        self.kinds = []

    @hookimpl
    def wspipe_pipe_event(self, event):
        self.kinds.append(event.kind)


class _NoArgObserver:
    """Takes none of the hook's arguments (pluggy's opt-in arguments)."""

    def __init__(self):
        self.calls = 0

    @hookimpl
    def wspipe_pipe_event(self):
        self.calls += 1


LIFE = [PipeEventKind.OPENED, PipeEventKind.LINKED, PipeEventKind.INTERRUPTED,
        PipeEventKind.RESUMED, PipeEventKind.CLOSED]


def _live_a_pipe(h):
    """Open a pipe, interrupt it (it resumes on the second backend), close it."""
    b1 = h.backend("ws://b1/")
    h.backend("ws://b2/")
    c = h.client()
    c.send("fine")
    b1.links[0].eof()
    c.close_ws()
    return b1, c


@pytest.mark.parametrize("raiser_marker", [{}, {"tryfirst": True}, {"trylast": True}])
def test_a_raising_observer_does_not_keep_the_others_from_any_event(raiser_marker, caplog):
    class Raising:
        @hookimpl(**raiser_marker)
        def wspipe_pipe_event(self, event):
            raise Boom(event.kind.value)

    before, after, bare = _Observer(), _Observer(), _NoArgObserver()
    h = harness(plugins=[before, Raising(), after, bare])
    with caplog.at_level("ERROR", logger="wspipe.plugins"):
        b1, c = _live_a_pipe(h)
    assert before.kinds == LIFE and after.kinds == LIFE and bare.calls == len(LIFE)
    assert b1.messages() == ["fine"] and c.close is not None and h.proxy.idle
    logged = [r for r in caplog.records if r.name == "wspipe.plugins"]
    assert len(logged) == len(LIFE)  # once per raising call
    for record, kind in zip(logged, LIFE, strict=True):
        message = record.getMessage()  # names the plugin (module.Class)
        assert message.startswith("wspipe_pipe_event of plugin '")
        assert message.endswith(".Raising' raised; ignored")
        assert record.exc_info is not None and str(record.exc_info[1]) == kind.value


def test_observers_are_called_in_pluggys_order():
    calls = []

    def observer(name, **marker):
        class Named:
            @hookimpl(**marker)
            def wspipe_pipe_event(self, event):
                if event.kind is PipeEventKind.OPENED:
                    calls.append(name)
        return Named()

    h = harness(plugins=[observer("first"), observer("last", trylast=True),
                         observer("second"), observer("early", tryfirst=True)])
    h.backend("ws://b1/")
    h.client()
    assert calls == ["early", "second", "first", "last"]


def test_a_wrapper_of_pipe_event_is_refused_at_start_up():
    class Wrapper:
        @hookimpl(wrapper=True)
        def wspipe_pipe_event(self, event):
            return (yield)

    with pytest.raises(ConfigError, match="wspipe_pipe_event cannot be a wrapper"):
        harness(plugins=[Wrapper()])


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
                                  request.subprotocols)

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

"""Active health checks (wspipe_core.health): probes on the core's clock, fed to pool health.

The proxy is driven directly with explicit time, and each probe is answered by a
real wsproto server connection (or not answered at all), so what is checked is
the bytes the core asks the driver to write and what it makes of the bytes that
come back. No client connects in these tests unless one is named: the pool's
health must be right with no traffic.
"""

from __future__ import annotations

import random
import uuid

import pytest
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, RejectConnection, Request

from wspipe_core import BackendState, ConfigError, Proxy, ProxyConfig
from wspipe_core import actions as act
from wspipe_core import events as ev


class Run:
    """A proxy with its own clock; collects every action it returns."""

    def __init__(self, *urls: str, **config: object) -> None:
        cfg = ProxyConfig(backends=urls, ping_interval=0, **config)  # type: ignore[arg-type]
        self.proxy = Proxy(cfg, rng=random.Random(0))
        self.now = 0.0
        self.actions: list[act.Action] = []

    def advance(self, until: float) -> list[act.Action]:
        """Fire every deadline up to ``until``; return the actions they produced."""
        out: list[act.Action] = []
        for _ in range(10_000):  # bounded
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > until:
                break
            self.now = max(self.now, deadline)
            out += self.proxy.handle_timer(self.now)
        self.now = until
        self.actions += out
        return out

    def feed(self, event: ev.Event) -> list[act.Action]:
        out = self.proxy.handle(event, self.now)
        self.actions += out
        return out

    def probes(self, actions: list[act.Action]) -> list[act.ProbeBackend]:
        return [a for a in actions if isinstance(a, act.ProbeBackend)]

    def state(self, backend_id: str = "b1") -> BackendState:
        return next(b.state for b in self.proxy.backends() if b.id == backend_id)


def server_answer(request: bytes, status: int = 101) -> bytes:
    """What a real WebSocket server answers to ``request``: accept, or ``status``."""
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    assert isinstance(next(server.events()), Request)
    if status == 101:
        return server.send(AcceptConnection())
    return server.send(RejectConnection(status_code=status))


def parsed_request(request: bytes) -> Request:
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(request)
    event = next(server.events())
    assert isinstance(event, Request)
    return event


def test_health_checks_are_off_by_default() -> None:
    run = Run("ws://b1:80/")
    assert run.proxy.next_deadline() is None
    assert run.probes(run.advance(3600)) == []
    health = run.proxy.backend_health()[0]
    assert (health.checks, health.next_check, health.last_ok) == (0, None, None)


def test_the_probe_is_a_websocket_upgrade_built_by_the_core() -> None:
    run = Run("ws://b1:9000/ws?room=1", "wss://b2/", health_check_interval=5)
    probes = run.probes(run.advance(0))
    assert [(p.host, p.port, p.tls, p.url) for p in probes] == [
        ("b1", 9000, False, "ws://b1:9000/ws?room=1"), ("b2", 443, True, "wss://b2/")]
    first = parsed_request(probes[0].request)
    assert (first.host, first.target) == ("b1:9000", "/ws?room=1")  # the URL's own target
    headers = dict(first.extra_headers)
    assert headers[b"user-agent"] == b"wspipe-health-check"
    assert headers[b"x-wspipe-health-check"] == b"1"
    assert probes[0].timeout == 2.0

    other = Run("ws://b1:9000/ws", health_check_interval=5, health_check_path="/healthz")
    assert parsed_request(other.probes(other.advance(0))[0].request).target == "/healthz"


def test_a_101_is_a_success_and_the_probe_closes_with_a_close_frame() -> None:
    run = Run("ws://b1/", health_check_interval=5)
    probe = run.probes(run.advance(0))[0]
    out = run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))
    close = [a for a in out if isinstance(a, act.CloseProbe)]
    assert [c.probe for c in close] == [probe.probe]
    # The bytes after a 101 are a masked Close frame 1000 that the backend can read.
    server = WSConnection(ConnectionType.SERVER)
    server.receive_data(probe.request)
    list(server.events())
    server.send(AcceptConnection())
    server.receive_data(close[0].data)
    closing = next(server.events())
    assert isinstance(closing, CloseConnection) and closing.code == 1000
    health = run.proxy.backend_health()[0]
    assert (health.checks, health.check_failures, health.last_ok, health.last_result) == (
        1, 0, True, "101")
    assert (health.last_check, health.next_check) == (0.0, 5.0)
    # One probe per interval, never two at once.
    assert run.probes(run.advance(4.9)) == []
    assert len(run.probes(run.advance(5.0))) == 1
    assert run.probes(run.advance(9.9)) == []  # the one in flight has not answered


def test_a_backend_that_comes_back_is_up_within_one_check_interval_with_no_traffic() -> None:
    interval = 5.0
    run = Run("ws://b1/", health_check_interval=interval, health_check_timeout=1,
              eject_after=3, eject_base=60, eject_max=60)
    for _ in range(3):  # the backend is down: three refused probes eject it
        probe = run.probes(run.advance(run.proxy.next_deadline() or 0))[0]
        run.feed(ev.ProbeResult(probe.probe, error="connection refused"))
    assert run.state() is BackendState.EJECTED
    assert run.proxy.backend_health()[0].last_result == "connection refused"
    assert run.proxy.backends()[0].errors == 3  # probe failures count as errors
    came_back = run.now + 0.5
    run.advance(came_back)
    assert run.state() is BackendState.EJECTED  # 60 s cool-down, not over
    probe = run.probes(run.advance(came_back + interval))[0]
    run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))
    assert run.now <= came_back + interval
    assert run.state() is BackendState.UP
    assert run.proxy.backends()[0].consecutive_failures == 0
    assert run.proxy.backend_health()[0].ejected_until is None
    assert not any(isinstance(a, act.OpenLink) for a in run.actions)  # no traffic at all


@pytest.mark.parametrize(("answer", "why"), [
    (lambda req: server_answer(req, 503), "HTTP 503, expected 101"),
    (lambda req: server_answer(req, 404), "HTTP 404, expected 101"),
    (lambda req: b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                 b"Connection: Upgrade\r\nSec-WebSocket-Accept: forged\r\n\r\n",
     "bad answer to the upgrade"),
    (lambda req: b"HTTP/1.1 101 Switching", "incomplete answer to the upgrade"),
    (lambda req: b"", "connection closed before a complete answer"),
    (lambda req: b"\x16\x03\x01 not http\r\n\r\n", "bad answer to the upgrade"),
])
def test_a_wrong_answer_is_a_failure_saying_why(answer, why) -> None:
    run = Run("ws://b1/", health_check_interval=5, eject_after=1)
    probe = run.probes(run.advance(0))[0]
    out = run.feed(ev.ProbeResult(probe.probe, answer(probe.request)))
    assert [a for a in out if isinstance(a, act.CloseProbe)] == [act.CloseProbe(probe.probe, b"")]
    health = run.proxy.backend_health()[0]
    assert health.last_ok is False and health.last_result.startswith(why)
    assert run.state() is BackendState.EJECTED


def test_the_expected_status_is_configurable() -> None:
    run = Run("ws://b1/", health_check_interval=5, health_check_status=426, eject_after=1)
    probe = run.probes(run.advance(0))[0]
    run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request, 426)))
    assert run.proxy.backend_health()[0].last_ok is True
    probe = run.probes(run.advance(5))[0]
    run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))  # a 101 is wrong here
    assert run.proxy.backend_health()[0].last_result == "HTTP 101, expected 426"
    assert run.state() is BackendState.EJECTED


def test_a_probe_that_gets_no_answer_times_out_ejects_at_once_and_is_closed() -> None:
    run = Run("ws://b1/", health_check_interval=5, health_check_timeout=1.5, eject_after=3)
    probe = run.probes(run.advance(0))[0]
    assert run.advance(1.4) == []
    out = run.advance(1.5)
    assert act.CloseProbe(probe.probe, b"") in out
    assert run.state() is BackendState.EJECTED  # like a link that times out
    assert run.proxy.backend_health()[0].last_result == "timed out after 1.5s"
    assert run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request))) == []  # too late
    assert run.state() is BackendState.EJECTED


def test_failing_probes_keep_an_ejected_backend_out_past_its_cool_down() -> None:
    run = Run("ws://b1/", health_check_interval=5, health_check_timeout=1, eject_after=1,
              eject_base=1, eject_max=1)
    for _ in range(3):
        probe = run.probes(run.advance(run.proxy.next_deadline() or 0))[0]
        run.feed(ev.ProbeResult(probe.probe, error="connection refused"))
        assert run.state() is BackendState.EJECTED
        run.advance(run.now + 4.9)  # the 1 s cool-down is long over: still out
        assert run.state() is BackendState.EJECTED
    probe = run.probes(run.advance(run.proxy.next_deadline() or 0))[0]
    run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))
    assert run.state() is BackendState.UP


def test_without_health_checks_a_cool_down_ends_on_its_own() -> None:
    """The passive behaviour is unchanged: an ejection ends at its cool-down."""
    run = Run("ws://b1/", eject_after=1, eject_base=1)
    run.proxy.add_backend("ws://b2/", now=0)
    connect_client(run)
    fail_links(run, "b1")
    assert run.state("b1") is BackendState.EJECTED
    run.advance(run.now + 1.0)
    assert run.state("b1") is BackendState.UP


def connect_client(run: Run) -> None:
    client = WSConnection(ConnectionType.CLIENT)
    run.feed(ev.ClientConnected(1, "127.0.0.1"))
    run.feed(ev.ClientDataReceived(1, client.send(Request(host="proxy",
                                                          target=f"/{uuid.uuid4()}"))))


def fail_links(run: Run, backend_id: str) -> None:
    """Refuse the proxy's open links to ``backend_id`` (passive failures)."""
    url = next(b.url for b in run.proxy.backends() if b.id == backend_id)
    for action in list(run.actions):
        if isinstance(action, act.OpenLink) and action.url == url:
            run.feed(ev.LinkConnectFailed(action.link, "connection refused"))
            run.actions.remove(action)


def test_a_passive_ejection_ends_with_the_first_successful_probe() -> None:
    run = Run("ws://b1/", "ws://b2/", health_check_interval=5, eject_after=1, eject_base=60,
              eject_max=60)
    for probe in run.probes(run.advance(0)):
        run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))
    connect_client(run)  # least connections: b1 first
    fail_links(run, "b1")
    assert run.state("b1") is BackendState.EJECTED
    assert run.state("b2") is BackendState.UP
    probes = run.probes(run.advance(5))
    assert {p.url for p in probes} == {"ws://b1/", "ws://b2/"}  # ejected ones are probed
    for probe in probes:
        run.feed(ev.ProbeResult(probe.probe, server_answer(probe.request)))
    assert run.state("b1") is BackendState.UP  # 55 s before its cool-down would end


def test_draining_and_removed_backends_are_not_probed() -> None:
    run = Run("ws://b1/", "ws://b2/", health_check_interval=5)
    first = run.probes(run.advance(0))
    assert len(first) == 2
    run.feed(ev.ProbeResult(first[1].probe, server_answer(first[1].request)))
    run.proxy.remove_backend("b1", migrate=False, now=run.now)  # no pipes: leaves at once
    assert [b.id for b in run.proxy.backends()] == ["b2"]
    assert run.feed(ev.ProbeResult(first[0].probe, error="refused")) == [
        act.CloseProbe(first[0].probe, b"")]
    assert [p.url for p in run.probes(run.advance(5))] == ["ws://b2/"]
    added = run.proxy.add_backend("ws://b3/", now=run.now)
    assert [p.url for p in run.probes(run.advance(run.now))] == ["ws://b3/"]  # at once
    assert added.id == "b3"


def test_shutdown_closes_probes_in_flight_and_starts_no_more() -> None:
    run = Run("ws://b1/", health_check_interval=5)
    probe = run.probes(run.advance(0))[0]
    assert act.CloseProbe(probe.probe, b"") in run.proxy.shutdown(run.now)
    assert run.probes(run.advance(60)) == []
    assert run.proxy.next_deadline() is None


@pytest.mark.parametrize("config", [
    {"health_check_interval": -1}, {"health_check_interval": float("inf")},
    {"health_check_interval": 5, "health_check_timeout": 0},
    {"health_check_path": "healthz"}, {"health_check_path": "/a b"},
    {"health_check_status": 99}, {"health_check_status": True},
])
def test_invalid_health_check_settings_are_refused(config) -> None:
    with pytest.raises(ConfigError, match="health_check"):
        ProxyConfig(**config)


def test_the_harness_answers_probes_with_its_fake_backends() -> None:
    from wspipe_core.testing import Harness

    h = Harness(ProxyConfig(health_check_interval=1, ping_interval=0))
    backend = h.backend("ws://b1/", mode="refuse")
    h.advance(1.5)  # probed at registration and after one interval: refused twice
    assert len(h.probes) == 2 and h.proxy.backends()[0].consecutive_failures == 2
    backend.mode = "accept"
    h.advance(1)
    assert len(h.probes) == 3 and h.proxy.backends()[0].consecutive_failures == 0
    backend.mode = "blackhole"
    h.advance(1 + h.proxy.config.health_check_timeout)  # no answer: ejected at once
    assert h.proxy.backends()[0].state is BackendState.EJECTED

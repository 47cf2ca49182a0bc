"""The harness: a proxy wired to fake peers, with explicit time and instant writes."""

from __future__ import annotations

import random
import uuid
from collections import deque
from collections.abc import Sequence

from wsproto.events import Request

from .. import actions as act
from .. import events as ev
from ..config import ProxyConfig
from ..hooks import make_plugin_manager
from ..info import PipeInfo
from ..proxy import Proxy
from ..store import StoreAction, StoreHealth
from ..wire import Wire
from .invariants import check_invariants
from .peers import BackendLink, FakeBackend, FakeClient
from .store import MemoryStore


class Harness:
    """A proxy wired to fake peers, with explicit time (``now``) and instant writes.

    :param config: The proxy configuration (its ``backends`` are ignored: use
        :meth:`backend`).
    :param plugins: Plugin objects or module paths registered after the built-ins.
    :param seed: Seed of the proxy's random source.
    :param auto_ack: Report every write as done at once (``*DataSent``); turn off to
        test backpressure, then call :meth:`ack`.
    :param honour_pauses: Act like a driver that stops reading a paused connection:
        what its peer sends waits until the proxy resumes it.
    :param check: Run :func:`check_invariants` after every call of the proxy.
    :param instance: Run the proxy as this fleet instance (see :mod:`wspipe_core.fleet`).
    :param store: The :class:`MemoryStore` its store actions go to (share one between
        harnesses for a fleet); it is reported reachable at once unless ``down``.
    :param wire: The proxy's frame layer (:class:`~wspipe_core.wire.Wire`; the
        reference :class:`~wspipe_core.testing.WsprotoWire` to compare with wsproto).
    """

    def __init__(self, config: ProxyConfig | None = None, *, plugins: Sequence[object] = (),
                 seed: int = 0, auto_ack: bool = True, honour_pauses: bool = False,
                 check: bool = False, wire: Wire | None = None,
                 instance: str | None = None, store: MemoryStore | None = None) -> None:
        config = config or ProxyConfig()
        pm = make_plugin_manager(config, plugins=plugins)
        self.proxy = Proxy(config, pm=pm, rng=random.Random(seed), wire=wire,
                           instance=instance)
        self.store = store
        self.now = 0.0
        self.auto_ack = auto_ack
        self.honour_pauses = honour_pauses
        self.check = check
        #: Connections the proxy told the driver not to read: ("c"|"l", id).
        self.paused: set[tuple[str, int]] = set()
        #: What arrived from paused connections, waiting to be read.
        self.unread: dict[tuple[str, int], list[ev.Event]] = {}
        self.clients: dict[int, FakeClient] = {}
        self.backends: dict[str, FakeBackend] = {}
        self.links: dict[int, BackendLink] = {}
        #: Every action the proxy returned, in order.
        self.actions: list[act.Action] = []
        #: Every health check the proxy made (see :meth:`FakeBackend.probe_answer`).
        self.probes: list[act.ProbeBackend] = []
        #: The answers of discovery queries (:class:`~wspipe_core.actions.ResolveBackends`)
        #: by name: a list of (host, port), or a string (the error). A name not here
        #: fails with "no such name"; set ``hold_resolutions`` to answer by hand.
        self.dns: dict[str, list[tuple[str, int]] | str] = {}
        #: Every discovery query the proxy made.
        self.resolutions: list[act.ResolveBackends] = []
        self.hold_resolutions = False
        #: Unacknowledged bytes per ("c"|"l", id) when ``auto_ack`` is off.
        self.unacked: dict[tuple[str, int], int] = {}
        self._queue: deque[ev.Event] = deque()
        self._busy = False
        self._next_conn = 1
        if store is not None and not store.down:
            self.feed(StoreHealth(True))

    # -- peers

    def backend(self, url: str, *, echo: bool = False, mode: str = "accept",
                weight: float = 1.0, subprotocols: Sequence[str] | None = None,
                register: bool = True) -> FakeBackend:
        """Register ``url`` in the pool and return its fake backend (see :class:`FakeBackend`).

        ``register=False`` only starts the fake backend (discovery or a reload adds it).
        """
        backend = FakeBackend(self, url, echo=echo, mode=mode, subprotocols=subprotocols)
        self.backends[url] = backend
        if register:
            self.proxy.add_backend(url, weight=weight, now=self.now)
            if self.proxy.fleet is not None:
                self.advance(0)  # a fleet publishes the registration
        return backend

    def poll_store(self) -> None:
        """Deliver what the store holds for this instance (handovers), as the driver's
        poll does."""
        assert self.store is not None and self.proxy.fleet is not None
        for event in self.store.poll(self.proxy.fleet.instance):
            self.feed(event)

    def sync_registry(self) -> None:
        """Deliver the store's registry to the proxy, as the driver's poll does."""
        assert self.store is not None
        self.feed(self.store.snapshot())

    def resolve(self, query: act.ResolveBackends) -> None:
        """Answer a discovery query from :attr:`dns` (with ``hold_resolutions``)."""
        answer = self.dns.get(query.name, "no such name")
        if isinstance(answer, str):
            self.feed(ev.BackendsResolved(query.query, error=answer))
        else:
            self.feed(ev.BackendsResolved(query.query, tuple(answer)))

    def client(self, path: str | None = None, *, subprotocols: Sequence[str] = (),
               headers: Sequence[tuple[str, str]] = (), peer: str = "127.0.0.1") -> FakeClient:
        """Connect a client and send its upgrade request (path ``/<new uuid>`` by default)."""
        conn = self._next_conn
        self._next_conn += 1
        client = FakeClient(self, conn)
        self.clients[conn] = client
        self.feed(ev.ClientConnected(conn, peer, False))
        target = path if path is not None else f"/{uuid.uuid4()}"
        data = client.ws.send(Request(host="proxy", target=target, subprotocols=list(subprotocols),
                                      extra_headers=[(k.encode(), v.encode())
                                                     for k, v in headers]))
        client.send_raw(data)
        return client

    def raw_client(self, data: bytes = b"", peer: str = "127.0.0.1") -> FakeClient:
        """Connect a client that sends ``data`` as it is (for malformed requests)."""
        conn = self._next_conn
        self._next_conn += 1
        client = FakeClient(self, conn)
        self.clients[conn] = client
        self.feed(ev.ClientConnected(conn, peer, False))
        if data:
            client.send_raw(data)
        return client

    # -- time and events

    def feed(self, event: ev.Event) -> None:
        """Hand one event to the proxy and route everything that follows."""
        self._queue.append(event)
        self._drain()

    def advance(self, seconds: float) -> None:
        """Move time forward, firing each deadline at its own time, in order."""
        end = self.now + seconds
        while True:
            deadline = self.proxy.next_deadline()
            if deadline is None or deadline > end:
                break
            self.now = max(self.now, deadline)
            self._run(self.proxy.handle_timer(self.now))
            self._drain()
        self.now = end

    def ack(self) -> None:
        """Report every outstanding write as done (when ``auto_ack`` is off)."""
        for (kind, ident), nbytes in list(self.unacked.items()):
            del self.unacked[(kind, ident)]
            self.feed(ev.ClientDataSent(ident, nbytes) if kind == "c"
                      else ev.LinkDataSent(ident, nbytes))

    def apply(self, actions: list[act.Action]) -> None:
        """Execute actions returned by a direct ``Proxy`` call (``remove_backend``,
        ``shutdown``, ...) and route every answer, as :meth:`feed` does."""
        self._run(actions)
        self._drain()

    def pipe(self, client: FakeClient) -> PipeInfo | None:
        """The snapshot of ``client``'s pipe, or ``None`` once it has ended."""
        return self.proxy.pipe_of(client.conn)

    def _drain(self) -> None:
        """Handle what is queued, oldest first (never re-queue one behind the others)."""
        if self._busy:
            return
        self._busy = True
        try:
            while self._queue:
                self._run(self._handle(self._queue.popleft()))
        finally:
            self._busy = False

    def _handle(self, event: ev.Event) -> list[act.Action]:
        if self.honour_pauses:
            key = (("c", event.conn) if isinstance(event, ev.ClientDataReceived)
                   else ("l", event.link) if isinstance(event, ev.LinkDataReceived) else None)
            if key is not None and key in self.paused:
                self.unread.setdefault(key, []).append(event)
                return []
        return self.proxy.handle(event, self.now)

    def _run(self, actions: list[act.Action]) -> None:
        if self.check:
            check_invariants(self.proxy)
        for action in actions:
            key = (("c", action.conn) if isinstance(action, act.PauseClient | act.ResumeClient)
                   else ("l", action.link) if isinstance(action, act.PauseLink | act.ResumeLink)
                   else None)
            if key is None:
                continue
            if isinstance(action, act.PauseClient | act.PauseLink):
                self.paused.add(key)
            else:
                self.paused.discard(key)
                # Read what waited, before anything the peer sends from now on.
                self._queue.extend(self.unread.pop(key, []))
        self.actions.extend(actions)
        for action in actions:
            self._execute(action)

    def _execute(self, action: act.Action) -> None:
        if isinstance(action, act.SendToClient):
            client = self.clients[action.conn]
            self._sent("c", action.conn, len(action.data))
            reply = client._receive(action.data)
            if reply and not client.tcp_closed:
                self._queue.append(ev.ClientDataReceived(action.conn, reply))
        elif isinstance(action, act.CloseClient):
            self.clients[action.conn].tcp_closed = True
        elif isinstance(action, act.PauseClient | act.ResumeClient):
            self.clients[action.conn].paused = isinstance(action, act.PauseClient)
        elif isinstance(action, act.OpenLink):
            backend = self.backends.get(action.url)
            if backend is None or backend.mode == "refuse":
                self._queue.append(ev.LinkConnectFailed(action.link, "connection refused"))
                return
            link = BackendLink(backend, action.link)
            backend.links.append(link)
            self.links[action.link] = link
            self._queue.append(ev.LinkConnected(action.link))
        elif isinstance(action, act.SendToLink):
            link = self.links[action.link]
            self._sent("l", action.link, len(action.data))
            reply = link._receive(action.data)
            if reply and not link.tcp_closed:
                self._queue.append(ev.LinkDataReceived(action.link, reply))
        elif isinstance(action, act.CloseLink):
            if action.link in self.links:
                self.links[action.link].tcp_closed = True
        elif isinstance(action, act.PauseLink | act.ResumeLink):
            pass
        elif isinstance(action, act.ProbeBackend):
            self.probes.append(action)
            backend = self.backends.get(action.url)
            if backend is None or backend.mode == "refuse":
                self._queue.append(ev.ProbeResult(action.probe, error="connection refused"))
                return
            answer = backend.probe_answer(action.request)
            if answer is not None:  # (a black hole never answers: the core times it out)
                self._queue.append(ev.ProbeResult(action.probe, answer))
        elif isinstance(action, act.CloseProbe):
            pass
        elif isinstance(action, StoreAction):
            if self.store is not None:
                self._queue.extend(self.store.execute(action, self.now))
        elif isinstance(action, act.ResolveBackends):
            self.resolutions.append(action)
            if not self.hold_resolutions:
                found = self.dns.get(action.name, "no such name")
                self._queue.append(
                    ev.BackendsResolved(action.query, error=found) if isinstance(found, str)
                    else ev.BackendsResolved(action.query, tuple(found)))
        else:  # pragma: no cover
            raise RuntimeError(f"unknown action {action!r}")

    def _sent(self, kind: str, ident: int, nbytes: int) -> None:
        if self.auto_ack:
            self._queue.append(ev.ClientDataSent(ident, nbytes) if kind == "c"
                               else ev.LinkDataSent(ident, nbytes))
        else:
            self.unacked[(kind, ident)] = self.unacked.get((kind, ident), 0) + nbytes



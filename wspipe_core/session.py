"""The session: a pipe, and every transition of its :class:`~wspipe_core.PipeState`.

Whatever changes a pipe's state lives here (h11's rule for ``_state.py``)::

    CONNECTING --link open (buffer replayed first)--> LINKED
    LINKED --link lost (interruption)--> INTERRUPTED --new link open, replay--> LINKED
    any --session ends (client Close/EOF, backend app close, 1009, 1013)--> CLOSING
    CLOSING --client answers, hangs up, or close_timeout--> CLOSED

While CONNECTING or INTERRUPTED the pipe dials: the strategy hook chooses a
backend (the one that just failed is excluded for that attempt) and a link that
fails before opening costs a backoff. ``max_interruption`` bounds the whole time
without a live link, the first connect included; then the client gets 1013.
Messages cross through :mod:`wspipe_core.relay`; links report what happened to
them (:mod:`wspipe_core.link`) and the session decides what it means for the pipe.
"""

from __future__ import annotations

import logging
import random
from typing import cast

from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .actions import CloseClient, CloseLink
from .codes import CloseCode, InterruptionCause, sendable
from .config import ProxyConfig
from .deadlines import Timers
from .events import ConnId
from .flow import Endpoint, Flow, Hold
from .forwarding import backend_request
from .handshake import Upgrade, choose_subprotocol
from .hooks import Hooks
from .info import PipeEvent, PipeEventKind, PipeState
from .keepalive import Keepalive
from .link import Closed, Done, Failed, Link, Links, Lost, Opened, Outcome, Proven
from .logs import pipe_log
from .pipe import ClientConn, Pipe
from .pool import Backend, Pool
from .relay import Lane, Relay, Verdict
from .stats import Stats

_OPENISH = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)
_MESSAGES = (TextMessage, BytesMessage)
_ENDED = (PipeState.CLOSING, PipeState.CLOSED)


class Sessions:
    """Every pipe, by client connection, pipe id and client id; the decisions about them."""

    def __init__(self, config: ProxyConfig, hooks: Hooks, rng: random.Random, pool: Pool,
                 flow: Flow, relay: Relay, keepalive: Keepalive, timers: Timers, links: Links,
                 stats: Stats) -> None:
        self._config = config
        self._hooks = hooks
        self._rng = rng
        self._pool = pool
        self._flow = flow
        self._relay = relay
        self._keepalive = keepalive
        self._timers = timers
        self._links = links
        self._stats = stats
        self.by_conn: dict[ConnId, Pipe] = {}
        self.by_id: dict[str, Pipe] = {}
        self.by_client_id: dict[str, Pipe] = {}
        self._next = 1

    # ------------------------------------------------------------------ opening

    def open(self, up: Upgrade, now: float) -> None:
        """Accept the client (before any backend is reached) and start dialing."""
        cfg = self._config
        subprotocol = choose_subprotocol(up.request.subprotocols, cfg.subprotocols)
        accept = up.ws.send(AcceptConnection(subprotocol=subprotocol))
        connection = up.ws.connection
        assert connection is not None  # wsproto opens it when it sends AcceptConnection
        pipe = Pipe(f"p{self._next}", up.client_id, up.request, subprotocol, now,
                    ClientConn(up.conn, connection, None), Lane(cfg.buffer_message_overhead),
                    cfg.max_interruption, interrupted_at=now)
        pipe.client.owner = pipe
        self._next += 1
        self.by_conn[up.conn] = pipe
        self.by_id[pipe.id] = pipe
        self.by_client_id[pipe.client_id] = pipe
        self._keepalive.start(pipe.client, now)
        self._timers.touch(pipe)
        self._stats.clients_accepted += 1
        self._flow.write(pipe.client, accept)
        pipe_log(logging.INFO, pipe, "client accepted from %s (subprotocol %s)", up.peer,
                 subprotocol)
        self._event(PipeEventKind.OPENED, pipe, None, now)
        self._dial(pipe, now)
        self._pump_client(pipe, now)  # frames that came with the request

    # ------------------------------------------------------------------ the client

    def client_data(self, pipe: Pipe, data: bytes, now: float) -> None:
        """Bytes from the client."""
        ws = pipe.client.ws
        if ws.state is ConnectionState.CLOSED:
            return
        self._timers.touch(pipe)
        ws.receive_data(data)
        self._pump_client(pipe, now)

    def _pump_client(self, pipe: Pipe, now: float) -> None:
        lane = pipe.lane
        if lane.paused:
            return  # the pause policy holds: frames stay undecoded in wsproto's buffer
        client = pipe.client
        relay = self._relay
        ending = pipe.state is PipeState.CLOSING
        for event in client.ws.events():
            if isinstance(event, _MESSAGES):
                if ending:
                    continue  # sent before it saw our Close: nobody to give it to
                verdict = relay.forward(pipe, client, lane, event, now)
                if verdict is not Verdict.GO:
                    self._stopped(pipe, client, verdict, now)
                    return
            elif isinstance(event, Ping):
                self._keepalive.answer(client, event)
            elif isinstance(event, Pong):
                self._keepalive.pong(client)
            elif isinstance(event, CloseConnection):
                self._client_closed(pipe, event, now)
                return

    def _stopped(self, pipe: Pipe, src: Endpoint, verdict: Verdict, now: float) -> None:
        """A message from ``src`` could not go on: what that means for the pipe."""
        if verdict is Verdict.PAUSED:
            self._timers.touch(pipe)
            return
        if src is pipe.client:
            if verdict is Verdict.TOO_BIG:
                pipe_log(logging.WARNING, pipe, "client message over max_message_size (%d)",
                         self._config.max_message_size)
                self.end(pipe, CloseCode.MESSAGE_TOO_BIG, "message too big", now)
            else:
                self.end(pipe, CloseCode.TRY_AGAIN_LATER, "buffer limit reached", now)
            return
        link = cast(Link, src)
        pipe_log(logging.WARNING, pipe, "backend %s sent a message over max_message_size on "
                 "link %d", link.backend.id, link.id)
        live = pipe.link is link
        if live:
            self._detach(pipe)
        self._close_link(link, CloseCode.MESSAGE_TOO_BIG, "message too big", now)
        self._pool.record_failure(link.backend, now, "message over max_message_size")
        if live:
            self._interrupt(pipe, link.backend, InterruptionCause.MESSAGE_TOO_BIG,
                            f"backend {link.backend.id} sent a message too big", now)

    def _client_closed(self, pipe: Pipe, event: CloseConnection, now: float) -> None:
        ws = pipe.client.ws
        if ws.state is ConnectionState.OPEN:
            # wsproto reports a protocol violation as a CloseConnection it did not receive.
            pipe_log(logging.WARNING, pipe, "protocol error from client (%d): %s", event.code,
                     event.reason)
            self.end(pipe, event.code, event.reason or "", now)
            return
        if pipe.state is PipeState.CLOSING:
            self._forget(pipe)  # the client answered our Close
            return
        self._flow.write(pipe.client, ws.send(event.response()))
        pipe_log(logging.INFO, pipe, "client closed with %d %s", event.code, event.reason)
        self._release(pipe, event.code, event.reason or "client closed", now,
                      link_code=sendable(event.code), link_reason=event.reason or "")
        self._forget(pipe)

    def client_eof(self, pipe: Pipe, now: float) -> None:
        """The client's socket ended or failed."""
        if pipe.state is not PipeState.CLOSING:
            pipe_log(logging.INFO, pipe, "client went away without a close frame")
            self._release(pipe, CloseCode.ABNORMAL, "client went away", now,
                          link_code=CloseCode.GOING_AWAY, link_reason="client went away")
        self._forget(pipe)

    # ------------------------------------------------------------------ links

    def link_connected(self, link: Link) -> None:
        """The link's connection is up: send the (hook-shaped) upgrade request."""
        pipe: Pipe = link.owner
        if pipe.link is not link:
            self._forget_link(link)
            return
        default = backend_request(self._config, pipe.request, pipe.client_id,
                                  pipe.subprotocol, link.backend)
        request = self._hooks.backend_request(pipe.info(), link.backend.info(), default)
        try:
            link.handshake(request, self._flow)
        except Exception as exc:  # h11 (under wsproto) refused what the hook returned
            logging.getLogger("wspipe").error(
                "wspipe_backend_request returned an invalid request (%s); sending the "
                "default one", exc)
            link.handshake(default, self._flow)
        self._timers.touch(link)

    def link_data(self, link: Link, data: bytes, now: float) -> None:
        """Bytes from a backend."""
        pipe: Pipe = link.owner
        self._timers.touch(link)
        relay = self._relay
        for item in link.receive(data, self._keepalive, self._flow, now):
            if isinstance(item, _MESSAGES):
                if pipe.state in _ENDED:
                    continue  # written before the backend saw our Close: nobody to give it to
                verdict = relay.forward(pipe, link, None, item, now)
                if verdict is not Verdict.GO:
                    self._stopped(pipe, link, verdict, now)
                    return
            elif not self.outcome(link, item, now):
                return

    def link_timer(self, link: Link, now: float) -> None:
        """A deadline of ``link`` passed."""
        self._timers.touch(link)
        outcome = link.tick(now, self._keepalive)
        if outcome is not None:
            self.outcome(link, outcome, now)

    def outcome(self, link: Link, outcome: Outcome, now: float) -> bool:
        """Act on what happened to ``link``; ``False`` when its frames must not be read on."""
        pipe: Pipe = link.owner
        if isinstance(outcome, Proven):
            self._pool.record_success(link.backend)
        elif isinstance(outcome, Opened):
            self._linked(pipe, link, now)
        elif isinstance(outcome, Failed):
            self._link_failed(link, outcome, now)
            return False
        elif isinstance(outcome, Lost):
            self._link_lost(link, outcome.cause, outcome.why, now)
            return False
        elif isinstance(outcome, Closed):
            if (outcome.code in self._config.interruption_codes or pipe.link is not link
                    or pipe.state is PipeState.CLOSING):
                self._link_lost(link, InterruptionCause.CLOSE_CODE,
                                f"backend closed with {outcome.code} {outcome.reason}".rstrip(),
                                now)
            else:
                self._forget_link(link)
                pipe_log(logging.INFO, pipe, "backend %s ended the session with %d %s",
                         link.backend.id, outcome.code, outcome.reason)
                self.end(pipe, outcome.code, outcome.reason, now)
            return False
        elif isinstance(outcome, Done):
            self._forget_link(link)
            return False
        return True

    def _linked(self, pipe: Pipe, link: Link, now: float) -> None:
        """The link opened: replay the buffer to it first, then relay both ways."""
        if pipe.link is not link or pipe.state is PipeState.CLOSING:
            self._close_link(link, CloseCode.GOING_AWAY, "client session ended", now)
            return
        resumed = pipe.state is PipeState.INTERRUPTED
        duration = now - pipe.interrupted_at if pipe.interrupted_at is not None else 0.0
        pipe.state = PipeState.LINKED
        pipe.attempts = 0
        pipe.interrupted_at = pipe.retry_at = None
        pipe.last_backend = link.backend
        self._timers.touch(pipe)
        self._flow.join(pipe.client, link)
        replayed = self._relay.replay(pipe.lane, pipe.client, link)
        backend = link.backend
        if resumed:
            self._stats.failovers += 1
            pipe_log(logging.INFO, pipe, "resumed on %s after %.3fs, %d buffered messages "
                     "replayed", backend.id, duration, replayed)
            self._event(PipeEventKind.RESUMED, pipe, backend, now, f"resumed on {backend.id}",
                        duration=duration)
            pipe.cause = None
        else:
            pipe_log(logging.INFO, pipe, "linked to %s after %.3fs", backend.id, duration)
            self._event(PipeEventKind.LINKED, pipe, backend, now, f"linked to {backend.id}",
                        duration=duration)
        if pipe.lane.paused:
            self._unpause(pipe, now)

    def _link_failed(self, link: Link, failure: Failed, now: float) -> None:
        """A link that never opened failed: count the error, back off, try again."""
        pipe: Pipe = link.owner
        backend = link.backend
        live = pipe.link is link
        self._forget_link(link)
        self._stats.link_failures[failure.cause] += 1
        self._pool.record_failure(backend, now, failure.why)
        if not live:
            return
        pipe.exclude = backend
        delay = self._back_off(pipe, now)
        pipe_log(logging.WARNING, pipe, "link to %s %s failed: %s; retry in %.3fs", backend.id,
                 backend.url, failure.why, delay)

    def _link_lost(self, link: Link, cause: InterruptionCause, why: str, now: float) -> None:
        """An open link failed: count the error; its pipe, if live on it, fails over."""
        pipe: Pipe = link.owner
        backend = link.backend
        live = pipe.link is link
        self._forget_link(link)
        self._pool.record_failure(backend, now, why)
        if live and pipe.state is not PipeState.CLOSING:
            self._interrupt(pipe, backend, cause, f"link to {backend.id} lost: {why}", now)

    # ------------------------------------------------------------------ failover

    def _interrupt(self, pipe: Pipe, backend: Backend, cause: InterruptionCause, why: str,
                   now: float) -> None:
        """The pipe lost its live link: buffer from now on and fail over at once."""
        pipe.state = PipeState.INTERRUPTED
        pipe.cause = cause
        pipe.interruptions += 1
        pipe.interrupted_at = now
        pipe.exclude = backend
        pipe.attempts = 0
        self._stats.interruptions[cause] += 1
        pipe_log(logging.WARNING, pipe, "interrupted: %s", why)
        self._event(PipeEventKind.INTERRUPTED, pipe, backend, now, why)
        self._dial(pipe, now)

    def _dial(self, pipe: Pipe, now: float) -> None:
        """Choose a backend and open a link to it, or schedule a retry after backoff."""
        self._timers.touch(pipe)
        pipe.retry_at = None
        chosen = self._pool.choose(
            now, pipe.exclude, lambda infos: self._hooks.select_backend(pipe.info(), infos,
                                                                         self._rng))
        pipe.exclude = None
        if chosen is None:
            delay = self._back_off(pipe, now)
            pipe_log(logging.INFO, pipe, "no backend available; retry in %.3fs", delay)
            return
        link = self._links.new(chosen, pipe, now + self._config.handshake_timeout)
        self._timers.touch(link)
        pipe.link = link
        chosen.pipes += 1
        pipe_log(logging.DEBUG, pipe, "dialing %s as link %d", chosen.url, link.id)
        self._flow.out.append(link.open_action())

    def _back_off(self, pipe: Pipe, now: float) -> float:
        pipe.attempts += 1
        delay = self._hooks.backoff(pipe.info(), pipe.attempts, self._rng)
        pipe.retry_at = now + delay
        self._timers.touch(pipe)
        return delay

    def migrate(self, pipe: Pipe, now: float) -> bool:
        """Move ``pipe`` to another backend now: close its link with 1001, fail over."""
        link = pipe.link
        if link is None or pipe.state is PipeState.CLOSING:
            return False
        backend = link.backend
        self._detach(pipe)
        self._close_link(link, CloseCode.GOING_AWAY, "backend draining, session moves", now)
        if pipe.state is PipeState.LINKED:
            self._interrupt(pipe, backend, InterruptionCause.MIGRATE,
                            f"migrating off draining backend {backend.id}", now)
        else:  # still dialing that backend: choose another one instead
            pipe.exclude = backend
            self._dial(pipe, now)
        return True

    def retry_now(self, now: float) -> None:
        """A backend was registered: pipes waiting out a backoff try again now."""
        for pipe in self.by_conn.values():
            if pipe.retry_at is not None and pipe.retry_at > now:
                pipe.retry_at = now
                self._timers.touch(pipe)

    # ------------------------------------------------------------------ pause policy

    def _unpause(self, pipe: Pipe, now: float) -> None:
        """Room was made: re-feed the held-back message and read the client again."""
        lane = pipe.lane
        lane.paused = False
        held, lane.overflow = lane.overflow, None
        if held is not None:
            verdict = self._relay.forward(pipe, pipe.client, lane, held, now)
            if verdict is not Verdict.GO:
                self._stopped(pipe, pipe.client, verdict, now)
                return
        lane.paused_since = None
        self._timers.touch(pipe)
        self._flow.release(pipe.client, Hold.POLICY)
        self._pump_client(pipe, now)

    def wake_budget_waiters(self, now: float) -> None:
        """Bytes went back to the memory budget: pipes paused on it try again.

        Their link may be live, so no replay would ever wake them. One that still
        does not fit pauses (and waits) again.
        """
        for pipe in self._flow.take_budget_waiters():
            if pipe.lane.paused and pipe.state is not PipeState.CLOSING:
                self._unpause(pipe, now)

    # ------------------------------------------------------------------ timers

    def pipe_timer(self, pipe: Pipe, now: float) -> None:
        """A deadline of ``pipe`` passed."""
        self._timers.touch(pipe)
        if pipe.state is PipeState.CLOSING:
            if pipe.close_deadline is not None and now >= pipe.close_deadline:
                pipe_log(logging.INFO, pipe, "client did not answer our Close in time")
                self._forget(pipe)
            return
        paused_since = pipe.lane.paused_since
        if paused_since is not None and now >= paused_since + pipe.patience:
            pipe_log(logging.WARNING, pipe, "paused by the buffer policy for max_interruption "
                     "(%.1fs); closing the client", pipe.patience)
            self.end(pipe, CloseCode.TRY_AGAIN_LATER, "buffer limit reached", now)
            return
        if pipe.interrupted_at is not None and now >= pipe.interrupted_at + pipe.patience:
            pipe_log(logging.WARNING, pipe, "no backend within max_interruption (%.1fs)",
                     pipe.patience)
            self.end(pipe, CloseCode.TRY_AGAIN_LATER, "no backend available", now)
            return
        if self._keepalive.tick(pipe.client, now):
            pipe_log(logging.WARNING, pipe, "client did not answer a ping within ping_timeout")
            self.end(pipe, CloseCode.INTERNAL_ERROR, "keepalive ping timeout", now)
            if pipe.conn in self.by_conn:
                self._forget(pipe)  # a client that does not pong will not answer Close
            return
        if pipe.retry_at is not None and now >= pipe.retry_at:
            self._dial(pipe, now)

    # ------------------------------------------------------------------ ending

    def end(self, pipe: Pipe, code: int, reason: str, now: float) -> None:
        """End the session: send the client a Close and release the pipe's resources."""
        if pipe.state is PipeState.CLOSING:
            return
        code = sendable(code)
        ws = pipe.client.ws
        if ws.state in _OPENISH:
            self._flow.write(pipe.client, ws.send(CloseConnection(code=code, reason=reason)))
        pipe_log(logging.INFO, pipe, "closing the client with %d %s", code, reason)
        self._release(pipe, code, reason, now)
        if ws.state is ConnectionState.CLOSED:
            self._forget(pipe)
        else:
            # Read the client again (whatever held it) to see its answer to our Close.
            self._flow.release(pipe.client, Hold.POLICY | Hold.BACKPRESSURE)
            pipe.close_deadline = now + self._config.close_timeout
            self._timers.touch(pipe)

    def _release(self, pipe: Pipe, code: int, reason: str, now: float,
                 link_code: int = CloseCode.GOING_AWAY,
                 link_reason: str = "client session ended") -> None:
        """Free what the session held: its link, buffer, budget and client id."""
        link = pipe.link
        if link is not None:
            self._detach(pipe)
            self._close_link(link, link_code, link_reason, now)
        self._relay.clear(pipe.lane, pipe.client)
        self._flow.forget_waiter(pipe)
        self._keepalive.stop(pipe.client)
        pipe.retry_at = pipe.interrupted_at = None
        if self.by_client_id.get(pipe.client_id) is pipe:
            del self.by_client_id[pipe.client_id]
        self._stats.clients_closed[code] += 1
        pipe.state = PipeState.CLOSING
        self._timers.touch(pipe)
        self._event(PipeEventKind.CLOSED, pipe, None, now, reason, code=code)

    def _forget(self, pipe: Pipe) -> None:
        pipe.state = PipeState.CLOSED
        self.by_conn.pop(pipe.conn, None)
        self.by_id.pop(pipe.id, None)
        if self.by_client_id.get(pipe.client_id) is pipe:
            del self.by_client_id[pipe.client_id]
        self._timers.cancel(pipe)
        self._flow.out.append(CloseClient(pipe.conn))

    def shutdown(self, now: float) -> None:
        """Close every client with 1001."""
        for pipe in list(self.by_conn.values()):
            self.end(pipe, CloseCode.GOING_AWAY, "proxy shutting down", now)

    # ------------------------------------------------------------------ link bookkeeping

    def _detach(self, pipe: Pipe) -> None:
        """The pipe's link stops being its link; the backend slot is freed."""
        link = pipe.link
        assert link is not None
        pipe.link = None
        pipe.last_backend = link.backend
        link.backend.pipes -= 1
        self._pool.remove_if_drained(link.backend)
        self._flow.part(pipe.client, link)

    def _close_link(self, link: Link, code: int, reason: str, now: float) -> None:
        """Send a Close if the link is open and wait for the answer; else just drop it."""
        if link.close(code, reason, now, self._config.close_timeout, self._flow,
                      self._keepalive):
            self._timers.touch(link)
        else:
            self._forget_link(link)

    def _forget_link(self, link: Link) -> None:
        if self._links.forget(link):
            self._flow.out.append(CloseLink(link.ident))
        link.holds = Hold(0)  # its socket closes: no Resume for it
        self._timers.cancel(link)
        pipe: Pipe = link.owner
        if pipe.link is link:
            self._detach(pipe)
        link.assembler.reset()

    # ------------------------------------------------------------------ observers

    def _event(self, kind: PipeEventKind, pipe: Pipe, backend: Backend | None, now: float,
               reason: str = "", *, code: int | None = None,
               duration: float | None = None) -> None:
        dropped = pipe.lane.dropped
        extra = {"dropped_messages": float(dropped)} if dropped else {}
        self._hooks.pipe_event(PipeEvent(kind, pipe.info(), backend.info() if backend else None,
                                         now, reason, code, duration, extra, pipe.cause))


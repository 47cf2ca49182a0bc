"""Failover: a pipe's links — dialing, what happens to each link, interruption, migration.

While CONNECTING or INTERRUPTED a pipe dials: the strategy hook chooses a backend
(the one that just failed is excluded for that attempt), and a link that fails
before opening costs a backoff (the backoff hook). When a link opens, the buffer is
replayed to it first and the pipe is LINKED; when a live link is lost — EOF, reset,
ping timeout, protocol error, a backend Close with an interruption code, a message
over ``max_message_size``, a migration — the pipe is INTERRUPTED and dials again
at once. A backend Close with any other code ends the session with that code.

:class:`Failover` is the half of :class:`~wspipe_core.session.Sessions` that deals
with links; the pipe's own life (accept, client side, end) is in
:mod:`wspipe_core.session`. Pipe states change only in these two modules.
"""

from __future__ import annotations

import abc
import logging
import random
from typing import cast

from wsproto.events import BytesMessage, TextMessage

from .actions import CloseLink
from .codes import CloseCode, Delivery, InterruptionCause, LinkFailure
from .config import ProxyConfig
from .deadlines import Timers
from .delivery import Deliveries
from .events import ConnId
from .flow import Flow, Hold
from .forwarding import backend_request
from .hooks import Hooks
from .info import PipeEvent, PipeEventKind, PipeState
from .keepalive import Keepalive
from .link import (
    Closed,
    Confirmed,
    Done,
    Failed,
    Link,
    Links,
    LinkState,
    Lost,
    Opened,
    Outcome,
    Proven,
)
from .logs import pipe_log
from .pipe import Pipe
from .pool import Backend, Pool
from .relay import Relay, Verdict
from .stats import Stats
from .wire import Wire

_ENDED = (PipeState.CLOSING, PipeState.CLOSED)
_DIALING = (LinkState.DIALING, LinkState.HANDSHAKING)


class Failover(abc.ABC):
    """Pipes and their links: the registries, dialing, link outcomes, failover."""

    def __init__(self, config: ProxyConfig, hooks: Hooks, rng: random.Random, pool: Pool,
                 flow: Flow, relay: Relay, keepalive: Keepalive, timers: Timers, links: Links,
                 stats: Stats, wire: Wire | None = None) -> None:
        self._config = config
        #: Frames the data phase of every open connection (client and link).
        self._wire = wire if wire is not None else Wire()
        self._hooks = hooks
        self._rng = rng
        self._pool = pool
        self._flow = flow
        self._relay = relay
        self._keepalive = keepalive
        self._timers = timers
        self._links = links
        self._stats = stats
        self._deliveries = Deliveries(config, relay, keepalive, timers, stats)
        self.by_conn: dict[ConnId, Pipe] = {}
        self.by_id: dict[str, Pipe] = {}
        self.by_client_id: dict[str, Pipe] = {}
        #: Client ids whose session ended since the proxy last looked (fleet leases).
        self.freed: list[str] = []
        #: Pipes parked or resumed since the proxy last looked (fleet: who may resume where).
        self.parking: list[Pipe] = []
        self._next = 1

    @abc.abstractmethod
    def end(self, pipe: Pipe, code: int, reason: str, now: float, *,
            link_reason: str = "client session ended") -> None:
        """End the session (see :class:`~wspipe_core.session.Sessions`)."""

    @abc.abstractmethod
    def answer(self, pipe: Pipe, subprotocol: str | None, now: float, *,
               resumed: float | None = None) -> None:
        """Answer the client's upgrade (see :class:`~wspipe_core.session.Sessions`)."""

    @abc.abstractmethod
    def _unpause(self, pipe: Pipe, now: float) -> None:
        """Read a client the pause policy held again."""

    # ------------------------------------------------------------------ links

    def link_connected(self, link: Link) -> None:
        """The link's connection is up: send the (hook-shaped) upgrade request."""
        pipe: Pipe = link.owner
        if link is not pipe.link and link is not pipe.racer:
            self._forget_link(link)
            return
        if pipe.answered:
            subprotocols: tuple[str, ...] = (pipe.subprotocol,) if pipe.subprotocol else ()
        else:
            subprotocols = pipe.offered
        default = backend_request(self._config, pipe.request, pipe.client_id, subprotocols,
                                  link.backend, self._deliveries.headers(pipe))
        request = self._hooks.backend_request(pipe.info(), link.backend.info(), default)
        try:
            link.handshake(request, self._flow)
        except Exception as exc:  # h11 (under wsproto) refused what the hook returned
            pipe_log(logging.ERROR, pipe, "wspipe_backend_request returned an invalid request "
                     "(%s); sending the default one", exc)
            link.handshake(default, self._flow)
        self._timers.touch(link)

    def link_data(self, link: Link, data: bytes, now: float) -> None:
        """Bytes from a backend."""
        pipe: Pipe = link.owner
        self._timers.touch(link)
        relay = self._relay
        for item in link.receive(data, self._keepalive, self._flow, now, self._wire):
            # Exact types: wsproto events are ABCs, so isinstance is slow per message.
            if type(item) is TextMessage or type(item) is BytesMessage:
                if pipe.state in _ENDED:
                    continue  # written before the backend saw our Close: nobody to give it to
                if (pipe.delivery is Delivery.ACKED and type(item) is TextMessage
                        and item.message_finished and link.assembler.idle
                        and self._deliveries.ack(pipe, link, item.data)):
                    continue  # an ack: for the proxy, never for the client
                # While the client is away, what the backend sends is held for it.
                lane = pipe.outbound if pipe.parked_until is not None else None
                verdict = relay.forward(pipe, link, lane, item, now)
                if verdict is not Verdict.GO:
                    if verdict is Verdict.TOO_BIG:
                        self._too_big(pipe, link, now)
                    elif verdict is Verdict.FULL:
                        pipe_log(logging.WARNING, pipe, "what the backend sent while the "
                                 "client is away is over the limits: the session ends")
                        self.end(pipe, CloseCode.TRY_AGAIN_LATER, "buffer limit reached", now,
                                 link_reason="client went away")
                    return  # (PAUSED: the link is not read until there is room)
            elif not self.outcome(link, cast(Outcome, item), now):
                return

    def _incompatible(self, pipe: Pipe, link: Link, subprotocol: str | None,
                      now: float) -> None:
        """The backend chose another subprotocol than the client's: it never carries
        this pipe. Not an error of the backend's: it is not ejected for it."""
        backend = link.backend
        pipe_log(logging.WARNING, pipe, "backend %s chose subprotocol %s but the client has "
                 "%s: not linked; trying another backend", backend.id, subprotocol,
                 pipe.subprotocol)
        self._stats.link_failures[LinkFailure.SUBPROTOCOL] += 1
        pipe.incompatible = pipe.incompatible | {backend}
        self._detach(pipe)
        self._close_link(link, CloseCode.PROTOCOL_ERROR,
                         f"subprotocol mismatch: the session uses {pipe.subprotocol}", now)
        self._dial(pipe, now)

    def _too_big(self, pipe: Pipe, link: Link, now: float) -> None:
        """The backend sent a message over ``max_message_size``: 1009 to it, fail over."""
        pipe_log(logging.WARNING, pipe, "backend %s sent a message over max_message_size on "
                 "link %d", link.backend.id, link.id)
        live = pipe.link is link
        if live:
            self._detach(pipe)
        self._close_link(link, CloseCode.MESSAGE_TOO_BIG, "message too big", now)
        self._pool.record_failure(link.backend, now, "message over max_message_size")
        if live:
            self._interrupt(pipe, link, InterruptionCause.MESSAGE_TOO_BIG,
                            f"backend {link.backend.id} sent a message too big", now)

    def link_timer(self, link: Link, now: float) -> None:
        """A deadline of ``link`` passed."""
        self._timers.touch(link)
        outcome = link.tick(now, self._keepalive)
        if outcome is not None:
            self.outcome(link, outcome, now)
        elif link.confirm_at is not None:
            self._deliveries.confirm_due(link, now)

    def outcome(self, link: Link, outcome: Outcome, now: float) -> bool:
        """Act on what happened to ``link``; ``False`` when its frames must not be read on."""
        pipe: Pipe = link.owner
        if isinstance(outcome, Proven):
            self._pool.record_success(link.backend)
        elif isinstance(outcome, Opened):
            if link is pipe.racer:
                # The racer opened first: it carries the pipe; the slow link goes on
                # alone, so that the pool still learns whether its backend answers.
                slow, pipe.link, pipe.racer = pipe.link, link, None
                if slow is not None:
                    self._orphan(slow)
                self._stats.races_won += 1
            elif link is pipe.link and pipe.racer is not None:
                self._orphan(pipe.racer)
                pipe.racer = None
            self._linked(pipe, link, outcome.subprotocol, now)
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
        elif isinstance(outcome, Confirmed):
            self._deliveries.confirmed(pipe, link, outcome.seq, now)
        elif isinstance(outcome, Done):
            self._forget_link(link)
            return False
        return True

    def _linked(self, pipe: Pipe, link: Link, subprotocol: str | None, now: float) -> None:
        """The link opened: replay the buffer to it first, then relay both ways."""
        if pipe.state in _ENDED:
            self._close_link(link, CloseCode.GOING_AWAY, "client session ended", now)
            return
        if pipe.link is not link:
            self._close_link(link, CloseCode.GOING_AWAY, "another link opened first", now)
            return
        if not pipe.answered:
            self.answer(pipe, subprotocol, now)  # the client gets the backend's choice
        elif subprotocol != pipe.subprotocol:
            self._incompatible(pipe, link, subprotocol, now)
            return
        pipe.race_at = None
        resumed = pipe.state is PipeState.INTERRUPTED
        duration = now - pipe.interrupted_at if pipe.interrupted_at is not None else 0.0
        pipe.state = PipeState.LINKED
        pipe.attempts = 0
        pipe.interrupted_at = pipe.retry_at = None
        pipe.last_backend = link.backend
        self._timers.touch(pipe)
        if pipe.parked_until is None:  # (while the client is away its messages are held)
            self._flow.join(pipe.client, link)
        replayed = self._relay.replay(pipe.lane, pipe.client, link)
        pipe.carried += 1
        pipe.replaying = 0
        self._deliveries.after_burst(pipe, now)
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
        if link is pipe.racer:
            self._orphan(link)
            pipe.racer = None
        self._forget_link(link)
        self._stats.link_failures[failure.cause] += 1
        if failure.cause is LinkFailure.REFUSED:
            # Alive, and refusing this session only: not a failure of the backend's.
            pipe.incompatible = pipe.incompatible | {backend}
            if live:
                pipe_log(logging.WARNING, pipe, "backend %s %s refused this session (%s); "
                         "trying another backend", backend.id, backend.url, failure.why)
                if pipe.racer is not None:
                    pipe.link, pipe.racer = pipe.racer, None
                else:
                    self._dial(pipe, now)
            return
        # A backend that did not answer at all is ejected at once: every pipe that
        # picks it would wait the whole link_timeout too.
        self._pool.record_failure(backend, now, failure.why,
                                  eject=failure.cause is LinkFailure.TIMEOUT)
        if not live:
            return
        if pipe.racer is not None:  # the racer carries on: no backoff
            pipe.link, pipe.racer = pipe.racer, None
            pipe_log(logging.WARNING, pipe, "link to %s %s failed: %s; link %d to %s is "
                     "still dialing", backend.id, backend.url, failure.why, pipe.link.id,
                     pipe.link.backend.id)
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
            self._interrupt(pipe, link, cause, f"link to {backend.id} lost: {why}", now)

    # ------------------------------------------------------------------ failover

    def _interrupt(self, pipe: Pipe, link: Link, cause: InterruptionCause, why: str,
                   now: float) -> None:
        """The pipe lost its live link: buffer from now on and fail over at once."""
        backend = link.backend
        count = self._deliveries.interrupted(pipe, link, cause)
        if count:
            why += (f"; {count} unconfirmed message(s) go first to the next link"
                    if pipe.lane.retain else f"; {count} message(s) possibly lost")
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
                                                                         self._rng),
            never=pipe.incompatible)
        pipe.exclude = None
        if chosen is None:
            delay = self._back_off(pipe, now)
            pipe_log(logging.INFO, pipe, "no backend available; retry in %.3fs", delay)
            return
        pipe.link = self._open(pipe, chosen, now)
        if self._config.race_after:
            pipe.race_at = now + self._config.race_after

    def _open(self, pipe: Pipe, backend: Backend, now: float) -> Link:
        link = self._links.new(backend, pipe, now + self._config.link_timeout)
        self._timers.touch(link)
        backend.pipes += 1
        pipe_log(logging.DEBUG, pipe, "dialing %s as link %d", backend.url, link.id)
        self._flow.out.append(link.open_action())
        return link

    def race(self, pipe: Pipe, now: float) -> None:
        """The pipe's link is slow to open: dial another backend as well."""
        pipe.race_at = None
        slow = pipe.link
        if slow is None or slow.state not in _DIALING or pipe.racer is not None:
            return
        chosen = self._pool.choose(
            now, None, lambda infos: self._hooks.select_backend(pipe.info(), infos, self._rng),
            never=pipe.incompatible | {slow.backend})
        if chosen is None:
            return
        pipe.racer = self._open(pipe, chosen, now)
        self._stats.races += 1
        pipe_log(logging.INFO, pipe, "link %d to %s not open after %.3fs: racing link %d to %s",
                 slow.id, slow.backend.id, self._config.race_after, pipe.racer.id, chosen.id)

    def _orphan(self, link: Link) -> None:
        """``link`` stops counting for its pipe and its backend; it finishes on its own."""
        link.backend.pipes -= 1
        self._pool.remove_if_drained(link.backend)

    def drop_racer(self, pipe: Pipe) -> None:
        racer = pipe.racer
        if racer is not None:
            pipe.racer = None
            self._orphan(racer)
            self._forget_link(racer)

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
        self.drop_racer(pipe)
        backend = link.backend
        self._detach(pipe)
        self._close_link(link, CloseCode.GOING_AWAY, "backend draining, session moves", now)
        if pipe.state is PipeState.LINKED:
            self._interrupt(pipe, link, InterruptionCause.MIGRATE,
                            f"migrating off draining backend {backend.id}", now)
        else:  # still dialing that backend: choose another one instead
            pipe.exclude = backend
            self._dial(pipe, now)
        return True

    def retry_now(self, now: float) -> None:
        """A backend was registered: pipes waiting out a backoff try again now."""
        for pipe in self.by_id.values():
            if pipe.retry_at is not None and pipe.retry_at > now:
                pipe.retry_at = now
                self._timers.touch(pipe)

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
               duration: float | None = None, extra: dict[str, float] | None = None) -> None:
        dropped = pipe.lane.dropped
        extra = dict(extra or {})
        if dropped:
            extra["dropped_messages"] = float(dropped)
        self._hooks.pipe_event(PipeEvent(kind, pipe.info(), backend.info() if backend else None,
                                         now, reason, code, duration, extra, pipe.cause))



"""Client resume: a client's network blip does not end its backend session.

When a client vanishes *without* a Close — its socket ends or resets, or it stops
answering pings — its pipe is **parked** for ``resume_window`` seconds instead of
ended: the link stays open and kept alive, and what the backend sends meanwhile is
held in order (the pipe's ``outbound`` lane: bounded by ``buffer_limit`` and the
memory budget, the buffer policy deciding on overflow; ``pause`` stops reading the
backend). A new connection with the same client id — through the same auth hook and,
when the session has a principal, the same one — takes the session over: the held
messages are delivered first, in order, then the relay carries on; the backend never
sees a new connection. The window ending ends the session as a vanished client always
did. A client that closes with a Close frame ends its session at once.

A second connection for a session whose client is connected and answering is still
refused with 409, unless that client is *suspected dead*: a keepalive ping to it has
gone unanswered for more than half of ``ping_timeout``. Then the new connection takes
over and the old one is closed with 1001.

What cannot be saved: backend messages written to the socket that vanished, since its
last pong, may never have reached the client (``Stats.possibly_lost_to_client``).
"""

from __future__ import annotations

import abc
import logging

from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection

from .actions import CloseClient, SendToClient
from .codes import CloseCode
from .failover import Failover
from .flow import Hold
from .handshake import Claim, Upgrade, http_error
from .info import PipeEventKind, PipeState
from .logs import pipe_log
from .pipe import ClientConn, Pipe
from .relay import Verdict

_ENDED = (PipeState.CLOSING, PipeState.CLOSED)


class Resumption(Failover, abc.ABC):
    """Parking a pipe whose client vanished, and handing it to the connection that resumes it."""

    @abc.abstractmethod
    def _pump_client(self, pipe: Pipe, now: float) -> None:
        """Read what the client sent (see :class:`~wspipe_core.session.Sessions`)."""

    def claim(self, client_id: str, now: float) -> tuple[Claim, str | None]:
        """What a new connection with ``client_id`` may do with its session, and its principal."""
        pipe = self.by_client_id.get(client_id)
        if pipe is None or pipe.state in _ENDED:
            return Claim.FREE, None
        if pipe.parked_until is not None:
            return Claim.RESUMABLE, pipe.principal
        client = pipe.client
        timeout = self._config.ping_timeout
        if (pipe.answered and client.pong_deadline is not None
                and now >= client.pong_deadline - timeout / 2):
            return Claim.RESUMABLE, pipe.principal  # suspected dead: a ping unanswered
        return Claim.BUSY, pipe.principal

    def park(self, pipe: Pipe, why: str, now: float) -> bool:
        """The client vanished without a Close: keep the session ``resume_window``.

        ``False`` (nothing done) when parking is off or the session cannot be resumed.
        """
        window = self._config.resume_window
        if not window or not pipe.answered or pipe.state in _ENDED:
            return False
        client = pipe.client
        lost = client.written - client.confirmed
        self._stats.possibly_lost_to_client += lost
        self._stats.parked += 1
        self.parking.append(pipe)
        self._detach_client(pipe)
        pipe.away_since = now
        pipe.parked_until = now + window
        self._timers.touch(pipe)
        pipe_log(logging.INFO, pipe, "client went away (%s): session parked for %.1fs; %d "
                 "message(s) written to it may not have reached it", why, window, lost)
        self._event(PipeEventKind.PARKED, pipe, None, now, why,
                    extra={"possibly_lost_to_client": float(lost)})
        return True

    def _detach_client(self, pipe: Pipe) -> None:
        """Let go of the client's connection; backend messages are held from now on."""
        client = pipe.client
        link = pipe.link
        if link is not None:
            self._flow.part(client, link)
        for other in self._links:
            if other.owner is pipe and other.peer is client:
                other.peer = None  # its messages go to the outbound lane
        self._keepalive.stop(client)
        client.holds = Hold(0)  # its socket closes: no Resume for it
        if self.by_conn.get(client.ident) is pipe:
            del self.by_conn[client.ident]
        self._flow.out.append(CloseClient(client.ident))
        client.assembler.reset()  # the message it was sending is gone with it
        self._relay.account(pipe.lane, client)

    def expire(self, pipe: Pipe, now: float) -> None:
        """Nobody came back within ``resume_window``: the session ends."""
        self._stats.resume_expired += 1
        pipe_log(logging.INFO, pipe, "client did not come back within resume_window (%.1fs)",
                 self._config.resume_window)
        self._event(PipeEventKind.EXPIRED, pipe, None, now, "resume_window over")
        self.end(pipe, CloseCode.ABNORMAL, "client went away", now,
                 link_reason="client went away")

    def resume(self, pipe: Pipe, up: Upgrade, now: float) -> None:
        """A new connection with the pipe's client id takes the session over."""
        if pipe.subprotocol is not None and pipe.subprotocol not in up.request.subprotocols:
            reason = (f"client id {pipe.client_id} resumes a session that uses subprotocol "
                      f"{pipe.subprotocol}: the new connection must ask for it")
            logging.getLogger("wspipe").warning("client conn %s from %s refused with 400: %s",
                                                up.conn, up.peer, reason)
            self._stats.clients_rejected[400] += 1
            self._flow.out.append(SendToClient(up.conn, http_error(400, reason)))
            self._flow.out.append(CloseClient(up.conn))
            return
        if pipe.parked_until is None:  # a live connection suspected dead: replace it
            old = pipe.client
            pipe_log(logging.WARNING, pipe, "connection %s from %s takes over the session of "
                     "unresponsive connection %s", up.conn, up.peer, old.ident)
            if old.ws.state in (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING):
                self._flow.write(old, old.ws.send(CloseConnection(
                    code=CloseCode.GOING_AWAY, reason="replaced by a new connection")))
            self._stats.possibly_lost_to_client += old.written - old.confirmed
            self._detach_client(pipe)
            pipe.away_since = now
        gap = now - pipe.away_since if pipe.away_since is not None else 0.0
        client = ClientConn(up.conn, up.ws, pipe)
        pipe.client = client
        pipe.upgrade = up.ws
        pipe.early = up.early
        pipe.answered = False
        pipe.away_since = pipe.parked_until = None
        self.by_conn[up.conn] = pipe
        self._stats.client_resumes += 1
        self.parking.append(pipe)
        self.answer(pipe, pipe.subprotocol, now, resumed=gap)
        link = pipe.link
        if link is not None and pipe.state is PipeState.LINKED:
            self._flow.join(client, link)
        for other in self._links:
            if other.owner is pipe and other.peer is None and other is not pipe.link:
                other.peer = client  # a closing link's last messages still go to the client
        held = self._relay.replay(pipe.outbound, client, client)
        pipe_log(logging.INFO, pipe, "client resumed from %s after %.3fs; %d held message(s) "
                 "delivered first", up.peer, gap, held)
        if pipe.outbound.paused:
            self.unpause_outbound(pipe, now)
        if pipe.lane.paused:
            self._flow.hold(client, Hold.POLICY)
        self._pump_client(pipe, now)

    def unpause_outbound(self, pipe: Pipe, now: float) -> None:
        """Room for held backend messages again: re-feed the one held back, read the link."""
        lane = pipe.outbound
        link = pipe.link
        lane.paused = False
        held, lane.overflow = lane.overflow, None
        lane.paused_since = None
        if link is None:
            return
        if held is not None:
            dst_lane = pipe.outbound if pipe.parked_until is not None else None
            if self._relay.forward(pipe, link, dst_lane, held, now) is not Verdict.GO:
                return  # paused (or full) again
        self._flow.release(link, Hold.POLICY)
        self.link_data(link, b"", now)  # the frames that waited in wsproto's buffer

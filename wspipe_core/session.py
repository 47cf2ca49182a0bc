"""The session: a pipe's life, from the accepted upgrade to its end.

A pipe's state changes only in :class:`Sessions` — here for the client side and
the end of the session, in :mod:`wspipe_core.failover` for its links (h11's rule
for ``_state.py``: whatever changes the state machine lives in one place)::

    CONNECTING --link open (buffer replayed first)--> LINKED
    LINKED --link lost (interruption)--> INTERRUPTED --new link open, replay--> LINKED
    any --session ends (client Close/EOF, backend app close, 1009, 1013)--> CLOSING
    CLOSING --client answers, hangs up, or close_timeout--> CLOSED

``max_interruption`` bounds the whole time without a live link, the first connect
included, and the time the ``pause`` buffer policy may hold the client; then the
client gets 1013. Client messages cross through :mod:`wspipe_core.relay`.
"""

from __future__ import annotations

import logging
import uuid

from wsproto.connection import ConnectionState
from wsproto.events import AcceptConnection, BytesMessage, CloseConnection, Ping, Pong, TextMessage

from .actions import CloseClient
from .codes import CloseCode, Delivery, sendable
from .flow import Hold
from .handover import Handover
from .handshake import Upgrade, allowed_subprotocols, http_error
from .info import BackendState, PipeEventKind, PipeState
from .logs import pipe_log
from .pipe import ClientConn, Pipe
from .relay import Lane, Verdict
from .resume import Resumption

_OPENISH = (ConnectionState.OPEN, ConnectionState.REMOTE_CLOSING)


class Sessions(Resumption, Handover):
    """Every pipe, by client connection, pipe id and client id; the decisions about them."""

    # ------------------------------------------------------------------ opening

    def open(self, up: Upgrade, now: float) -> None:
        """Start the session of a valid upgrade request and dial a backend.

        The client is answered at once — before any backend is reached, so a client
        can connect while every backend is down — unless it asked for subprotocols
        while a backend is up: then the first link's backend chooses among them and
        the client gets that choice (both hops agree), or, if no link opens within
        ``handshake_timeout``, the first one it offered.
        """
        if up.resumes:
            self.resume(self.by_client_id[up.client_id], up, now)
            return
        pipe = self._new_pipe(up, now)
        cfg = self._config
        if pipe.offered and any(b.state is BackendState.UP for b in self._pool):
            pipe.answer_by = now + cfg.handshake_timeout
            self._flow.hold(pipe.client, Hold.UPGRADE)  # nothing to read before our answer
            pipe_log(logging.INFO, pipe, "client from %s asks for subprotocols %s: the "
                     "backend chooses", up.peer, ", ".join(pipe.offered))
            self._dial(pipe, now)
            return
        self.answer(pipe, pipe.offered[0] if pipe.offered else None, now)
        self._dial(pipe, now)
        self._pump_client(pipe, now)

    def _new_pipe(self, up: Upgrade, now: float) -> Pipe:
        """Create and register the pipe of an accepted upgrade (not answered yet)."""
        cfg = self._config
        delivery = self._hooks.delivery(up.request, up.client_id)
        lane = Lane(cfg.buffer_message_overhead, None,
                    retain=delivery is not Delivery.AT_MOST_ONCE)
        pipe = Pipe(f"p{self._next}", up.client_id, up.request, None, now,
                    ClientConn(up.conn, up.ws, None), lane,
                    Lane(cfg.buffer_message_overhead, None, counts_assembly=False),
                    cfg.max_interruption, delivery=delivery, principal=up.principal,
                    session_id=str(uuid.UUID(int=self._rng.getrandbits(128), version=4)),
                    interrupted_at=now,
                    offered=allowed_subprotocols(up.request.subprotocols, cfg.subprotocols),
                    upgrade=up.ws, early=up.early)
        pipe.client.owner = pipe.lane.owner = pipe.outbound.owner = pipe
        self._next += 1
        self.by_conn[up.conn] = pipe
        self.by_id[pipe.id] = pipe
        self.by_client_id[pipe.client_id] = pipe
        self._timers.touch(pipe)
        return pipe

    def evict(self, pipe: Pipe, now: float) -> None:
        """``pipe`` held the most when the memory budget was short: it pays (1013)."""
        self.end(pipe, CloseCode.TRY_AGAIN_LATER, "buffer limit reached", now)

    def answer(self, pipe: Pipe, subprotocol: str | None, now: float, *,
               resumed: float | None = None) -> None:
        """Answer the client's upgrade (101) with ``subprotocol``; the session is open.

        ``resumed``: the connection takes over a session whose client was away that long.
        """
        assert pipe.upgrade is not None
        accept = pipe.upgrade.send(AcceptConnection(subprotocol=subprotocol))
        # wsproto answered the upgrade; the data phase is the wire's.
        connection = self._wire.connection(client=False)
        client = pipe.client
        client.ws = connection
        pipe.upgrade = None
        pipe.answered = True
        pipe.answer_by = None
        pipe.subprotocol = subprotocol
        self._keepalive.start(client, now)
        self._timers.touch(pipe)
        self._stats.clients_accepted += 1
        self._flow.write(client, accept)
        self._flow.release(client, Hold.UPGRADE)
        if pipe.early:
            connection.receive_data(pipe.early)  # frames sent with the request
            pipe.early = b""
        if resumed is not None:
            self._event(PipeEventKind.CLIENT_RESUMED, pipe, None, now,
                        "a new connection took the session over", duration=resumed)
            return
        pipe_log(logging.INFO, pipe, "client accepted from %s (subprotocol %s)",
                 pipe.request.peer, subprotocol)
        self._event(PipeEventKind.OPENED, pipe, None, now)

    # ------------------------------------------------------------------ the client

    def client_data(self, pipe: Pipe, data: bytes, now: float) -> None:
        """Bytes from the client."""
        if not pipe.answered:
            pipe.early += data  # the read that was under way when we stopped reading
            return
        ws = pipe.client.ws
        if ws.state is ConnectionState.CLOSED:
            return
        self._timers.touch(pipe)
        ws.receive_data(data)
        self._pump_client(pipe, now)

    def _pump_client(self, pipe: Pipe, now: float) -> None:
        lane = pipe.lane
        if lane.paused or not pipe.answered:
            return  # the pause policy holds: frames stay undecoded in wsproto's buffer
        client = pipe.client
        relay = self._relay
        ending = pipe.state is PipeState.CLOSING
        for event in client.ws.events():
            # Exact types: wsproto events are ABCs, so isinstance is slow per message.
            if type(event) is TextMessage or type(event) is BytesMessage:
                if ending:
                    continue  # sent before it saw our Close: nobody to give it to
                verdict = relay.forward(pipe, client, lane, event, now)
                if verdict is not Verdict.GO:
                    self._stopped(pipe, verdict, now)
                    return
            elif isinstance(event, Ping):
                self._keepalive.answer(client, event)
            elif isinstance(event, Pong):
                self._keepalive.pong(client)
            elif isinstance(event, CloseConnection):
                self._client_closed(pipe, event, now)
                return
        self._deliveries.after_burst(pipe, now)

    def _stopped(self, pipe: Pipe, verdict: Verdict, now: float) -> None:
        """A message from the client could not go on: what that means for the pipe."""
        if verdict is Verdict.PAUSED:
            self._timers.touch(pipe)
        elif verdict is Verdict.TOO_BIG:
            pipe_log(logging.WARNING, pipe, "client message over max_message_size (%d)",
                     self._config.max_message_size)
            self.end(pipe, CloseCode.MESSAGE_TOO_BIG, "message too big", now)
        else:
            self.end(pipe, CloseCode.TRY_AGAIN_LATER, "buffer limit reached", now)

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
        """The client's socket ended or failed: park the session, or end it."""
        if pipe.state is not PipeState.CLOSING:
            if self.park(pipe, "connection lost without a close frame", now):
                return
            pipe_log(logging.INFO, pipe, "client went away without a close frame")
            self._release(pipe, CloseCode.ABNORMAL, "client went away", now,
                          link_code=CloseCode.GOING_AWAY, link_reason="client went away")
        self._forget(pipe)

    # ------------------------------------------------------------------ pause policy

    def _unpause(self, pipe: Pipe, now: float) -> None:
        """Room was made: re-feed the held-back message and read the client again."""
        lane = pipe.lane
        lane.paused = False
        held, lane.overflow = lane.overflow, None
        if held is not None:
            verdict = self._relay.forward(pipe, pipe.client, lane, held, now)
            if verdict is not Verdict.GO:
                self._stopped(pipe, verdict, now)
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
            if pipe.state is PipeState.CLOSING:
                continue
            if pipe.lane.paused and pipe.parked_until is None:
                self._unpause(pipe, now)
            if pipe.outbound.paused:
                self.unpause_outbound(pipe, now)

    # ------------------------------------------------------------------ timers

    def pipe_timer(self, pipe: Pipe, now: float) -> None:
        """A deadline of ``pipe`` passed."""
        self._timers.touch(pipe)
        if pipe.parked_until is not None and now >= pipe.parked_until:
            self.expire(pipe, now)
            return
        if pipe.state is PipeState.CLOSING:
            if pipe.close_deadline is not None and now >= pipe.close_deadline:
                pipe_log(logging.INFO, pipe, "client did not answer our Close in time")
                self._forget(pipe)
            return
        if pipe.answer_by is not None and now >= pipe.answer_by:
            pipe_log(logging.WARNING, pipe, "no backend within handshake_timeout to choose a "
                     "subprotocol; the client gets the first it offered")
            self.answer(pipe, pipe.offered[0], now)
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
            ws = pipe.client.ws
            if self._config.resume_window and ws.state in _OPENISH:
                # Tell it (it may be alive, only slow), then wait for it to come back.
                self._flow.write(pipe.client, ws.send(CloseConnection(
                    code=CloseCode.INTERNAL_ERROR, reason="keepalive ping timeout")))
            if self.park(pipe, "no pong within ping_timeout", now):
                return
            self.end(pipe, CloseCode.INTERNAL_ERROR, "keepalive ping timeout", now)
            if pipe.conn in self.by_conn:
                self._forget(pipe)  # a client that does not pong will not answer Close
            return
        if pipe.race_at is not None and now >= pipe.race_at:
            self.race(pipe, now)
        if pipe.retry_at is not None and now >= pipe.retry_at:
            self._dial(pipe, now)

    # ------------------------------------------------------------------ ending

    def end(self, pipe: Pipe, code: int, reason: str, now: float, *,
            link_reason: str = "client session ended") -> None:
        """End the session: send the client a Close and release the pipe's resources."""
        if pipe.state is PipeState.CLOSING:
            return
        code = sendable(code) if code != CloseCode.ABNORMAL else code
        if pipe.parked_until is not None:  # nobody to tell
            pipe_log(logging.INFO, pipe, "ending the parked session: %s", reason)
            self._release(pipe, code, reason, now, link_reason=link_reason)
            self._forget(pipe)
            return
        code = sendable(code)
        if not pipe.answered:  # no WebSocket yet: an HTTP answer
            self._flow.write(pipe.client, http_error(503, reason))
            pipe_log(logging.INFO, pipe, "refusing the client with 503 %s", reason)
            self._release(pipe, code, reason, now)
            self._forget(pipe)
            return
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
        self.drop_racer(pipe)
        link = pipe.link
        if link is not None:
            self._detach(pipe)
            self._close_link(link, link_code, link_reason, now)
        self._relay.clear(pipe.lane, pipe.client)
        self._relay.clear(pipe.outbound, pipe.client)
        self._flow.forget_waiter(pipe)
        self._keepalive.stop(pipe.client)
        pipe.retry_at = pipe.interrupted_at = pipe.race_at = None
        if self.by_client_id.get(pipe.client_id) is pipe:
            del self.by_client_id[pipe.client_id]
            self.freed.append(pipe.client_id)
        self._stats.clients_closed[code] += 1
        pipe.state = PipeState.CLOSING
        self._timers.touch(pipe)
        self._event(PipeEventKind.CLOSED, pipe, None, now, reason, code=code)

    def _forget(self, pipe: Pipe) -> None:
        pipe.state = PipeState.CLOSED
        self.by_id.pop(pipe.id, None)
        if self.by_client_id.get(pipe.client_id) is pipe:
            del self.by_client_id[pipe.client_id]
            self.freed.append(pipe.client_id)
        self._timers.cancel(pipe)
        if self.by_conn.get(pipe.conn) is pipe:  # (a parked pipe has no connection)
            del self.by_conn[pipe.conn]
            self._flow.out.append(CloseClient(pipe.conn))
        pipe.parked_until = pipe.away_since = None

    def shutdown(self, now: float) -> None:
        """Close every client with 1001."""
        for pipe in list(self.by_id.values()):
            self.end(pipe, CloseCode.GOING_AWAY, "proxy shutting down", now)

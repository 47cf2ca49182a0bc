"""Handing a parked session from one instance of a fleet to another (resume across instances).

Instance A has a pipe parked (its client vanished; see :mod:`wspipe_core.resume`) and
the client reconnects through instance B. B's claim finds the lease parked on A and
asks A, through the store, to hand the session over. A then:

1. ends the pipe's link the way a migration does (Close 1001; with at-least-once or
   acked delivery what the link did not confirm goes back in line; at most once counts
   what may be lost), and keeps relaying what the backend sends until its Close
   handshake is over (into the messages held for the client);
2. exports what the session holds (:func:`export`): its id, link count, delivery mode
   and sequence number, subprotocol, principal, the client messages waiting for a link
   and the backend messages held for the client — bounded by ``buffer_limit`` each, as
   they were on A;
3. forgets the pipe; the driver writes the export and moves the lease to B.

B validates the export (:func:`restore`), answers the client (101), delivers the held
backend messages first, dials a backend whose handshake continues the session (the
same session id, the next link number, what is replayed) and replays the client
messages in order. The client's pipe event is ``CLIENT_RESUMED``.
"""

from __future__ import annotations

import abc
import base64
import binascii
import json
import logging
from dataclasses import dataclass
from typing import Any

from .actions import CloseClient, SendToClient
from .codes import CloseCode, Delivery, InterruptionCause
from .failover import Failover
from .handshake import Upgrade, http_error
from .info import PipeState
from .logs import pipe_log
from .pipe import Pipe

log = logging.getLogger("wspipe")

#: Version of the export format.
FORMAT = 1
_ENDED = (PipeState.CLOSING, PipeState.CLOSED)

Item = tuple[int, str | bytes]


@dataclass(frozen=True, slots=True)
class SessionState:
    """What travels from A to B: a validated export."""

    client_id: str
    session_id: str
    carried: int
    replaying: int
    delivery: Delivery
    next_seq: int
    subprotocol: str | None
    principal: str | None
    #: Client messages waiting for a link, with their sequence numbers, oldest first.
    to_backend: tuple[Item, ...]
    #: Backend messages held for the client, oldest first.
    to_client: tuple[str | bytes, ...]


def _encode(message: str | bytes | bytearray) -> list[str]:
    if isinstance(message, str):
        return ["t", message]
    return ["b", base64.b64encode(bytes(message)).decode("ascii")]


def _decode(item: Any) -> str | bytes:
    if not (isinstance(item, list) and len(item) == 2 and item[0] in ("t", "b")
            and isinstance(item[1], str)):
        raise ValueError("a message must be [\"t\"|\"b\", data]")
    return item[1] if item[0] == "t" else base64.b64decode(item[1], validate=True)


def export(pipe: Pipe) -> bytes:
    """The session of a parked ``pipe`` whose link is closed, as bytes for the store."""
    lane = pipe.lane
    items = [*lane.retained.items(), *lane.buffer.items()]
    return json.dumps({
        "v": FORMAT, "client_id": pipe.client_id, "session_id": pipe.session_id,
        "carried": pipe.carried, "replaying": pipe.replaying,
        "delivery": pipe.delivery.value, "next_seq": lane.next_seq,
        "subprotocol": pipe.subprotocol, "principal": pipe.principal,
        "to_backend": [[seq, *_encode(message)] for seq, message, _ in items],
        "to_client": [_encode(message) for _, message, _ in pipe.outbound.buffer.items()],
    }, separators=(",", ":")).encode()


def restore(blob: bytes, client_id: str, limit: int) -> SessionState:
    """Validate an export; :class:`ValueError` saying why it is garbage.

    ``limit``: ``buffer_limit``; each direction's payload must fit it.
    """
    if len(blob) > 3 * limit + 65536:
        raise ValueError(f"{len(blob)} bytes is more than a session can hold")
    try:
        data = json.loads(blob)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("v") != FORMAT:
        raise ValueError(f"not a version {FORMAT} export")

    def get(name: str, kind: type | tuple[type, ...], optional: bool = False) -> Any:
        value = data.get(name)
        if (value is None and optional) or (isinstance(value, kind)
                                             and not isinstance(value, bool)):
            return value
        raise ValueError(f"{name} is missing or of the wrong type")

    if get("client_id", str) != client_id:
        raise ValueError("the export is of another client id")
    counts = [get(name, int) for name in ("carried", "replaying", "next_seq")]
    if any(c < 0 for c in counts) or counts[2] < 1:
        raise ValueError("negative counts")
    try:
        delivery = Delivery(get("delivery", str))
        to_backend = []
        for entry in get("to_backend", list):
            if not (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], int)):
                raise ValueError("a client message must be [seq, kind, data]")
            to_backend.append((entry[0], _decode(entry[1:])))
        to_client = [_decode(entry) for entry in get("to_client", list)]
    except binascii.Error as exc:
        raise ValueError(f"bad base64: {exc}") from None
    for name, messages in (("to_backend", [m for _, m in to_backend]), ("to_client", to_client)):
        if sum(len(m) for m in messages) > limit:
            raise ValueError(f"{name} holds more than buffer_limit")
    return SessionState(client_id, get("session_id", str)[:200], counts[0], counts[1],
                        delivery, counts[2], get("subprotocol", str, True),
                        get("principal", str, True), tuple(to_backend), tuple(to_client))


class Handover(Failover, abc.ABC):
    """The two sides of a handover, as part of :class:`~wspipe_core.session.Sessions`."""

    @abc.abstractmethod
    def _new_pipe(self, up: Upgrade, now: float) -> Pipe:
        """Create and register the pipe of an accepted upgrade (see ``Sessions``)."""

    @abc.abstractmethod
    def _pump_client(self, pipe: Pipe, now: float) -> None:
        """Read what the client sent (see ``Sessions``)."""

    def hand_over(self, client_id: str, target: str, now: float) -> Pipe | None:
        """A's side: start handing the parked session of ``client_id`` to ``target``.

        ``None``: no parked session here (it resumed here, ended, or is being handed).
        """
        pipe = self.by_client_id.get(client_id)
        if pipe is None or pipe.parked_until is None or pipe.state in _ENDED:
            return None
        self.drop_racer(pipe)
        link = pipe.link
        if link is not None:
            if pipe.state is PipeState.LINKED:
                self._deliveries.interrupted(pipe, link, InterruptionCause.MIGRATE)
            self._detach(pipe)
            self._close_link(link, CloseCode.GOING_AWAY,
                             f"session handed over to instance {target}", now)
        pipe.state = PipeState.INTERRUPTED  # and it does not dial: it is leaving
        pipe.cause = InterruptionCause.MIGRATE
        pipe.interrupted_at = pipe.retry_at = pipe.race_at = None
        self._timers.touch(pipe)
        pipe_log(logging.INFO, pipe, "handing the parked session over to instance %s", target)
        return pipe

    def link_closed(self, pipe: Pipe) -> bool:
        """Whether every link of ``pipe`` has finished closing."""
        return not any(link.owner is pipe for link in self._links)

    def handed(self, pipe: Pipe, target: str, now: float) -> bytes | None:
        """A's side: the link is closed; export the session and forget the pipe."""
        if self.by_client_id.get(pipe.client_id) is not pipe or pipe.state in _ENDED:
            return None  # its window ended meanwhile
        blob = export(pipe)
        pipe_log(logging.INFO, pipe, "session handed over to instance %s (%d bytes)", target,
                 len(blob))
        self.end(pipe, CloseCode.GOING_AWAY, f"handed over to instance {target}", now)
        return blob

    def adopt(self, up: Upgrade, state: SessionState, now: float) -> Pipe | None:
        """B's side: the client of ``up`` takes over the session ``state`` came with.

        ``None``: refused with 400, as a resume on the same instance would be (the
        session has a subprotocol the new connection does not ask for).
        """
        if state.subprotocol is not None and state.subprotocol not in up.request.subprotocols:
            reason = (f"client id {up.client_id} resumes a session that uses subprotocol "
                      f"{state.subprotocol}: the new connection must ask for it")
            log.warning("client conn %s from %s refused with 400: %s", up.conn, up.peer, reason)
            self._stats.clients_rejected[400] += 1
            self._flow.out.append(SendToClient(up.conn, http_error(400, reason)))
            self._flow.out.append(CloseClient(up.conn))
            return None
        pipe = self._new_pipe(up, now)
        pipe.session_id = state.session_id
        pipe.carried = state.carried
        pipe.replaying = state.replaying
        pipe.delivery = state.delivery
        pipe.principal = state.principal if state.principal is not None else pipe.principal
        lane = pipe.lane
        lane.retain = state.delivery is not Delivery.AT_MOST_ONCE
        lane.next_seq = state.next_seq
        for seq, message in state.to_backend:
            lane.buffer.append(message, seq=seq)
        self._relay.account(lane, pipe.client)
        self.answer(pipe, state.subprotocol, now, resumed=0.0)  # (CLIENT_RESUMED)
        client = pipe.client
        for message in state.to_client:
            pipe.outbound.buffer.append(message)
        self._relay.replay(pipe.outbound, client, client)
        pipe_log(logging.INFO, pipe, "session %s taken over from another instance: %d held "
                 "message(s) delivered first, %d to replay", pipe.session_id,
                 len(state.to_client), len(state.to_backend))
        self._stats.client_resumes += 1
        self._dial(pipe, now)
        self._pump_client(pipe, now)
        return pipe

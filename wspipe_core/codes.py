"""The typed words of the core: WebSocket close codes and why links end.

Every close code the core sends or reads is a :class:`CloseCode` (an ``IntEnum``,
so it compares equal to the bare number a peer sent); every reason a link was lost
or failed is an enum member whose value is the label metrics and logs use.
"""

from __future__ import annotations

import enum


class CloseCode(enum.IntEnum):
    """WebSocket close codes (RFC 6455 7.4.1, IANA registry) the proxy uses by name."""

    #: The session ended normally.
    NORMAL = 1000
    #: The peer is going away: the proxy shuts down, a client left, a link is migrated.
    GOING_AWAY = 1001
    #: A frame broke the protocol.
    PROTOCOL_ERROR = 1002
    #: A message of a type the endpoint does not accept.
    UNSUPPORTED_DATA = 1003
    #: No code in the Close frame; never sent.
    NO_STATUS = 1005
    #: The connection dropped without a Close; never sent.
    ABNORMAL = 1006
    #: A text message that is not UTF-8.
    INVALID_DATA = 1007
    #: The endpoint's policy refuses the message.
    POLICY_VIOLATION = 1008
    #: A message over ``max_message_size``.
    MESSAGE_TOO_BIG = 1009
    #: A required extension was not negotiated.
    MANDATORY_EXTENSION = 1010
    #: The endpoint failed (a keepalive ping timed out, for the proxy).
    INTERNAL_ERROR = 1011
    #: The server restarts.
    SERVICE_RESTART = 1012
    #: Try again later: no backend within ``max_interruption``, or the buffer is full.
    TRY_AGAIN_LATER = 1013
    #: A gateway got a bad answer upstream.
    BAD_GATEWAY = 1014
    #: TLS failed; never sent.
    TLS_HANDSHAKE = 1015


#: Codes that must not appear in a Close frame (RFC 6455 7.4.1); sent as 1000 instead.
UNSENDABLE = frozenset({CloseCode.NO_STATUS, CloseCode.ABNORMAL, CloseCode.TLS_HANDSHAKE})


def sendable(code: int) -> int:
    """``code`` if it may be sent in a Close frame, else 1000."""
    return CloseCode.NORMAL if code in UNSENDABLE else code


class InterruptionCause(enum.StrEnum):
    """Why an open link stopped carrying its pipe (the pipe fails over)."""

    #: The link's socket ended or failed (TCP EOF, reset, TLS error).
    EOF = "eof"
    #: The backend closed with an interruption code (1001, 1012, ...).
    CLOSE_CODE = "close_code"
    #: The backend did not answer a keepalive ping within ``ping_timeout``.
    PING_TIMEOUT = "ping_timeout"
    #: The backend broke the WebSocket protocol.
    PROTOCOL = "protocol"
    #: The backend sent a message over ``max_message_size`` (its link is closed with 1009).
    MESSAGE_TOO_BIG = "message_too_big"
    #: The proxy moved the pipe off a draining backend.
    MIGRATE = "migrate"


class LinkFailure(enum.StrEnum):
    """Why a link failed before it opened (the pipe backs off and tries again)."""

    #: DNS, connection refused, connect timeout, TLS failure.
    CONNECT = "connect"
    #: The backend refused or broke the WebSocket handshake, or dropped the connection.
    HANDSHAKE = "handshake"
    #: The connect and handshake did not finish within ``link_timeout``.
    TIMEOUT = "timeout"
    #: The backend chose another subprotocol than the one the client got: it cannot
    #: carry this pipe (not an error of the backend's).
    SUBPROTOCOL = "subprotocol"
    #: The backend answered the upgrade with a 4xx status: it is alive and refuses this
    #: session (a subprotocol it lacks, a credential, a path), so only this pipe avoids it.
    REFUSED = "refused"


class Delivery(enum.StrEnum):
    """What a pipe promises for client messages across an interruption."""

    #: A message written to a link that dies may be lost, never duplicated.
    AT_MOST_ONCE = "at-most-once"
    #: Messages written to a link are kept until a pong confirms the backend read them,
    #: and replayed first after any interruption: nothing lost, duplicates possible.
    AT_LEAST_ONCE = "at-least-once"
    #: Messages are kept until the backend acknowledges it processed them; with the
    #: backend's deduplication by sequence number, each is processed exactly once.
    ACKED = "acked"


class LimitKind(enum.StrEnum):
    """Which limit a client message hit (``wspipe_buffer_full``'s ``reason``)."""

    #: The pipe's own ``buffer_limit``.
    BUFFER_LIMIT = "buffer_limit"
    #: The process-wide ``memory_budget``.
    MEMORY_BUDGET = "memory_budget"

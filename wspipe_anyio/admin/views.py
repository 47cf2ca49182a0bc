"""JSON views of the core's snapshots, as the admin API and the console answer them."""

from __future__ import annotations

from typing import Any

from wspipe_core import BackendInfo, MigrationInfo, PipeInfo

from ..logfmt import mask_url


def migration_json(info: MigrationInfo | None) -> dict[str, Any] | None:
    """``{total, moved, remaining, waiting}`` of a migration under way, or ``None``."""
    if info is None:
        return None
    return {"total": info.total, "moved": info.moved, "remaining": info.remaining,
            "waiting": info.waiting}


def backend_json(info: BackendInfo, migration: MigrationInfo | None = None) -> dict[str, Any]:
    """``{id, url, state, pipes, errors, consecutive_failures, weight, migration}``.

    ``url`` is masked: credentials, query values and fragment (``?token=***``).
    """
    return {"id": info.id, "url": mask_url(info.url), "state": info.state.value,
            "pipes": info.pipes, "errors": info.errors,
            "consecutive_failures": info.consecutive_failures, "weight": info.weight,
            "migration": migration_json(migration)}


def pipe_json(info: PipeInfo, now: float, wall_offset: float) -> dict[str, Any]:
    """``{id, client_id, backend_id, state, buffered_bytes, interruptions, since, ...}``.

    ``since`` is wall-clock Unix time (the core's monotonic time plus
    ``wall_offset``); ``age_seconds`` is how long the pipe has lived. Request
    headers are never shown (they carry cookies and credentials). ``parked``: the
    client vanished and the session waits ``resume_window_left_seconds`` more for it,
    holding ``held_for_client`` backend messages.
    """
    age = max(0.0, now - info.since)
    parked = info.parked_until is not None
    left = round(max(0.0, info.parked_until - now), 3) if info.parked_until is not None else None
    return {"id": info.id, "client_id": info.client_id, "backend_id": info.backend_id,
            "state": info.state.value, "buffered_bytes": info.buffered_bytes,
            "interruptions": info.interruptions, "since": round(info.since + wall_offset, 3),
            "age_seconds": round(age, 3), "subprotocol": info.subprotocol,
            "peer": info.request.peer, "path": info.request.path,
            "delivery": info.delivery, "unconfirmed_messages": info.unconfirmed_messages,
            "parked": parked, "resume_window_left_seconds": left,
            "held_for_client": info.held_for_client, "session_id": info.session_id}

"""Log lines about a pipe, carrying its context (pipe, client id, backend) as fields."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("wspipe")


def pipe_log(level: int, pipe: Any, msg: str, *args: object) -> None:
    """Log ``msg % args`` about ``pipe``, prefixed and tagged with its context.

    ``pipe`` is the core's ``Pipe`` (anything with ``id``, ``client_id``, ``link`` and
    ``last_backend``); the record gets ``pipe``, ``client_id`` and ``backend`` attributes
    for structured formatters.
    """
    if not log.isEnabledFor(level):
        return
    backend = pipe.link.backend if pipe.link is not None else pipe.last_backend
    backend_id = backend.id if backend is not None else "-"
    log.log(level, "pipe %s client %s backend %s: " + msg, pipe.id, pipe.client_id, backend_id,
            *args, extra={"pipe": pipe.id, "client_id": pipe.client_id, "backend": backend_id})

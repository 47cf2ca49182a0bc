"""``consistent_hash``: sticky by client id, with minimal movement when backends change.

Weighted rendezvous hashing (highest random weight): each (client id, backend URL)
pair gets a pseudo-random score scaled by the backend's weight, and the candidate
with the highest score wins. A client therefore returns to the same backend after
an interruption, and adding or removing one backend of ``n`` moves only the clients
that gain or lose it (about ``1/n`` of them). Settings: none.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import pluggy

from wspipe_core import BackendInfo, PipeInfo, ProxyConfig, hookimpl

from .._settings import Settings, activate

NAME = "consistent_hash"

_SCALE = float(2**64)


def score(key: str, backend: BackendInfo) -> float:
    """The rendezvous score of ``key`` on ``backend`` (higher wins): ``weight / -ln(u)``."""
    digest = hashlib.blake2b(f"{key}\x00{backend.url}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (_SCALE + 1)  # uniform in (0, 1)
    return backend.weight / -math.log(u)


class ConsistentHash:
    """Choose the candidate with the highest rendezvous score for the pipe's client id."""

    @hookimpl
    def wspipe_select_backend(
        self, pipe: PipeInfo, candidates: Sequence[BackendInfo]
    ) -> BackendInfo:
        return max(candidates, key=lambda b: score(pipe.client_id, b))


@hookimpl
def wspipe_configure(config: ProxyConfig, pm: pluggy.PluginManager) -> None:
    """Register a :class:`ConsistentHash` for this proxy."""
    Settings.of(config, NAME).done()
    activate(pm, NAME, ConsistentHash())

"""Built-in backend-selection strategies, one plugin class each."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..hookspecs import hookimpl
from ..info import BackendInfo, PipeInfo


def _order(backend_id: str) -> tuple[int, str]:
    digits = backend_id.lstrip("b")
    return (int(digits), backend_id) if digits.isdigit() else (0, backend_id)


class LeastConnections:
    """The candidate with the fewest pipes; ties go to the earliest registered."""

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        return min(candidates, key=lambda b: b.pipes)


class RoundRobin:
    """Candidates in turn, by registration order, skipping those not eligible now."""

    def __init__(self) -> None:
        self._last: tuple[int, str] | None = None

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        ordered = sorted(candidates, key=lambda b: _order(b.id))
        chosen = ordered[0]
        if self._last is not None:
            chosen = next((b for b in ordered if _order(b.id) > self._last), ordered[0])
        self._last = _order(chosen.id)
        return chosen


def hash_score(client_id: str, url: str) -> int:
    """Rendezvous (highest-random-weight) score of a client id on a backend URL."""
    digest = hashlib.blake2b(f"{client_id}\x00{url}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


class ConsistentHash:
    """Sticky by client id: rendezvous hashing, so adding a backend moves ~1/n clients."""

    @hookimpl(trylast=True)
    def wspipe_select_backend(
        self, pipe: PipeInfo, candidates: Sequence[BackendInfo]
    ) -> BackendInfo:
        return max(candidates, key=lambda b: hash_score(pipe.client_id, b.url))


class Exclusive:
    """At most one pipe per backend (the original library's semantics)."""

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo | None:
        return next((b for b in candidates if b.pipes == 0), None)


#: Built-in strategies by configuration name.
STRATEGIES: dict[str, type[LeastConnections | RoundRobin | ConsistentHash | Exclusive]] = {
    "least_connections": LeastConnections,
    "round_robin": RoundRobin,
    "consistent_hash": ConsistentHash,
    "exclusive": Exclusive,
}

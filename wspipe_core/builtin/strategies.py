"""The backend-selection strategies, one plugin class each.

These are the only implementations: ``strategy = "NAME"`` registers one as the
built-in ``wspipe.strategy``, and the first-party plugin ``--plugin NAME``
(``wspipe_plugins.strategy.NAME``) registers the same class in its place. Each is
built by :func:`make_strategy` from the ``[plugins.NAME]`` table, whichever way it
was selected.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping, Sequence

from ..config import ProxyConfig
from ..errors import ConfigError
from ..hookspecs import hookimpl
from ..info import BackendInfo, PipeInfo
from .settings import Settings, without_settings


class LeastConnections:
    """The candidate with the fewest pipes; ties go to the earliest registered."""

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        return min(candidates, key=lambda b: b.pipes)


class RoundRobin:
    """Candidates in turn, in registration order, continuing after the one chosen last.

    A backend that is not a candidate this time (ejected, draining, just failed) is
    skipped. Registration order is the order in which backends were first seen
    (candidates always come in registration order), so no backend id is parsed.
    """

    def __init__(self) -> None:
        #: Backend id -> rank in the order first seen.
        self._rank: dict[str, int] = {}
        self._last = -1

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        for backend in candidates:
            self._rank.setdefault(backend.id, len(self._rank))
        ordered = sorted(candidates, key=lambda b: self._rank[b.id])
        chosen = next((b for b in ordered if self._rank[b.id] > self._last), ordered[0])
        self._last = self._rank[chosen.id]
        return chosen


_SCALE = float(2**64)


def score(key: str, backend: BackendInfo) -> float:
    """The weighted rendezvous score of ``key`` on ``backend`` (higher wins).

    ``weight / -ln(u)`` with ``u`` in (0, 1) from BLAKE2b of the key and the backend
    URL: it depends on nothing else, so every proxy replica agrees, and a backend of
    weight 3 wins about three times as many keys as one of weight 1.
    """
    digest = hashlib.blake2b(f"{key}\x00{backend.url}".encode(), digest_size=8).digest()
    u = (int.from_bytes(digest, "big") + 1) / (_SCALE + 1)
    return backend.weight / -math.log(u)


class ConsistentHash:
    """Sticky by client id: weighted rendezvous hashing over the candidates.

    Adding or removing one backend of ``n`` moves only the clients that gain or lose
    it (about ``1/n`` of them); a client interrupted on its backend fails over to its
    second-best one and comes back when it returns.
    """

    @hookimpl(trylast=True)
    def wspipe_select_backend(
        self, pipe: PipeInfo, candidates: Sequence[BackendInfo]
    ) -> BackendInfo:
        return max(candidates, key=lambda b: score(pipe.client_id, b))


class Exclusive:
    """At most one pipe per backend (the original library's semantics).

    The first candidate (registration order) with no pipe; ``None`` when every one is
    taken, so the pipe waits: nothing else may choose (the built-in strategy is this
    one or, loaded as a plugin, it blocks the built-in: :attr:`alone`).
    """

    #: Its ``None`` is final: no other strategy of the family may answer after it.
    alone = True

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo | None:
        return next((b for b in candidates if b.pipes == 0), None)


class Weighted:
    """Weighted least-connections: the lowest ``(pipes + 1) / weight``.

    Ties go to the larger weight, then to the earliest registered.

    :param weights: Weights by backend URL, overriding the registered ones.
    """

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    def weight(self, backend: BackendInfo) -> float:
        """The weight used for ``backend``."""
        return self.weights.get(backend.url, backend.weight)

    @hookimpl(trylast=True)
    def wspipe_select_backend(self, candidates: Sequence[BackendInfo]) -> BackendInfo:
        return min(candidates,
                   key=lambda b: ((b.pipes + 1) / self.weight(b), -self.weight(b)))


Strategy = LeastConnections | RoundRobin | ConsistentHash | Exclusive | Weighted


def _weighted(config: ProxyConfig) -> Weighted:
    settings = Settings.of(config, "weighted")
    weights = settings.numbers("weights")
    settings.done()
    return Weighted(weights)


#: Strategy name -> factory reading the ``[plugins.NAME]`` table of the configuration.
STRATEGIES: dict[str, Callable[[ProxyConfig], Strategy]] = {
    "least_connections": without_settings("least_connections", LeastConnections),
    "round_robin": without_settings("round_robin", RoundRobin),
    "consistent_hash": without_settings("consistent_hash", ConsistentHash),
    "exclusive": without_settings("exclusive", Exclusive),
    "weighted": _weighted,
}


def make_strategy(name: str, config: ProxyConfig) -> Strategy:
    """A new strategy object ``name``, configured from ``[plugins.NAME]`` of ``config``.

    :raises ConfigError: Unknown name, or a bad or unknown key in the table.
    """
    factory = STRATEGIES.get(name)
    if factory is None:
        raise ConfigError(f"unknown strategy {name!r}; built-in: {', '.join(sorted(STRATEGIES))}")
    return factory(config)

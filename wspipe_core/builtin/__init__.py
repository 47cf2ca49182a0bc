"""The built-in behaviour, written as ordinary plugins whose hooks are ``trylast``.

Each strategy, backoff and buffer policy exists once, here. The configuration
chooses which one :func:`make_builtins` registers under the built-in names below;
the first-party plugins of ``wspipe_plugins`` register the same classes, made by the
same factories, in place of the built-in of their family (see docs/plugins.md).
"""

from __future__ import annotations

import pluggy

from ..config import ProxyConfig
from .backoff import ExponentialBackoff, FixedBackoff, make_backoff
from .buffer_full import (
    BUFFER_POLICIES,
    BufferPolicy,
    CloseOnFull,
    DropOldest,
    PauseOnFull,
    make_buffer_policy,
)
from .client_id import UUIDClientId
from .settings import Settings
from .strategies import (
    STRATEGIES,
    ConsistentHash,
    Exclusive,
    LeastConnections,
    RoundRobin,
    Strategy,
    Weighted,
    make_strategy,
)

#: Plugin name of the built-in ``wspipe_client_id`` (the ``/<uuid>`` path).
CLIENT_ID = "wspipe.client_id"
#: Plugin name of the built-in ``wspipe_select_backend`` (``strategy``).
STRATEGY = "wspipe.strategy"
#: Plugin name of the built-in ``wspipe_backoff`` (``backoff``).
BACKOFF = "wspipe.backoff"
#: Plugin name of the built-in ``wspipe_buffer_full`` (``buffer_policy``).
BUFFER_POLICY = "wspipe.buffer_policy"


#: The classes of each family, by the name of the built-in whose place they take.
FAMILIES: dict[str, tuple[type, ...]] = {
    STRATEGY: (LeastConnections, RoundRobin, ConsistentHash, Exclusive, Weighted),
    BACKOFF: (ExponentialBackoff, FixedBackoff),
    BUFFER_POLICY: (CloseOnFull, PauseOnFull, DropOldest),
}


def family_of(plugin: object) -> str | None:
    """The built-in name (``wspipe.strategy``, ...) of the family of ``plugin``, or ``None``.

    Only objects of the classes above count, not of subclasses: a subclass is a plugin
    of its own, ordered like any other.
    """
    return next((name for name, classes in FAMILIES.items() if type(plugin) in classes), None)


def take_slot(pm: pluggy.PluginManager, plugin: object) -> None:
    """Make ``plugin``, about to be registered, the one plugin object of its family.

    Objects of the same family registered before (another first-party plugin of the
    family) are blocked: the last one named wins. The built-in itself stays, asked
    after ``plugin`` (see :func:`wspipe_core.hooks.builtins_last`), unless ``plugin``
    answers alone (:class:`Exclusive`, whose ``None`` means "wait"): then it is
    blocked too. Does nothing for an object of no family.
    """
    family = family_of(plugin)
    if family is None:
        return
    for name, other in list(pm.list_name_plugin()):
        if other is not None and other is not plugin and name != family \
                and family_of(other) == family:
            pm.set_blocked(name)
    if getattr(plugin, "alone", False):
        pm.set_blocked(family)


def make_builtins(config: ProxyConfig) -> list[tuple[str, object]]:
    """The built-in plugins chosen by ``config``, as ``(name, object)``, in registration order.

    :raises ConfigError: An unknown strategy or buffer policy, or bad settings in the
        ``[plugins.NAME]`` table of the one chosen.
    """
    return [
        (CLIENT_ID, UUIDClientId()),
        (STRATEGY, make_strategy(config.strategy, config)),
        (BACKOFF, make_backoff(config)),
        (BUFFER_POLICY, make_buffer_policy(config.buffer_policy, config)),
    ]


__all__ = [
    "BACKOFF",
    "BUFFER_POLICIES",
    "BUFFER_POLICY",
    "CLIENT_ID",
    "FAMILIES",
    "STRATEGIES",
    "STRATEGY",
    "BufferPolicy",
    "CloseOnFull",
    "ConsistentHash",
    "DropOldest",
    "Exclusive",
    "ExponentialBackoff",
    "FixedBackoff",
    "LeastConnections",
    "PauseOnFull",
    "RoundRobin",
    "Settings",
    "Strategy",
    "UUIDClientId",
    "Weighted",
    "family_of",
    "make_backoff",
    "make_buffer_policy",
    "make_builtins",
    "make_strategy",
    "take_slot",
]

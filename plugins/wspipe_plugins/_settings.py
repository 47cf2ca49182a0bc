"""Reading a plugin's ``[plugins.NAME]`` table, and registering its configured object."""

from __future__ import annotations

import pluggy

from wspipe_core.builtin import take_slot
from wspipe_core.builtin.settings import Settings

__all__ = ["Settings", "activate"]


def activate(pm: pluggy.PluginManager, name: str, plugin: object) -> None:
    """Register ``plugin`` as ``name:Class`` unless that name is registered or blocked.

    An object of a built-in class (strategy, backoff, buffer policy) first takes its
    family's slot (:func:`wspipe_core.builtin.take_slot`): it replaces the first-party
    plugin of the family named before it, and is asked before the built-in.
    """
    full = f"{name}:{type(plugin).__name__}"
    if pm.has_plugin(full) or pm.is_blocked(full):
        return
    take_slot(pm, plugin)
    pm.register(plugin, name=full)

"""First-party wspipe plugins, written against the public hook API like any third-party one.

Each plugin is a module whose ``wspipe_configure`` registers one configured object
per proxy (its settings come from the ``[plugins.NAME]`` table of the config file).
They are listed in the ``wspipe`` entry-point group under the names below, but, since
they compete (one strategy, one buffer policy), none is loaded unless named::

    wspipe serve --plugin weighted --plugin token        # by entry-point name
    wspipe serve --plugin wspipe_plugins.strategy.weighted   # or by module path

See docs/plugins.md and docs/plugins/*.md.
"""

from __future__ import annotations

#: Entry-point name -> module, for every first-party plugin (mirrors pyproject.toml).
FIRST_PARTY: dict[str, str] = {
    "least_connections": "wspipe_plugins.strategy.least_connections",
    "round_robin": "wspipe_plugins.strategy.round_robin",
    "consistent_hash": "wspipe_plugins.strategy.consistent_hash",
    "exclusive": "wspipe_plugins.strategy.exclusive",
    "weighted": "wspipe_plugins.strategy.weighted",
    "token": "wspipe_plugins.auth.token",
    "jwt": "wspipe_plugins.auth.jwt",
    "origin": "wspipe_plugins.auth.origin",
    "close": "wspipe_plugins.buffer.close",
    "pause": "wspipe_plugins.buffer.pause",
    "drop_oldest": "wspipe_plugins.buffer.drop_oldest",
    "backoff": "wspipe_plugins.backoff",
}

__all__ = ["FIRST_PARTY"]

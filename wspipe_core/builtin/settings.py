"""Reading a ``[plugins.NAME]`` settings table (built-ins and first-party plugins alike)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from ..config import ProxyConfig
from ..errors import ConfigError

T = TypeVar("T")


class Settings:
    """Typed access to one ``[plugins.NAME]`` table; unknown keys are an error.

    Call :meth:`done` after the last read: it raises :class:`ConfigError` naming any
    key that was not read (a typo would otherwise be ignored silently).
    """

    def __init__(self, name: str, table: Mapping[str, Any]) -> None:
        if not isinstance(table, Mapping):
            raise ConfigError(f"[plugins.{name}] must be a table")
        self.name = name
        self._table = {key.replace("-", "_"): value for key, value in table.items()}
        self._read: set[str] = set()

    @classmethod
    def of(cls, config: ProxyConfig, name: str) -> Settings:
        """The ``[plugins.name]`` table of ``config`` (empty if absent)."""
        return cls(name, config.plugin_settings.get(name, {}))

    def __contains__(self, key: str) -> bool:
        return key in self._table

    def _get(self, key: str) -> Any:
        self._read.add(key)
        return self._table.get(key)

    def error(self, key: str, message: str) -> ConfigError:
        """A :class:`ConfigError` about ``key``, naming the table."""
        return ConfigError(f"[plugins.{self.name}] {key}: {message}")

    def text(self, key: str, default: str | None) -> str | None:
        """The string at ``key``, or ``default`` if absent."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(key, f"expected a string, got {value!r}")
        return value

    def number(self, key: str, default: float, *, minimum: float = 0.0) -> float:
        """The number (>= ``minimum``) at ``key``, or ``default`` if absent."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or value < minimum:
            raise self.error(key, f"expected a number >= {minimum}, got {value!r}")
        return float(value)

    def flag(self, key: str, default: bool) -> bool:
        """The boolean at ``key``, or ``default`` if absent."""
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.error(key, f"expected true or false, got {value!r}")
        return value

    def strings(self, key: str, default: tuple[str, ...] = ()) -> tuple[str, ...]:
        """The string or list of strings at ``key``, as a tuple; ``default`` if absent."""
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
            raise self.error(key, f"expected a list of strings, got {value!r}")
        return tuple(value)

    def numbers(self, key: str) -> dict[str, float]:
        """A table of positive numbers by string key (e.g. weights by backend URL)."""
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(key, f"expected a table, got {value!r}")
        out: dict[str, float] = {}
        for name, number in value.items():
            if isinstance(number, bool) or not isinstance(number, int | float) or number <= 0:
                raise self.error(key, f"{name}: expected a number > 0, got {number!r}")
            out[str(name)] = float(number)
        return out

    def done(self) -> None:
        """Raise :class:`ConfigError` if the table has keys that were never read."""
        unknown = sorted(set(self._table) - self._read)
        if unknown:
            raise ConfigError(f"[plugins.{self.name}] unknown key(s): {', '.join(unknown)}")



def without_settings(name: str, cls: Callable[[], T]) -> Callable[[ProxyConfig], T]:
    """A factory of ``cls()`` that refuses any key in the ``[plugins.name]`` table."""
    def build(config: ProxyConfig) -> T:
        Settings.of(config, name).done()
        return cls()
    return build

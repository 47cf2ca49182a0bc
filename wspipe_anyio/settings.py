"""Where ``wspipe serve`` gets its settings: flags > environment > config file > defaults.

The one place that merges the layers. Each key of the config file (a
:class:`wspipe_core.ProxyConfig` field or a driver key, see ``cli.DRIVER_KEYS``) is
also the environment variable ``WSPIPE_<KEY>`` (upper case), and
``WSPIPE_<KEY>_FILE`` reads that value from a file (a mounted secret), unless
``<key>_file`` is a key of its own (``admin_token_file``: the driver reads the
token from it itself, again on every reload). ``WSPIPE_CONFIG`` names the config
file when ``--config`` is not given.

Environment values are text: numbers, ``true``/``false`` (also ``1/0``, ``yes/no``,
``on/off``), sizes and durations with units as in the file, lists comma-separated
(``ws://a:9000/,ws://b:9000/``), and anything starting with ``[`` or ``{`` is a TOML
value (``["chat.v2", "chat.v1"]``, ``{token = {tokens_file = "/run/t"}}``). An empty
variable counts as unset. A value that cannot be read is a :class:`SettingsError`
naming the variable (``wspipe`` exits 2).

:func:`merge` returns the merged settings with the source of each
(:class:`Merged`); :func:`render` prints an effective configuration as TOML, one
key a line with its source, secrets masked (``wspipe config --show``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from wspipe_core import ProxyConfig

from .logfmt import REDACTED, mask_url
from .units import parse_duration, parse_size

#: Prefix of every configuration variable.
ENV_PREFIX = "WSPIPE_"
#: Suffix of a variable naming a file that holds the value.
FILE_SUFFIX = "_FILE"
#: Variable naming the config file (``--config`` wins).
CONFIG_ENV = "WSPIPE_CONFIG"
#: ``WSPIPE_*`` variables that are not configuration keys but are read by other
#: ``wspipe`` commands: not reported as unknown. (``$WSPIPE_ADMIN`` and
#: ``$WSPIPE_ADMIN_TOKEN`` are keys: the admin listener's address and token.)
OTHER_VARIABLES: frozenset[str] = frozenset({
    "WSPIPE_STORE_PASSWORD",  # the fleet store's password (wspipe_anyio.store.address)
})
#: Keys whose values are secrets: masked by :func:`render`. Plugin settings whose
#: name says so (``token``, ``tokens``, ``secret``, ``password``, ``key``) are too.
SECRET_KEYS = frozenset({"admin_token"})
_SECRET_WORDS = ("token", "tokens", "secret", "secrets", "password", "passwd", "key",
                 "credentials")
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class SettingsError(Exception):
    """A setting cannot be read: the message names where it came from."""


@dataclass(frozen=True)
class Schema:
    """The keys ``serve`` knows and how to read each from text.

    :param driver_defaults: Driver keys and their defaults (the rest are ProxyConfig's).
    :param sizes: Keys that are byte sizes (units accepted).
    :param durations: Keys that are durations (units accepted).
    """

    driver_defaults: Mapping[str, Any]
    sizes: frozenset[str]
    durations: frozenset[str]

    @property
    def core_keys(self) -> tuple[str, ...]:
        """The ProxyConfig fields, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(ProxyConfig))

    @property
    def keys(self) -> tuple[str, ...]:
        """Every key: the core's, then the driver's."""
        return (*self.core_keys, *(k for k in self.driver_defaults if k not in self.core_keys))

    def kind(self, key: str) -> str:
        """How ``key`` is read from text: size, duration, int, float, bool, list,
        int-list, table or str."""
        if key in self.sizes:
            return "size"
        if key in self.durations:
            return "duration"
        annotations = {f.name: str(f.type) for f in dataclasses.fields(ProxyConfig)}
        if key in annotations:
            kind = annotations[key].replace(" | None", "")
            return {"int": "int", "float": "float", "bool": "bool", "str": "str",
                    "tuple[str, ...]": "list", "frozenset[int]": "int-list",
                    "dict[str, dict[str, Any]]": "table"}.get(kind, "str")
        default = self.driver_defaults.get(key)
        if isinstance(default, bool):
            return "bool"
        if isinstance(default, list | tuple):
            return "list"
        return "str"


def variable(key: str) -> str:
    """The environment variable of ``key``: ``WSPIPE_BUFFER_LIMIT``."""
    return ENV_PREFIX + key.upper()


def _parse_text(text: str, kind: str, where: str) -> Any:
    """One environment value, read as ``kind``."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return tomllib.loads(f"value = {stripped}")["value"]
        except tomllib.TOMLDecodeError as exc:
            raise SettingsError(f"{where}: not a TOML value: {exc}") from None
    if kind == "int":
        try:
            return int(stripped)
        except ValueError:
            raise SettingsError(f"{where}: expected an integer, got {stripped!r}") from None
    if kind == "float":
        try:
            value = float(stripped)
        except ValueError:
            raise SettingsError(f"{where}: expected a number, got {stripped!r}") from None
        if not math.isfinite(value):
            raise SettingsError(f"{where}: expected a finite number, got {stripped!r}")
        return value
    if kind == "bool":
        if stripped.lower() in _TRUE:
            return True
        if stripped.lower() in _FALSE:
            return False
        raise SettingsError(f"{where}: expected true or false, got {stripped!r}")
    if kind in ("list", "int-list"):
        items = [item.strip() for item in stripped.split(",") if item.strip()]
        if kind == "list":
            return items
        try:
            return [int(item) for item in items]
        except ValueError:
            raise SettingsError(
                f"{where}: expected comma-separated integers, got {stripped!r}") from None
    if kind == "table":
        raise SettingsError(f"{where}: expected a TOML table ({{name = {{key = value}}}})")
    return stripped  # str, size and duration (units are parsed with the other layers)


def read_environ(environ: Mapping[str, str], schema: Schema,
                 warn: Callable[[str], None] | None = None
                 ) -> tuple[dict[str, Any], dict[str, str]]:
    """The settings the environment gives, and the variable each came from.

    :raises SettingsError: A value that cannot be read, an unreadable file, or a key
        given both as ``WSPIPE_X`` and ``WSPIPE_X_FILE``.
    """
    keys = set(schema.keys)
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX) or name in (CONFIG_ENV, *OTHER_VARIABLES):
            continue
        text = environ[name]
        if not text.strip():
            continue  # empty counts as unset (compose files pass empty variables)
        key = name[len(ENV_PREFIX):].lower()
        where = f"${name}"
        if key not in keys and key.endswith(FILE_SUFFIX.lower()) \
                and key[:-len(FILE_SUFFIX)] in keys:
            key = key[:-len(FILE_SUFFIX)]
            if environ.get(variable(key), "").strip():
                raise SettingsError(f"give ${variable(key)} or ${name}, not both")
            try:
                with open(text.strip(), encoding="utf-8") as file:
                    text = file.read()
            except OSError as exc:
                raise SettingsError(
                    f"{where}: cannot read {text.strip()}: {exc.strerror or exc}") from None
            where = f"{where} ({environ[name].strip()})"
        elif key not in keys:
            if warn is not None:
                warn(f"${name} is not a configuration key; ignored")
            continue
        values[key] = _parse_text(text, schema.kind(key), where)
        sources[key] = where
    return values, sources


def read_file(path: str) -> dict[str, Any]:
    """Read a TOML config file into a flat dict of ``_`` keys.

    ``plugins = [...]`` lists plugins to load; a ``[plugins]`` table holds their
    settings (``[plugins.NAME]``, which become ``plugin_settings``) and may list them
    too (``load = [...]``).

    :raises SettingsError: Unreadable or invalid file.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"invalid config file {path}: {exc}") from None
    out = {key.replace("-", "_"): value for key, value in data.items()}
    if "plugins" in out:
        plugins = out.pop("plugins")
        if isinstance(plugins, dict):
            load = plugins.pop("load", [])
            out["plugin_settings"] = plugins
        else:
            load = plugins
        if not isinstance(load, list) or not all(isinstance(m, str) for m in load):
            raise SettingsError(f"{path}: 'plugins' must be a list of plugin names or "
                                "modules, or a table of [plugins.NAME] settings")
        if load:
            existing = out.get("plugin_modules", [])
            out["plugin_modules"] = ([existing] if isinstance(existing, str)
                                     else list(existing)) + load
    return out


@dataclass
class Merged:
    """Merged settings (flags over environment over file; defaults are applied later,
    by ``build_options``) and where each came from."""

    values: dict[str, Any] = field(default_factory=dict)
    #: ``--flag``, ``$WSPIPE_X`` or ``config file F`` per key given; absent: default.
    sources: dict[str, str] = field(default_factory=dict)
    #: The config file read, if any.
    path: str | None = None

    def source(self, key: str) -> str:
        """Where ``key`` came from (``default`` if no layer gave it)."""
        return self.sources.get(key, "default")

    def blame(self, message: str) -> str:
        """``message`` (a validation error naming a key) with where that key came from
        appended: ``... (from $WSPIPE_MAX_CONNECTIONS)``. The key named first wins;
        keys that came from no layer (defaults) add nothing."""
        found = [(m.start(), key) for key in self.sources
                 if (m := re.search(rf"(?<![\w-]){re.escape(key)}(?![\w-])", message))]
        if not found:
            return message
        return f"{message} (from {self.sources[min(found)[1]]})"


def _paired(key: str, keys: Iterable[str]) -> str | None:
    """The other key of a value/file pair (``admin_token`` ↔ ``admin_token_file``)."""
    known = set(keys)
    if key.endswith("_file") and key[:-5] in known:
        return key[:-5]
    if f"{key}_file" in known:
        return f"{key}_file"
    return None


def merge(flags: Mapping[str, Any], schema: Schema, *, config_path: str | None,
          environ: Mapping[str, str] | None = None,
          warn: Callable[[str], None] | None = None,
          flag_names: Mapping[str, str] | None = None) -> Merged:
    """Merge the layers: ``flags`` (given ones only) > ``environ`` > the config file.

    A layer that gives one of a value/file pair (``admin_token``,
    ``admin_token_file``) overrides both of a lower layer. ``flag_names`` maps keys to
    the flags that set them, for the sources (``backends`` → ``--backend``). Sizes and durations are
    parsed here, so an error names the layer: ``$WSPIPE_BUFFER_LIMIT: invalid size``.

    :raises SettingsError: Anything a layer gives that cannot be read.
    """
    environ = os.environ if environ is None else environ
    path = config_path or environ.get(CONFIG_ENV) or None
    merged = Merged(path=path)
    layers: list[tuple[dict[str, Any], Callable[[str], str]]] = []
    if path:
        layers.append((read_file(path), lambda key: f"{key} in {path}"))
    env_values, env_sources = read_environ(environ, schema, warn)
    layers.append((env_values, env_sources.__getitem__))
    names = flag_names or {}
    layers.append((dict(flags), lambda key: names.get(key, "--" + key.replace("_", "-"))))
    keys = schema.keys
    for values, source in layers:
        for key, value in values.items():
            other = _paired(key, keys)
            if other is not None:
                merged.values.pop(other, None)
                merged.sources.pop(other, None)
            merged.values[key] = value
            merged.sources[key] = source(key)
    for key in schema.sizes & merged.values.keys():
        merged.values[key] = _convert(merged, key, parse_size)
    for key in schema.durations & merged.values.keys():
        if merged.values[key] is not None:
            merged.values[key] = _convert(merged, key, parse_duration)
    for key in ("listen", "backends", "plugin_modules"):
        if isinstance(merged.values.get(key), str):
            merged.values[key] = [merged.values[key]]
    return merged


def _convert(merged: Merged, key: str, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(merged.values[key])
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{merged.source(key)}: {exc}") from None


def warn_stderr(message: str) -> None:
    """Print a settings warning (``wspipe: warning: ...``) before logging is set up."""
    print(f"wspipe: warning: {message}", file=sys.stderr)


# Rendering (``wspipe config --show``).


def is_secret(key: str) -> bool:
    """Whether a key (of the config or of a plugin's table) holds a secret value."""
    if key in SECRET_KEYS:
        return True
    name = key.lower()
    if name.endswith(("_file", "_path", "_header", "_param", "_claim")):
        return False
    return any(name == word or name.endswith(f"_{word}") for word in _SECRET_WORDS)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, frozenset | set):
        return _toml(sorted(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{json.dumps(k)} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"cannot render {value!r} as TOML")


def _masked(key: str, value: Any) -> Any:
    if value is None:
        return None
    if is_secret(key):
        return REDACTED
    if key == "backends":
        return [mask_url(url) for url in value]
    if isinstance(value, dict):
        return {k: _masked(k, v) for k, v in value.items()}
    return value


def render(config: ProxyConfig, driver: Mapping[str, Any], merged: Merged) -> str:
    """The effective configuration as TOML, secrets masked, each key with its source.

    Keys whose value is unset (``None``) are shown commented out. The output is a
    valid config file (masked values aside).
    """
    lines = ["# wspipe effective configuration (wspipe config --show)",
             f"# config file: {merged.path or 'none'}; precedence: flags > "
             "environment > file > defaults", ""]
    core = {f.name: getattr(config, f.name) for f in dataclasses.fields(ProxyConfig)}
    settings = core.pop("plugin_settings")
    for key, value in [*core.items(), *driver.items()]:
        shown = _masked(key, value)
        source = merged.source(key)
        if shown is None:
            lines.append(f"# {key} = (unset)  # {source}")
        else:
            lines.append(f"{key} = {_toml(shown)}  # {source}")
    for name, table in settings.items():
        lines += ["", f"[plugins.{name}]  # {merged.source('plugin_settings')}"]
        for key, value in table.items():
            lines.append(f"{key} = {_toml(_masked(key, value))}")
    return "\n".join(lines) + "\n"

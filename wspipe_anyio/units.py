"""Parsing of sizes (``5MiB``) and durations (``500ms``) given on the command line or in TOML."""

from __future__ import annotations

import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1024, "kib": 1024, "kb": 1000,
    "m": 1024**2, "mib": 1024**2, "mb": 1000**2,
    "g": 1024**3, "gib": 1024**3, "gb": 1000**3,
}
_TIME_UNITS = {"": 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUMBER = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*$")


def parse_size(value: str | int) -> int:
    """Bytes from ``5242880``, ``"5MiB"``, ``"512 KiB"``, ``"5MB"`` (10**6) or ``"5M"`` (2**20).

    :raises ValueError: Not a size.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        return value
    match = _NUMBER.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _SIZE_UNITS:
        raise ValueError(f"invalid size {value!r} (examples: 65536, 512KiB, 5MiB, 1GB)")
    size = float(match.group(1)) * _SIZE_UNITS[unit]
    if size != int(size):
        raise ValueError(f"invalid size {value!r}: not a whole number of bytes")
    return int(size)


def parse_duration(value: str | float) -> float:
    """Seconds from ``2.5``, ``"2.5"``, ``"2.5s"``, ``"500ms"`` or ``"1m"``.

    :raises ValueError: Not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value)
    match = _NUMBER.match(value)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _TIME_UNITS:
        raise ValueError(f"invalid duration {value!r} (examples: 20, 2.5s, 500ms, 1m)")
    return float(match.group(1)) * _TIME_UNITS[unit]


def parse_address(value: str, default_port: int = 8080) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT``, ``[IPv6]:PORT``, ``:PORT`` or ``HOST``.

    :raises ValueError: Not an address.
    """
    host, port_text = value, ""
    if value.startswith("["):
        close = value.find("]")
        if close < 0 or (value[close + 1:] and not value[close + 1:].startswith(":")):
            raise ValueError(f"invalid listen address {value!r}")
        host, port_text = value[1:close], value[close + 2:]
    elif value.count(":") == 1:
        host, port_text = value.split(":")
    elif ":" in value:
        raise ValueError(f"invalid listen address {value!r}: write IPv6 as [ADDR]:PORT")
    if not host:
        host = "127.0.0.1"
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ValueError(f"invalid port in listen address {value!r}")
    return host, int(port_text)

"""Which hosts a backend URL may point at: the optional ``backend_allow`` list.

An entry is a host name (``api.internal``; ``*.internal`` for any name below it, not
``internal`` itself), an IP address, or a CIDR network (``10.0.0.0/8``, ``fd00::/8``).
Names match names and addresses match addresses: the core resolves nothing, so a name
is allowed only when it is listed as a name (a CIDR entry never admits a name that
might resolve into it). An empty list allows every host.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import ConfigError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class BackendAllowList:
    """The parsed ``backend_allow`` entries."""

    names: frozenset[str] = frozenset()
    suffixes: tuple[str, ...] = ()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> BackendAllowList:
        """Parse entries; raise :class:`ConfigError` naming the first bad one."""
        names: set[str] = set()
        suffixes: list[str] = []
        networks: list[IPNetwork] = []
        for entry in entries:
            text = entry.strip().lower() if isinstance(entry, str) else ""
            if not text:
                raise ConfigError(f"backend_allow: {entry!r} is not a host, address or network")
            try:
                networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
                continue
            except ValueError:
                if "/" in text or ":" in text:
                    raise ConfigError(
                        f"backend_allow: {entry!r} is not a valid address or network") from None
            label = text[2:] if text.startswith("*.") else text
            if not label or not all(part and _is_label(part) for part in label.split(".")):
                raise ConfigError(f"backend_allow: {entry!r} is not a valid host name")
            if text.startswith("*."):
                suffixes.append("." + label)
            else:
                names.add(label)
        return cls(frozenset(names), tuple(suffixes), tuple(networks))

    @property
    def empty(self) -> bool:
        """Whether every host is allowed."""
        return not (self.names or self.suffixes or self.networks)

    def allows(self, host: str) -> bool:
        """Whether a backend URL's host (as ``urlsplit`` gives it) is allowed."""
        if self.empty:
            return True
        host = host.lower().rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or host.endswith(self.suffixes)
        return any(address in network for network in self.networks)


def _is_label(part: str) -> bool:
    return len(part) <= 63 and part.replace("-", "").replace("_", "").isalnum() and part.isascii()

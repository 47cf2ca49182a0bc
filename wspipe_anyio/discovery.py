"""Resolvers for backend discovery: the driver's side of :mod:`wspipe_core.discovery`.

The core decides when to resolve which entry (``ResolveBackends``) and what an
answer means; a :class:`Resolver` only answers. :class:`DnsResolver` (the default)
resolves A/AAAA records with ``anyio.getaddrinfo`` and SRV records with dnspython
(the ``dns`` extra). Any object with the same ``resolve`` method plugs in through
``ProxyServer(resolver=...)``: a Consul catalogue, a file watcher, a test stub.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Protocol

import anyio

from wspipe_core.actions import ResolveBackends

#: Longest time one resolution may take; then it failed (and is retried next interval).
RESOLVE_TIMEOUT = 5.0
#: Most addresses taken from one answer (a pool is not a phone book).
MAX_ADDRESSES = 256

Address = tuple[str, int]


class ResolveError(Exception):
    """A name could not be resolved (the message says why)."""


class Resolver(Protocol):
    """Answers discovery queries."""

    async def resolve(self, query: ResolveBackends) -> Sequence[Address]:
        """The ``(host, port)`` addresses of ``query.name``.

        ``query.kind`` is ``a`` (addresses of the name, each with ``query.port``) or
        ``srv`` (SRV records: each target's addresses with the record's port).

        :raises ResolveError: (or ``OSError``) when there is no answer.
        """
        ...


class DnsResolver:
    """A/AAAA through the system resolver (``anyio.getaddrinfo``), SRV through dnspython.

    :param nameserver: ``(address, port)`` of the DNS server SRV queries go to (e.g.
        Consul's DNS interface on ``("127.0.0.1", 8600)``); default: the system's
        (``/etc/resolv.conf``).
    """

    def __init__(self, nameserver: tuple[str, int] | None = None) -> None:
        self.nameserver = nameserver

    async def resolve(self, query: ResolveBackends) -> Sequence[Address]:
        """See :meth:`Resolver.resolve`."""
        if query.kind == "srv":
            return await self._srv(query.name)
        assert query.port is not None
        return await self._addresses(query.name, query.port)

    async def _addresses(self, name: str, port: int) -> list[Address]:
        try:
            infos = await anyio.getaddrinfo(name, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise ResolveError(exc.strerror or str(exc)) from None
        out: list[Address] = []
        for _family, _type, _proto, _name, sockaddr in infos:
            address = (str(sockaddr[0]), int(sockaddr[1]))
            if address not in out:
                out.append(address)
        return out[:MAX_ADDRESSES]

    async def _srv(self, name: str) -> list[Address]:
        try:
            import dns.asyncbackend
            import dns.asyncresolver
            import dns.exception
        except ImportError:
            raise ResolveError("SRV records need dnspython: pip install 'wspipe[dns]'") from None
        try:
            if self.nameserver is None:
                resolver = dns.asyncresolver.Resolver()
            else:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [self.nameserver[0]]
                resolver.port = self.nameserver[1]
            # The backend named each time: dnspython caches the first one it sniffs, and
            # a process may run asyncio and trio one after the other (the tests do).
            backend = dns.asyncbackend.get_backend(dns.asyncbackend.sniff())
            answer = await resolver.resolve(name, "SRV", lifetime=RESOLVE_TIMEOUT,
                                            backend=backend)
        except dns.exception.DNSException as exc:
            raise ResolveError(str(exc) or type(exc).__name__) from None
        out: list[Address] = []
        # Every target is a member: weights and priorities are the pool's business.
        for record in sorted(answer, key=lambda r: (r.priority, -r.weight, str(r.target))):
            target = str(record.target).rstrip(".")
            for address in await self._addresses(target, int(record.port)):
                if address not in out:
                    out.append(address)
        return out[:MAX_ADDRESSES]

"""Backend discovery over loopback, on asyncio and trio: members come and go with what a
resolver answers while clients stream; a vanished member is drained with migrate and
nothing is lost. A stub resolver plugs into the ``ProxyServer(resolver=...)`` seam; the
default resolver (``anyio.getaddrinfo``) is checked against ``localhost``."""

from __future__ import annotations

import socket
import threading
from collections.abc import Sequence

import anyio
import pytest
from peers import metric
from test_rolling import (
    EchoBackend,
    Recorder,
    check,
    finish,
    start_clients,
    stopping,
    streaming,
)

from wspipe_anyio import ProxyServer
from wspipe_anyio.discovery import DnsResolver, ResolveError
from wspipe_core import ProxyConfig
from wspipe_core.actions import ResolveBackends

pytestmark = pytest.mark.anyio

SERVICE = "_ws._tcp.backends.test"


class StubResolver:
    """Answers SRV queries for :data:`SERVICE` from :attr:`answer`; counts queries."""

    def __init__(self) -> None:
        self.answer: list[tuple[str, int]] = []
        self.queries: list[ResolveBackends] = []

    async def resolve(self, query: ResolveBackends) -> Sequence[tuple[str, int]]:
        self.queries.append(query)
        if query.name != SERVICE:
            raise ResolveError(f"{query.name}: no such name")
        return list(self.answer)


def proxy(backends: tuple[str, ...], resolver: object | None = None) -> ProxyServer:
    config = ProxyConfig(backends=backends, discovery_interval=0.1, ping_interval=0,
                         max_interruption=10.0, backoff_base=0.02, backoff_max=0.2,
                         close_timeout=2.0, migrate_rate=200)
    return ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=3.0, close_linger=0.5,
                       resolver=resolver)  # type: ignore[arg-type]


async def members(server: ProxyServer, urls: set[str], timeout: float = 10) -> None:
    with anyio.fail_after(timeout):
        while {b.url for b in server.backends()} != urls:
            await anyio.sleep(0.02)


async def test_members_added_and_drained_with_migrate_while_clients_stream(
        anyio_backend: str) -> None:
    recorder = Recorder()
    fleet = [EchoBackend(recorder).start() for _ in range(3)]
    resolver = StubResolver()
    resolver.answer = [("127.0.0.1", fleet[0].port)]
    with anyio.fail_after(40), stopping(fleet) as (b1, b2, b3):
        server = proxy((f"srv+ws://{SERVICE}/",), resolver)
        async with server, streaming(await start_clients(server, 20)) as clients:
            await members(server, {b1.url})
            await anyio.sleep(0.3)  # streaming through b1
            resolver.answer = [("127.0.0.1", b1.port), ("127.0.0.1", b2.port)]
            await members(server, {b1.url, b2.url})
            await anyio.sleep(0.3)
            resolver.answer = [("127.0.0.1", b2.port), ("127.0.0.1", b3.port)]
            await members(server, {b2.url, b3.url})  # b1 drained: every pipe moved off it
            assert not [p for p in server.pipes() if p.backend_id == "b1"]
            await anyio.sleep(0.3)  # streaming on the new members
            numbers = await finish(clients, recorder)
            result = check(clients, recorder)  # 0 disconnects, 0 lost, 0 duplicated
        assert server.internal_errors == 0
    assert server.stats.pipes_migrated == 20
    assert len(resolver.queries) >= 3
    print(f"\ndiscovery: {numbers['sent']} messages from {result['clients']} clients while "
          f"members came and went, {numbers['received']} received (0 lost, 0 duplicated), "
          f"20 pipes migrated, {len(resolver.queries)} resolutions")


async def test_a_failing_resolver_keeps_the_members(anyio_backend: str) -> None:
    recorder = Recorder()
    resolver = StubResolver()
    with anyio.fail_after(20), stopping([EchoBackend(recorder).start()]) as (b1,):
        resolver.answer = [("127.0.0.1", b1.port)]
        server = proxy((f"srv+ws://{SERVICE}/",), resolver)
        async with server:
            await members(server, {b1.url})
            seen = len(resolver.queries)
            resolver.answer = []  # the core treats an empty answer as a failure
            with anyio.fail_after(5):
                while len(resolver.queries) < seen + 3:
                    await anyio.sleep(0.02)
            assert {b.url for b in server.backends()} == {b1.url}
            assert metric(server, "wspipe_discovery_resolutions_total", result="ok") == 1
            assert metric(server, "wspipe_discovery_resolutions_total", result="failed") >= 3


async def test_the_default_resolver_resolves_localhost_to_members(anyio_backend: str) -> None:
    recorder = Recorder()
    with anyio.fail_after(20), stopping([EchoBackend(recorder).start()]) as (b1,):
        server = proxy((f"dns+ws://localhost:{b1.port}/",))
        async with server, streaming(await start_clients(server, 2)) as clients:
            with anyio.fail_after(5):
                while f"ws://127.0.0.1:{b1.port}/" not in {b.url for b in server.backends()}:
                    await anyio.sleep(0.02)
            await anyio.sleep(0.2)
            await finish(clients, recorder)
            check(clients, recorder)
    found = await DnsResolver().resolve(ResolveBackends(1, "a", "localhost", 9))
    assert ("127.0.0.1", 9) in found
    with pytest.raises(ResolveError):
        await DnsResolver().resolve(ResolveBackends(2, "a", "no-such-host.invalid", 9))


class DnsServer:
    """A tiny authoritative DNS server on 127.0.0.1 (dnspython), answering SRV queries of
    :data:`SERVICE` with ``records`` and NXDOMAIN for every other name."""

    def __init__(self, records: list[str]) -> None:
        import dns.message
        import dns.rcode
        import dns.rrset

        self.records = records
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self._stop = threading.Event()

        def serve() -> None:
            while not self._stop.is_set():  # bounded: stop() ends it
                try:
                    data, peer = self.sock.recvfrom(4096)
                except TimeoutError:
                    continue
                query = dns.message.from_wire(data)
                reply = dns.message.make_response(query)
                question = query.question[0]
                if question.name.to_text() == SERVICE + ".":
                    reply.answer.append(dns.rrset.from_text_list(
                        question.name, 30, "IN", "SRV", self.records))
                else:
                    reply.set_rcode(dns.rcode.NXDOMAIN)
                self.sock.sendto(reply.to_wire(), peer)

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()


async def test_srv_records_give_members_with_their_ports(anyio_backend: str) -> None:
    """The default resolver's SRV path (dnspython) against a real DNS server on loopback:
    each target's addresses with the record's port; NXDOMAIN is a ResolveError."""
    server = DnsServer(["0 5 7002 localhost.", "0 10 7001 localhost."])
    try:
        resolver = DnsResolver(nameserver=("127.0.0.1", server.port))
        with anyio.fail_after(10):
            found = await resolver.resolve(ResolveBackends(1, "srv", SERVICE, None))
            assert found == [("127.0.0.1", 7001), ("127.0.0.1", 7002)]  # heavier first
            with pytest.raises(ResolveError):
                await resolver.resolve(ResolveBackends(2, "srv", "_x._tcp.nowhere.test", None))
    finally:
        server.stop()


class NameResolver:
    """Answers A queries of one name with one address (a stand-in for DNS)."""

    def __init__(self, name: str, address: tuple[str, int]) -> None:
        self.name, self.address = name, address

    async def resolve(self, query: ResolveBackends) -> Sequence[tuple[str, int]]:
        if query.name != self.name:
            raise ResolveError(f"{query.name}: no such name")
        return [self.address]


async def test_a_wss_member_is_dialed_by_address_and_verified_by_name(
        anyio_backend: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The backend's certificate names the service only (no IP address): the member
    verifies because TLS uses the entry's name, and the backend sees it as Host."""
    import ssl

    import trustme
    from peers import Backend, Client, client_path, running_backends, running_proxy

    from wspipe_anyio import backend_context

    ca = trustme.CA()
    backend_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("chat.backends.test").configure_cert(backend_tls)
    ca_pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_pem))
    async with running_backends(Backend(ssl_context=backend_tls), timeout=15) as (backend,):
        resolver = NameResolver("chat.backends.test", ("127.0.0.1", backend.port))
        async with running_proxy(
                [f"dns+wss://chat.backends.test:{backend.port}/ws"],
                server_kwargs={"resolver": resolver,
                               "backend_ssl_context": backend_context(str(ca_pem))}) as server:
            client = await Client.connect(f"ws://127.0.0.1:{server.port}{client_path()}")
            await client.send("over tls")
            assert await client.recv() == "over tls"
            assert [b.url for b in server.backends()] == [f"wss://127.0.0.1:{backend.port}/ws"]
            assert backend.requests[0].headers["Host"] == f"chat.backends.test:{backend.port}"
            await client.close()

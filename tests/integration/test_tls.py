"""TLS on both sides: a wss:// client listener and a wss:// backend, with trustme certificates."""

# ruff: noqa: SIM117  (nested blocks show that the backends outlive the proxy)

from __future__ import annotations

import ssl

import anyio
import pytest
import trustme
from peers import Backend, Client, client_path, raw_request, running_backends, running_proxy

from wspipe_anyio import backend_context, server_context

pytestmark = pytest.mark.anyio


async def test_tls_listener_and_wss_backend(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert_pem, ca_pem = tmp_path / "proxy.pem", tmp_path / "ca.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_pem))
    ca.cert_pem.write_to_path(str(ca_pem))
    backend_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(backend_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)

    async with running_backends(Backend(ssl_context=backend_tls), timeout=10) as (backend,):
        assert backend.url.startswith("wss://")
        server_kwargs = {"ssl_context": server_context(str(cert_pem)),
                         "backend_ssl_context": backend_context(str(ca_pem))}
        async with running_proxy([backend.url], server_kwargs=server_kwargs) as server:
            client = await Client.connect(f"wss://127.0.0.1:{server.port}{client_path()}",
                                          ssl=client_tls)
            await client.send("secret")
            assert await client.recv() == "secret"
            assert backend.messages() == ["secret"]
            assert backend.requests[0].headers["X-Forwarded-Proto"] == "https"
            await client.close()


async def test_wss_backend_with_untrusted_certificate_is_a_backend_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert = trustme.CA().issue_cert("127.0.0.1")
    backend_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    cert.configure_cert(backend_tls)
    async with running_backends(Backend(ssl_context=backend_tls), timeout=10) as (backend,):
        async with running_proxy([backend.url]) as server:  # system CAs only: verification fails
            client = await Client.connect(f"ws://127.0.0.1:{server.port}{client_path()}")
            with anyio.fail_after(5):
                while not server.backends()[0].errors:
                    await anyio.sleep(0.02)
            assert backend.messages() == []
            await client.close()


async def test_tls_handshake_that_never_finishes_is_closed_after_handshake_timeout(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert = trustme.CA().issue_cert("127.0.0.1")
    cert_pem = tmp_path / "proxy.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_pem))
    server_kwargs = {"ssl_context": server_context(str(cert_pem))}
    with anyio.fail_after(10):
        async with running_proxy([], server_kwargs=server_kwargs,
                                 handshake_timeout=0.5) as server:
            started = anyio.current_time()
            answer = await raw_request(server.port, b"")  # TCP only, never a ClientHello
            assert answer == b""
            assert 0.4 <= anyio.current_time() - started < 3.0

"""The admin API cannot be hijacked by a web page or stalled by idle sockets.

Each test drives a real :class:`~wspipe_anyio.ProxyServer` and its
:class:`~wspipe_anyio.admin.AdminServer` over loopback HTTP, on asyncio and trio, the
way an attacker would reach them: a web page the operator visits (a cross-site
``text/plain`` POST, DNS rebinding with a foreign ``Host``), a client that floods the
admin port with idle sockets, oversized heads, hostile JSON, and backend URLs that
carry secrets.
"""

from __future__ import annotations

import contextlib
import json
import logging
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from anyio.abc import SocketStream
from prometheus_client.parser import text_string_to_metric_families
from test_admin_cli import run
from test_rolling import EchoBackend, Recorder, stopping
from websockets.sync.client import ClientConnection, connect

from wspipe_anyio import ProxyServer
from wspipe_anyio.admin import AdminServer, token_directories
from wspipe_core import ProxyConfig

pytestmark = pytest.mark.anyio

EVIL = "http://evil.example"
TOKEN = "configured-admin-token"
SECRET = "s3cr3t-in-the-url"
#: Where nothing listens: the proxy never dials a backend without a client.
IDLE_BACKEND = "ws://127.0.0.1:9/"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@contextlib.asynccontextmanager
async def proxy_and_admin(tmp_path: Path, backends: list[str], *, token: str | None = None,
                          backend_allow: tuple[str, ...] = (), **admin_kwargs: Any
                          ) -> AsyncIterator[tuple[ProxyServer, AdminServer, httpx.AsyncClient]]:
    """A proxy and its admin API; without ``token`` the admin generates one into
    ``tmp_path``. The HTTP client sends no token by itself."""
    config = ProxyConfig(backends=tuple(backends), ping_interval=0, backoff_base=0.05,
                         migrate_rate=100, backend_allow=backend_allow)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0,
                         close_linger=0.5)
    tmp_path.chmod(0o700)
    admin = AdminServer(server, token=token, token_file_dir=tmp_path if token is None else None,
                        **admin_kwargs)
    async with server, admin, httpx.AsyncClient(base_url=admin.url, timeout=5.0) as http:
        yield server, admin, http
    assert server.internal_errors == 0


def refusals(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if r.name == "wspipe.admin" and r.levelno == logging.WARNING]


async def connect_client(server: ProxyServer) -> ClientConnection:
    url = f"ws://127.0.0.1:{server.port}/{uuid.uuid4()}"
    return await anyio.to_thread.run_sync(lambda: connect(
        url, open_timeout=5, close_timeout=1, ping_interval=None, proxy=None, legacy=True))


async def echo(ws: ClientConnection, message: str) -> str:
    await anyio.to_thread.run_sync(ws.send, message)
    answer = await anyio.to_thread.run_sync(lambda: ws.recv(timeout=5))
    assert isinstance(answer, str)
    return answer


async def read_all(stream: SocketStream, limit: float = 5.0) -> bytes:
    chunks = []
    with anyio.move_on_after(limit), \
            contextlib.suppress(anyio.EndOfStream, anyio.BrokenResourceError):
        while True:
            chunks.append(await stream.receive())
    return b"".join(chunks)


async def raw(port: int, data: bytes | list[bytes]) -> bytes:
    """Send ``data`` (pieces one by one) on a new connection; everything answered."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        for piece in [data] if isinstance(data, bytes) else data:
            await stream.send(piece)
        return await read_all(stream)


# A web page the operator visits.


async def test_a_cross_site_text_plain_post_is_refused_when_no_token_is_configured(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wspipe")
    attacker = '{"url": "ws://attacker.example:9000/"}'
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND]) as (server, admin, http):
            # What any page can send with fetch(..., {mode: "no-cors"}): no preflight.
            r = await http.post("/backends", content=attacker,
                                headers={"Content-Type": "text/plain", "Origin": EVIL})
            assert r.status_code == 403
            assert "cross-origin" in r.json()["detail"]
            # Even with no Origin and the right type, the generated token is required.
            for headers in ({"Content-Type": "text/plain"},
                            {"Content-Type": "application/json"}):
                r = await http.post("/backends", content=attacker, headers=headers)
                assert r.status_code == 401, headers
            assert [b.url for b in server.backends()] == [IDLE_BACKEND]
            token = admin.token
    lines = refusals(caplog)
    assert any(line.startswith("admin POST /backends from 127.0.0.1 -> 403: cross-origin "
                               "request from 'http://evil.example' refused") for line in lines)
    assert sum("POST /backends from 127.0.0.1 -> 401: missing token" in line
               for line in lines) == 2
    assert token not in caplog.text


async def test_a_cross_site_post_is_refused_with_a_token_and_a_correct_one_works(
        tmp_path: Path) -> None:
    body = json.dumps({"url": "ws://attacker.example:9000/"})
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], token=TOKEN) as (
                server, admin, http):
            own = f"http://127.0.0.1:{admin.port}"
            for content_type in ("text/plain", "application/json"):
                r = await http.post("/backends", content=body, headers={
                    **bearer(TOKEN), "Content-Type": content_type, "Origin": EVIL})
                assert r.status_code == 403, content_type
            for content_type in ("text/plain", "application/x-www-form-urlencoded",
                                 "multipart/form-data; boundary=x", "application/jsonx"):
                r = await http.post("/backends", content=body, headers={
                    **bearer(TOKEN), "Content-Type": content_type, "Origin": own})
                assert r.status_code == 415, content_type
                assert "application/json" in r.json()["detail"]
            r = await http.post("/backends", content=body, headers=bearer(TOKEN))
            assert r.status_code == 415  # no Content-Type at all
            assert [b.url for b in server.backends()] == [IDLE_BACKEND]
            # Own Host, own (or no) Origin, the token and JSON: accepted.
            r = await http.post("/backends", content=body, headers={
                **bearer(TOKEN), "Content-Type": "application/json; charset=utf-8",
                "Origin": own})
            assert r.status_code == 201
            r = await http.post("/backends", json={"url": "ws://127.0.0.1:10/"},
                                headers=bearer(TOKEN))
            assert r.status_code == 201
            assert len(server.backends()) == 3


async def test_a_preflight_from_a_foreign_origin_gets_no_cors_approval(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], token=TOKEN) as (_, _admin, http):
            r = await http.options("/backends", headers={
                "Origin": EVIL, "Access-Control-Request-Method": "DELETE"})
            assert r.status_code == 403
            assert not [h for h in r.headers if h.lower().startswith("access-control-")]


async def test_a_foreign_host_can_neither_read_the_pipes_nor_migrate_them(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # DNS rebinding: the page's origin is evil.example, which now resolves to 127.0.0.1,
    # so the browser sends Host: evil.example:PORT. Even with the token, it is refused.
    caplog.set_level(logging.DEBUG, logger="wspipe")
    recorder = Recorder()
    with anyio.fail_after(30), stopping([EchoBackend(recorder).start(),
                                         EchoBackend(recorder).start()]) as (b1, attacker):
        async with proxy_and_admin(tmp_path, [b1.url], token=TOKEN) as (server, admin, http):
            ws = await connect_client(server)
            assert await echo(ws, "1:0") == "1:0"
            foreign = {**bearer(TOKEN), "Host": f"evil.example:{admin.port}"}
            r = await http.get("/pipes", headers=foreign)
            assert r.status_code == 421
            assert "not a name of this admin listener" in r.json()["detail"]
            assert server.pipes()[0].client_id not in r.text
            r = await http.post("/backends", json={"url": attacker.url}, headers=foreign)
            assert r.status_code == 421
            r = await http.delete("/backends/b1?migrate=true", headers=foreign)
            assert r.status_code == 421
            for host in (f"localhost.evil.example:{admin.port}",
                         f"127.0.0.1.nip.io:{admin.port}", "evil.example", "[::2]",
                         "127.0.0.1@evil.example", "evil.example:99999", ""):
                r = await http.get("/backends", headers={**bearer(TOKEN), "Host": host})
                assert r.status_code == 421, host
            # Nothing moved: the session is still on b1, the attacker got nothing.
            await anyio.sleep(0.2)
            assert [(p.backend_id, p.state.value) for p in server.pipes()] == [("b1", "linked")]
            assert [(b.id, b.state.value) for b in server.backends()] == [("b1", "up")]
            assert await echo(ws, "1:1") == "1:1"
            assert len(recorder.links) == 1  # one link, to b1; none to the attacker
            # The listener's own names work (any spelling, with or without the port).
            for host in (f"127.0.0.1:{admin.port}", f"localhost:{admin.port}",
                         f"LOCALHOST.:{admin.port}", f"[::1]:{admin.port}", "127.0.0.1",
                         "localhost:19090"):
                r = await http.get("/pipes", headers={**bearer(TOKEN), "Host": host})
                assert r.status_code == 200, host
            await anyio.to_thread.run_sync(ws.close)
            port = admin.port
    lines = refusals(caplog)
    assert any(line.startswith("admin DELETE /backends/b1 from 127.0.0.1 -> 421: Host "
                               f"'evil.example:{port}' is not a name") for line in lines)
    assert TOKEN not in caplog.text


async def test_a_token_holder_cannot_register_a_backend_off_the_allow_list(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wspipe")
    recorder = Recorder()
    with anyio.fail_after(30), stopping([EchoBackend(recorder).start()]) as (b1,):
        async with proxy_and_admin(tmp_path, [b1.url], token=TOKEN,
                                   backend_allow=("127.0.0.0/8", "*.internal")
                                   ) as (server, _, http):
            ws = await connect_client(server)
            assert await echo(ws, "1:0") == "1:0"
            for url in (f"ws://evil.example:{b1.port}/?token={SECRET}",
                        f"ws://[::1]:{b1.port}/", "ws://internal/",
                        f"ws://localhost:{b1.port}/"):  # a name, not the network's address
                r = await http.post("/backends", json={"url": url}, headers=bearer(TOKEN))
                assert r.status_code == 403, url
                assert "is not on backend_allow" in r.json()["detail"]
                assert SECRET not in r.text
            assert [b.id for b in server.backends()] == ["b1"]
            r = await http.post("/backends", json={"url": "ws://api.internal:9/"},
                                headers=bearer(TOKEN))
            assert r.status_code == 201
            assert await echo(ws, "1:1") == "1:1"  # the session never noticed
            assert len(recorder.links) == 1
            await anyio.to_thread.run_sync(ws.close)
    refused = [line for line in refusals(caplog) if line.startswith("admin: backend refused")]
    assert len(refused) == 4 and "host 'evil.example' is not on backend_allow" in refused[0]
    assert SECRET not in caplog.text


async def test_a_request_without_host_is_refused_but_a_probe_is_not(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], token=TOKEN) as (_, admin, _h):
            auth = f"Authorization: Bearer {TOKEN}\r\n".encode()
            answer = await raw(admin.port, b"GET /backends HTTP/1.0\r\n" + auth + b"\r\n")
            assert answer.startswith(b"HTTP/1.1 421 ")
            assert b"no Host header" in answer
            answer = await raw(admin.port, b"GET /healthz HTTP/1.0\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ")


async def test_allowed_hosts_and_origins_extend_the_own_names(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(
                tmp_path, [IDLE_BACKEND], token=TOKEN,
                allowed_hosts=("admin.internal", "ops.example:8443"),
                allowed_origins=("https://ops.example:8443",)) as (_, admin, http):
            for host, status in (("admin.internal", 200), (f"admin.internal:{admin.port}", 200),
                                 ("ops.example:8443", 200), ("ops.example", 421),
                                 ("ops.example:9090", 421), ("other.internal", 421)):
                r = await http.get("/backends", headers={**bearer(TOKEN), "Host": host})
                assert r.status_code == status, host
            own = f"http://127.0.0.1:{admin.port}"
            for origin, status in (("https://ops.example:8443", 201), (own, 201),
                                   (f"https://127.0.0.1:{admin.port}", 201),
                                   ("https://ops.example", 403), ("http://ops.example:8443", 403),
                                   ("http://127.0.0.1:8000", 403),  # another local web app
                                   ("http://localhost:" + str(admin.port), 403), ("null", 403),
                                   ("file://", 403)):
                url = f"ws://127.0.0.1:{1000 + len(origin)}/{status}/{uuid.uuid4()}"
                r = await http.post("/backends", json={"url": url},
                                    headers={**bearer(TOKEN), "Origin": origin})
                assert r.status_code == status, origin


async def test_probes_need_no_token_host_origin_or_content_type_and_never_wait(
        tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND]) as (_, admin, http):
            hostile = {"Host": "evil.example", "Origin": EVIL, "Content-Type": "text/plain"}
            for path in ("/healthz", "/readyz"):
                r = await http.get(path, headers=hostile)
                assert r.status_code == 200, path
            # A probe announcing a body it never sends is answered at once, not after a
            # deadline: its body is never read.
            async with await anyio.connect_tcp("127.0.0.1", admin.port) as stream:
                started = anyio.current_time()
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
                                  b"Content-Length: 1000\r\n\r\n")
                with anyio.fail_after(1):
                    head = await stream.receive()
                assert head.startswith(b"HTTP/1.1 200 ")
                assert anyio.current_time() - started < 0.5


# The generated token.


async def test_the_generated_token_is_in_a_private_file_the_cli_finds(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wspipe")
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    monkeypatch.delenv("WSPIPE_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("WSPIPE_ADMIN", raising=False)
    config = ProxyConfig(backends=(IDLE_BACKEND,), ping_interval=0)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0)
    with anyio.fail_after(20):
        async with server, AdminServer(server) as admin:
            path = admin.token_file
            assert path == runtime / "wspipe" / f"admin-{admin.port}.token"
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
            assert path.read_text() == admin.token + "\n" and len(admin.token) >= 40
            # The CLI, given no token, reads it (only for a loopback address).
            for address in (f"127.0.0.1:{admin.port}", f"http://localhost:{admin.port}"):
                code, out, err = await run(["backends", "list", "--json", "--admin", address])
                assert (code, err) == (0, ""), address
                assert [b["url"] for b in json.loads(out)] == [IDLE_BACKEND]
            code, out, _ = await run(["backends", "add", "ws://127.0.0.1:11/", "--admin",
                                      f"127.0.0.1:{admin.port}"])
            assert (code, out) == (0, "backend b2 registered: ws://127.0.0.1:11/ (weight 1)\n")
            code, _, err = await run(["backends", "list", "--admin", f"127.0.0.1:{admin.port}",
                                      "--admin-token", "wrong"])
            assert (code, err) == (1, "wspipe: error: GET /backends: HTTP 403: invalid token\n")
            token, port = admin.token, admin.port
        assert not path.exists()  # removed with the listener
    code, _, err = await run(["backends", "list", "--admin", f"127.0.0.1:{port}",
                              "--timeout", "2"])
    assert code == 1 and "cannot reach the admin API" in err
    assert str(path) in caplog.text  # the log says where the token is...
    assert token not in caplog.text  # ...and never what it is


async def test_the_token_file_is_never_a_symlink_nor_in_a_shared_directory(
        tmp_path: Path) -> None:
    tmp_path.chmod(0o700)
    target = tmp_path / "elsewhere"
    target.write_text("keep me\n")
    port = 0
    config = ProxyConfig(backends=(IDLE_BACKEND,), ping_interval=0)
    server = ProxyServer(config, listen=[("127.0.0.1", 0)], shutdown_grace=2.0)
    with anyio.fail_after(20):
        async with server:
            async with AdminServer(server, token_file_dir=tmp_path) as admin:
                port = admin.port
            (tmp_path / f"admin-{port}.token").symlink_to(target)
            with pytest.raises(PermissionError, match="symlink"):
                async with AdminServer(server, port=port, token_file_dir=tmp_path):
                    pass
    assert target.read_text() == "keep me\n"
    # A shared /tmp is never used, even when $XDG_RUNTIME_DIR says so.
    home = tmp_path / "home"
    assert token_directories({"XDG_RUNTIME_DIR": "/tmp", "HOME": str(home)}) == [
        home / ".local" / "state" / "wspipe"]


# Idle sockets.


async def test_healthz_answers_within_100ms_while_64_idle_sockets_sit_on_the_admin_port(
        tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND]) as (_, admin, _h), \
                contextlib.AsyncExitStack() as idle:
            sockets = [await idle.enter_async_context(
                await anyio.connect_tcp("127.0.0.1", admin.port)) for _ in range(64)]
            await sockets[-1].send(b"GET /healthz HTTP/1.1\r\n")  # and a slow one
            await anyio.sleep(0.2)  # all accepted and waiting for a request
            for path in ("/healthz", "/readyz", "/healthz"):
                async with httpx.AsyncClient(base_url=admin.url, timeout=5.0) as probe:
                    started = anyio.current_time()
                    r = await probe.get(path)
                    elapsed = anyio.current_time() - started
                assert r.status_code == 200, path
                assert elapsed < 0.1, (path, elapsed)
            # The API still answers too, and the oldest idle sockets made room.
            async with httpx.AsyncClient(base_url=admin.url, timeout=5.0) as http:
                r = await http.get("/backends", headers=bearer(admin.token))
                assert r.status_code == 200
            assert await read_all(sockets[0], 1.0) == b""  # closed, the oldest idle
            assert admin.open_connections <= 64


async def test_a_flood_of_idle_sockets_never_blocks_accept(tmp_path: Path) -> None:
    with anyio.fail_after(30):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], max_connections=8) as (
                _, admin, _h), contextlib.AsyncExitStack() as idle:
            for _ in range(100):
                await idle.enter_async_context(await anyio.connect_tcp("127.0.0.1", admin.port))
            async with httpx.AsyncClient(base_url=admin.url, timeout=5.0) as probe:
                started = anyio.current_time()
                assert (await probe.get("/healthz")).status_code == 200
                assert anyio.current_time() - started < 0.1
            assert admin.open_connections <= 8


async def test_idle_and_slow_connections_are_closed_on_their_deadlines(tmp_path: Path) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], head_timeout=0.3,
                                   idle_timeout=0.4, request_timeout=0.6) as (_, admin, _h):
            port, auth = admin.port, f"Authorization: Bearer {admin.token}\r\n".encode()
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                started = anyio.current_time()
                assert await read_all(stream) == b""  # sent nothing: closed, no answer
                assert 0.25 < anyio.current_time() - started < 1.0
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                started = anyio.current_time()
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
                assert (await read_all(stream)).startswith(b"HTTP/1.1 408 ")
                assert anyio.current_time() - started < 1.0
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                started = anyio.current_time()
                answer = await read_all(stream)  # kept alive, then idle: closed
                assert answer.startswith(b"HTTP/1.1 200 ") and answer.count(b"HTTP/1.1") == 1
                assert 0.35 < anyio.current_time() - started < 1.2
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                started = anyio.current_time()
                await stream.send(b"POST /backends HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth
                                  + b"Content-Type: application/json\r\n"
                                  b"Content-Length: 100\r\n\r\n{")
                for _ in range(3):  # a body trickling slower than the request deadline
                    await anyio.sleep(0.25)
                    with contextlib.suppress(anyio.BrokenResourceError):
                        await stream.send(b" ")
                assert (await read_all(stream)).startswith(b"HTTP/1.1 408 ")
                assert anyio.current_time() - started < 1.5


# Bad input.


async def test_backend_secrets_are_masked_in_every_answer_and_metric_label(
        tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:9/feed?token={SECRET}&room=7"
    masked = "ws://127.0.0.1:9/feed?token=***&room=***"
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [], token=TOKEN) as (server, admin, http):
            answers = []
            r = await http.post("/backends", json={"url": url}, headers=bearer(TOKEN))
            assert (r.status_code, r.json()["url"]) == (201, masked)
            answers.append(r.text)
            assert server.backends()[0].url == url  # the proxy itself dials the real URL
            r = await http.post("/backends", json={"url": url}, headers=bearer(TOKEN))
            assert r.status_code == 409
            answers.append(r.text)
            r = await http.post("/backends", json={"url": f"http://h/?token={SECRET}"},
                                headers=bearer(TOKEN))
            assert r.status_code == 400 and "token=***" in r.json()["detail"]
            answers.append(r.text)
            for path in ("/backends", "/backends/b1"):
                r = await http.get(path, headers=bearer(TOKEN))
                assert r.status_code == 200
                answers.append(r.text)
            metrics = (await http.get("/metrics", headers=bearer(TOKEN))).text
            labels = {s.labels.get("url") for family in text_string_to_metric_families(metrics)
                      for s in family.samples} - {None}
            assert labels == {"ws://127.0.0.1:9/feed"}
            code, out, _ = await run(["backends", "list", "--admin",
                                      f"127.0.0.1:{admin.port}", "--admin-token", TOKEN])
            assert code == 0 and masked in out
            answers.append(out)
            r = await http.delete("/backends/b1", headers=bearer(TOKEN))
            assert (r.status_code, r.json()["url"]) == (202, masked)
            answers.append(r.text)
    for answer in [*answers, metrics]:
        assert SECRET not in answer


async def test_json_nested_too_deep_is_400_not_500(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [], token=TOKEN) as (server, _, http):
            headers = {**bearer(TOKEN), "Content-Type": "application/json"}
            for body in (b"[" * 30000, b'{"url": ' + b"[" * 30000, b'{"a":' * 10000,
                         b"[" * 33 + b"]" * 33):
                r = await http.post("/backends", content=body, headers=headers)
                assert r.status_code == 400, body[:20]
                assert "nested" in r.json()["detail"]
            r = await http.post("/backends", content=b'{"url": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}',
                                headers=headers)  # brackets inside a string are not nesting
            assert r.status_code == 400 and "nested" not in r.json()["detail"]
            assert server.backends() == []
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text


async def test_non_finite_weights_are_400_and_answers_are_strict_json(tmp_path: Path) -> None:
    def strict(text: str) -> Any:
        def refuse(name: str) -> Any:
            raise ValueError(name)
        return json.loads(text, parse_constant=refuse)

    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], token=TOKEN) as (server, _, http):
            headers = {**bearer(TOKEN), "Content-Type": "application/json"}
            for weight in ("NaN", "Infinity", "-Infinity", "1e999", "1" + "0" * 400, "-1",
                           "0"):
                body = f'{{"url": "ws://127.0.0.1:12/", "weight": {weight}}}'
                r = await http.post("/backends", content=body, headers=headers)
                assert r.status_code == 400, weight
                detail = strict(r.text)["detail"]
                # NaN and Infinity are not JSON at all (RFC 8259); the others are numbers
                # that are no weight.
                assert ("not valid JSON" if weight.endswith(("NaN", "Infinity"))
                        else "finite number > 0") in detail, weight
            r = await http.get("/backends", headers=bearer(TOKEN))
            assert [b["url"] for b in strict(r.text)] == [IDLE_BACKEND]
            assert len(server.backends()) == 1


@pytest.mark.parametrize("with_token", [False, True])
async def test_a_head_over_16_kib_is_431_before_any_check(tmp_path: Path,
                                                          with_token: bool) -> None:
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [IDLE_BACKEND], token=TOKEN) as (_, admin, _h):
            auth = f"Authorization: Bearer {TOKEN}\r\n" if with_token else ""

            def head(path: str, size: int, host: str = "127.0.0.1") -> bytes:
                start = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}X-Pad: "
                return (start + "a" * (size - len(start) - 4) + "\r\n\r\n").encode()

            for path, host in (("/backends", "127.0.0.1"), ("/healthz", "127.0.0.1"),
                               ("/backends", "evil.example")):
                big = head(path, 20 * 1024, host)
                for pieces in ([big], [big[i:i + 1024] for i in range(0, len(big), 1024)]):
                    answer = await raw(admin.port, pieces)
                    assert answer.startswith(b"HTTP/1.1 431 "), (path, host, len(pieces))
                    assert b"16 KiB" in answer
            # At the limit exactly, the head is served.
            answer = await raw(admin.port, head("/healthz", 16 * 1024))
            assert answer.startswith(b"HTTP/1.1 200 ")


async def test_a_path_cannot_forge_log_lines(tmp_path: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="wspipe")
    with anyio.fail_after(20):
        async with proxy_and_admin(tmp_path, [], token=TOKEN) as (_, _admin, http):
            r = await http.get("/nope%0aadmin%20POST%20/backends%20-%3E%20201",
                               headers=bearer(TOKEN))
            assert r.status_code == 404
    (line,) = [m for m in refusals(caplog) if "-> 404" in m]
    assert "\n" not in line and "\\x0a" in line

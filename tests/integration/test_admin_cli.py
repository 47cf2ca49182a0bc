"""The admin commands (``backends list|add|drain``, ``pipes list``) against a live admin API."""

from __future__ import annotations

import argparse
import io
import json

import anyio
import pytest
from test_admin import AUTH, TOKEN, admin_client, make_harness

from wspipe_anyio.admin_cli import add_admin_subcommands, admin_base_url, main, run_admin_command

pytestmark = pytest.mark.anyio


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="wspipe")
    sub = parser.add_subparsers(dest="command", required=True)
    add_admin_subcommands(sub)
    return parser.parse_args(argv)


async def run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    args = parse(argv)
    code = await anyio.to_thread.run_sync(
        lambda: run_admin_command(args, stdout=out, stderr=err))
    return code, out.getvalue(), err.getvalue()


async def test_backends_list_add_drain_and_pipes_list() -> None:
    h, control = make_harness("ws://b1:80/")
    h.client("/0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11")
    with anyio.fail_after(20):
        async with admin_client(control) as (admin, http):
            common = ["--admin", f"127.0.0.1:{admin.port}", "--admin-token", TOKEN]
            code, out, err = await run(["backends", "list", *common])
            assert (code, err) == (0, "")
            lines = out.splitlines()
            assert lines[0].split() == ["ID", "URL", "STATE", "PIPES", "ERRORS", "WEIGHT"]
            assert lines[1].split() == ["b1", "ws://b1:80/", "up", "1", "0", "1.0"]

            code, out, _ = await run(["backends", "add", "ws://b2:80/", "--weight", "3",
                                      *common])
            assert (code, out) == (0, "backend b2 registered: ws://b2:80/ (weight 3)\n")
            code, _, err = await run(["backends", "add", "ws://b2:80/", *common])
            assert code == 1
            assert err == ("wspipe: error: POST /backends: HTTP 409: backend ws://b2:80/ is "
                           "already registered (as b2, ws://b2:80/)\n")
            code, _, err = await run(["backends", "add", "http://nope/", *common])
            assert code == 1 and "HTTP 400" in err

            code, out, _ = await run(["backends", "list", "--json", *common])
            assert [b["id"] for b in json.loads(out)] == ["b1", "b2"]

            code, out, _ = await run(["pipes", "list", *common])
            assert code == 0
            header, row = out.splitlines()
            assert header.split() == ["ID", "CLIENT_ID", "BACKEND", "STATE", "BUFFERED",
                                      "INTERRUPTIONS", "AGE"]
            assert row.split()[:6] == ["p1", "0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11", "b1",
                                       "linked", "0", "0"]
            code, out, _ = await run(["pipes", "list", "--json", *common])
            assert json.loads(out)[0]["client_id"] == "0b6a4f4e-6f3b-4b3a-9a58-0a0c8f4a1c11"

            code, out, _ = await run(["backends", "drain", "b1", "--migrate", *common])
            assert code == 0  # the first pipe moves at once: b1 is empty and leaves the pool
            assert out == "backend b1 removed from the pool: its 1 pipe(s) moved to other " \
                          "backends\n"
            with anyio.fail_after(5):
                while any(b.id == "b1" for b in control.backends()):
                    await anyio.sleep(0.01)
            assert control.pipes()[0].backend_id == "b2"
            code, out, _ = await run(["backends", "drain", "b1", *common])
            assert code == 1
            code, out, _ = await run(["backends", "drain", "b2", *common])
            assert (code, out) == (0, "backend b2 draining: no new pipes; it leaves the pool "
                                      "when its 1 pipe(s) end\n")
            assert (await http.get("/backends", headers=AUTH)).json()[0]["state"] == "draining"


async def test_drain_with_migrate_names_the_core_rate() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/", migrate_rate=10)
    for _ in range(4):
        h.client()  # two on each backend
    with anyio.fail_after(20):
        async with admin_client(control) as (admin, _):
            common = ["--admin", f"127.0.0.1:{admin.port}", "--admin-token", TOKEN]
            code, out, _ = await run(["backends", "drain", "b1", "--migrate", *common])
            assert (code, out) == (0, "backend b1 draining: moving its 2 pipe(s) to other "
                                      "backends at 10/s\n")
            code, out, _ = await run(["backends", "list", "--json", *common])
            assert json.loads(out)[0]["migration"] == {"total": 2, "moved": 1, "remaining": 1,
                                                       "waiting": False}


async def test_token_and_address_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(20):
        async with admin_client(control) as (admin, _):
            monkeypatch.setenv("WSPIPE_ADMIN", admin.url)
            code, _, err = await run(["backends", "list"])
            assert code == 1
            assert "HTTP 401: missing token" in err
            monkeypatch.setenv("WSPIPE_ADMIN_TOKEN", "wrong")
            code, _, err = await run(["backends", "list"])
            assert (code, err) == (1, "wspipe: error: GET /backends: HTTP 403: invalid token\n")
            monkeypatch.setenv("WSPIPE_ADMIN_TOKEN", TOKEN)
            code, out, _ = await run(["backends", "list", "--json"])
            assert code == 0 and json.loads(out)[0]["id"] == "b1"
            port = admin.port
    code, _, err = await run(["backends", "list", "--admin", f"127.0.0.1:{port}",
                              "--timeout", "2"])
    assert code == 1 and "cannot reach the admin API" in err


def test_admin_address_forms_and_usage_errors() -> None:
    assert admin_base_url("127.0.0.1:9090") == "http://127.0.0.1:9090"
    assert admin_base_url("http://[::1]:9090/") == "http://[::1]:9090"
    assert admin_base_url("https://admin.example:443/wspipe") == "https://admin.example:443/wspipe"
    assert main(["backends"]) == 2
    assert main(["backends", "drain"]) == 2

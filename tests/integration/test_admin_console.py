"""The console's page and its JSON (``GET /summary``) over loopback, without a browser.

The page holds no data, so it is served without a token, but under the same
``Host``/``Origin`` rules as the API and with a Content-Security-Policy that allows
nothing but this origin; ``/summary`` needs the token. The browser tests are in
``test_admin_browser.py``. Runs on asyncio and trio.
"""

from __future__ import annotations

import logging

import anyio
import pytest
from test_admin import AUTH, TOKEN, admin_client, make_harness

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("path", ["/", "/status"])
async def test_the_page_is_served_without_a_token_with_a_strict_policy(path: str) -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.get(path)
            assert r.status_code == 200
            assert r.headers["content-type"] == "text/html; charset=utf-8"
            assert '<script src="/console.js" defer>' in r.text
            assert "<script>" not in r.text  # no inline script: the policy forbids it
            csp = r.headers["content-security-policy"]
            for rule in ("default-src 'none'", "script-src 'self'", "connect-src 'self'",
                         "frame-ancestors 'none'", "form-action 'none'"):
                assert rule in csp
            assert r.headers["x-frame-options"] == "DENY"
            assert r.headers["referrer-policy"] == "no-referrer"
            assert r.headers["cache-control"] == "no-store"
            assert TOKEN not in r.text
            for asset, kind in (("/console.js", "text/javascript"), ("/console.css", "text/css")):
                r = await http.get(asset)
                assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
                assert "content-security-policy" in r.headers


async def test_the_page_keeps_the_host_and_origin_rules(caplog: pytest.LogCaptureFixture) -> None:
    _, control = make_harness("ws://b1:80/")
    caplog.set_level(logging.WARNING, logger="wspipe.admin")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            r = await http.get("/status", headers={"Host": "rebound.example"})
            assert r.status_code == 421  # DNS rebinding: not even the page
            r = await http.get("/console.js", headers={"Origin": "http://127.0.0.1:1"})
            assert r.status_code == 403
            r = await http.post("/status", headers=AUTH)
            assert r.status_code == 405
    assert "GET /status from 127.0.0.1 -> 421" in caplog.text
    assert "cross-origin request from 'http://127.0.0.1:1' refused" in caplog.text


async def test_summary_needs_the_token() -> None:
    _, control = make_harness("ws://b1:80/")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            assert (await http.get("/summary")).status_code == 401
            r = await http.get("/summary", headers={"Authorization": "Bearer nope"})
            assert r.status_code == 403


async def test_summary_shows_the_pool_with_health_totals_and_a_page_of_pipes() -> None:
    h, control = make_harness("ws://b1:80/?key=secret", "ws://b2:80/", migrate_rate=1)
    clients = [h.client() for _ in range(250)]
    clients[0].send("hello")
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            control.remove_backend("b1", migrate=True)
            r = await http.get("/summary", headers=AUTH)
            assert r.status_code == 200
            data = r.json()
            b1, b2 = data["backends"]
            assert (b1["id"], b1["url"], b1["state"]) == ("b1", "ws://b1:80/?key=***", "draining")
            assert b1["migration"] == {"total": 125, "moved": 1, "remaining": 124,
                                       "waiting": False}
            assert b2["health"]["checks"] == 0 and b2["health"]["ejected_for"] is None
            assert data["totals"]["pipes"] == 250 and data["totals"]["messages_in"] == 1
            assert data["totals"]["pipes_migrated"] == 1
            assert data["limits"]["memory_budget"] == control.budget.limit
            assert sum(data["pipe_states"].values()) == 250
            assert set(data["pipe_states"]) == {"connecting", "linked", "interrupted", "closing"}
            assert data["ready"] is True
            page = data["pipes"]
            assert (page["total"], page["offset"], page["limit"], len(page["items"])) == (
                250, 0, 100, 100)
            assert page["items"][0]["id"] == "p1"
            r = await http.get("/summary?offset=200&limit=100", headers=AUTH)
            assert [p["id"] for p in r.json()["pipes"]["items"]][:1] == ["p201"]
            assert len(r.json()["pipes"]["items"]) == 50
            r = await http.get("/summary?backend=b2&limit=500", headers=AUTH)
            assert {p["backend_id"] for p in r.json()["pipes"]["items"]} == {"b2"}
            r = await http.get("/summary?state=linked&limit=1", headers=AUTH)
            assert r.json()["pipes"]["total"] == data["pipe_states"]["linked"]
            for bad in ("limit=0", "limit=501", "offset=-1", "state=open", "page=2",
                        "limit=1e3"):
                r = await http.get(f"/summary?{bad}", headers=AUTH)
                assert r.status_code == 400, bad


async def test_summary_shows_an_ejection_countdown() -> None:
    h, control = make_harness("ws://b1:80/", "ws://b2:80/", eject_after=1, eject_base=30,
                              eject_max=30)
    h.backends["ws://b1:80/"].mode = "refuse"
    h.client()  # its first link to b1 is refused: b1 is ejected for 30 s
    h.advance(10)
    with anyio.fail_after(10):
        async with admin_client(control) as (_, http):
            b1 = (await http.get("/summary", headers=AUTH)).json()["backends"][0]
            assert b1["state"] == "ejected"
            assert b1["health"]["ejected_for"] == pytest.approx(20.0)

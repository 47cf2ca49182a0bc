"""The console in a real headless Chromium, against a real proxy with real backends.

Checked as an operator sees it: the page loads, asks for the token once, shows the
backends and the pipe this test created, follows a drain made elsewhere without
reloading, and its buttons drain, migrate and re-add; the token never appears in a
URL or a log line. Then a hostile page on another origin, opened in the same
browser while the console is logged in, tries to drain a backend and register one,
and is refused. Runs on asyncio and trio.

``WSPIPE_UPDATE_SCREENSHOTS=1`` also writes the screenshot shown in
docs/operations.md to ``docs/images/console.png``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import pytest
from browser import WAIT_MS, in_browser, static_site
from peers import Backend, Client, client_path, free_port, running_backends, running_proxy, url
from playwright.sync_api import BrowserContext, Page

from wspipe_anyio.admin import AdminServer
from wspipe_core import BackendState

pytestmark = pytest.mark.anyio

TOKEN = "console-token-never-in-a-url"
DOCS_IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"


def login(page: Page, admin_url: str) -> None:
    page.goto(admin_url + "/status")
    page.wait_for_selector("#login:not([hidden])")
    page.fill("#token", TOKEN)
    page.click("#login-form button[type=submit]")
    page.wait_for_selector("#console:not([hidden])")


def cell(page: Page, row: str, column: int) -> str:
    return page.inner_text(f"{row} td:nth-child({column})")


def wait_text(page: Page, selector: str, text: str) -> None:
    page.wait_for_function(
        "([sel, text]) => { const n = document.querySelector(sel);"
        " return n !== null && n.textContent.includes(text); }", arg=[selector, text],
        timeout=WAIT_MS)


async def test_the_console_shows_the_pool_follows_a_drain_and_its_buttons_work(
        caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    caplog.set_level(logging.DEBUG, logger="wspipe")
    b1, b2 = Backend(), Backend()
    path = client_path()
    client_id = path[1:]
    with anyio.fail_after(90):
        async with running_backends(b1, b2), \
                running_proxy([b1.url, b2.url], migrate_rate=20) as server, \
                AdminServer(server, token=TOKEN) as admin:
            client = await Client.connect(url(server, path))
            await client.send("before")
            assert await client.recv() == "before"

            def operate(context: BrowserContext) -> dict[str, Any]:
                page = context.new_page()
                requests: list[tuple[str, str | None]] = []
                page.on("request", lambda r: requests.append((r.url, r.headers.get(
                    "authorization"))))
                dialogs: list[str] = []
                page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
                login(page, admin.url)
                # The backends and the pipe this test created.
                page.wait_for_selector('#backends tr[data-backend="b1"]')
                b1_row = '#backends tr[data-backend="b1"]'
                assert cell(page, b1_row, 2) == b1.url
                assert cell(page, b1_row, 3) == "up"
                assert cell(page, b1_row, 5) == "1"
                pipe_row = '#pipes tr[data-pipe="p1"]'
                page.wait_for_selector(pipe_row)
                assert cell(page, pipe_row, 2) == client_id
                assert cell(page, pipe_row, 3) == "b1"
                assert cell(page, pipe_row, 4) == "linked"
                # A drain made elsewhere shows up without a reload.
                page.evaluate("window.loadedOnce = true")
                anyio.from_thread.run_sync(server.remove_backend, "b2")
                page.wait_for_selector('#removed li[data-removed="b2"]')
                assert page.query_selector('#backends tr[data-backend="b2"]') is None
                assert page.evaluate("window.loadedOnce") is True
                # Re-add it with its button: it comes back with a new id.
                page.click('#removed button[data-id="b2"]')
                page.wait_for_selector('#backends tr[data-backend="b3"]')
                assert cell(page, '#backends tr[data-backend="b3"]', 2) == b2.url
                # Drain b1 with migrate: its pipe moves to b3, then b1 leaves the pool.
                page.click(f'{b1_row} button[data-action="migrate"]')
                wait_text(page, f"{pipe_row} td:nth-child(3)", "b3")
                page.wait_for_selector('#removed li[data-removed="b1"]')
                wait_text(page, "#t-migrated", "1")
                shot = page.screenshot(full_page=True)
                stored = page.evaluate("sessionStorage.getItem('wspipe-admin-token')")
                # Forget token: the next load asks again.
                page.click("#signout")
                page.reload()
                page.wait_for_selector("#login:not([hidden])")
                return {"requests": requests, "dialogs": dialogs, "shot": shot,
                        "stored": stored}

            seen = await in_browser(operate)
            assert seen["dialogs"] == ["Drain b1 and move its pipes to other backends now?"]
            assert seen["stored"] == TOKEN  # in this tab's sessionStorage, by design
            summary = [auth for u, auth in seen["requests"] if "/summary" in u]
            assert summary and all(auth == f"Bearer {TOKEN}" for auth in summary)
            assert not any(TOKEN in u for u, _ in seen["requests"])
            (tmp_path / "console.png").write_bytes(seen["shot"])
            assert seen["shot"][:8] == b"\x89PNG\r\n\x1a\n"
            # The client never noticed: its pipe is on b3 now.
            assert [p.backend_id for p in server.pipes()] == ["b3"]
            await client.send("after")
            assert await client.recv() == "after"
            assert b2.messages() == ["after"]
            await client.close()
    assert "admin DELETE /backends/b1 from 127.0.0.1 -> 202" in caplog.text
    assert TOKEN not in caplog.text


HOSTILE_PAGE = """<!doctype html><title>cute cats</title>
<iframe name="sink" hidden></iframe>
<form id="f" method="post" target="sink" enctype="text/plain" action="ADMIN/backends">
<input name='{"url": "ws://127.0.0.1:1/", "x": "' value='"}'></form>
<script>
window.results = {};
const admin = "ADMIN";
async function attempt(name, run) {
  try { const r = await run(); window.results[name] = "status " + r.status + " " + r.type; }
  catch (e) { window.results[name] = "error " + e.name; }
}
(async () => {
  await attempt("delete", () => fetch(admin + "/backends/b1?migrate=true", {method: "DELETE"}));
  await attempt("delete-no-cors", () => fetch(admin + "/backends/b1?migrate=true",
                                             {method: "DELETE", mode: "no-cors"}));
  await attempt("post-no-cors", () => fetch(admin + "/backends", {method: "POST",
      mode: "no-cors", headers: {"Content-Type": "text/plain"},
      body: JSON.stringify({url: "ws://127.0.0.1:1/"})}));
  await attempt("read-summary", () => fetch(admin + "/summary"));
  await attempt("read-with-credentials", () => fetch(admin + "/summary",
                                                    {credentials: "include"}));
  document.getElementById("f").submit();
  await new Promise((resolve) => setTimeout(resolve, 500));
  window.done = true;
})();
</script>"""


async def test_a_hostile_page_cannot_drive_the_console_while_it_is_logged_in(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wspipe.admin")
    b1 = Backend()
    with anyio.fail_after(90):
        async with running_backends(b1), running_proxy([b1.url]) as server, \
                AdminServer(server, token=TOKEN) as admin:
            client = await Client.connect(url(server, client_path()))
            await client.send("x")
            assert await client.recv() == "x"

            def attack(context: BrowserContext) -> dict[str, str]:
                console = context.new_page()
                login(console, admin.url)  # the operator is logged in, in another tab
                console.wait_for_selector('#backends tr[data-backend="b1"]')
                with static_site(HOSTILE_PAGE.replace("ADMIN", admin.url)) as port:
                    hostile = context.new_page()
                    # localhost:PORT is another site than 127.0.0.1:ADMIN_PORT.
                    hostile.goto(f"http://localhost:{port}/")
                    hostile.wait_for_function("window.done === true")
                    results: dict[str, str] = hostile.evaluate("window.results")
                # The console still works with its token.
                wait_text(console, '#backends tr[data-backend="b1"] td:nth-child(3)', "up")
                return results

            results = await in_browser(attack)
            assert results["delete"] == "error TypeError"  # the preflight got 403
            assert results["delete-no-cors"] == "error TypeError"  # no-cors cannot DELETE
            assert results["post-no-cors"] == "status 0 opaque"  # sent, refused, unreadable
            assert results["read-summary"] == "error TypeError"
            assert results["read-with-credentials"] == "error TypeError"
            assert [(b.id, b.state) for b in server.backends()] == [("b1", BackendState.UP)]
            assert server.migrations() == []
            assert [p.backend_id for p in server.pipes()] == ["b1"]
            await client.close()
    refusals = [r.getMessage() for r in caplog.records if "-> 403" in r.getMessage()]
    assert any(m.startswith("admin OPTIONS /backends/b1 ") for m in refusals)
    assert sum(m.startswith("admin POST /backends ") for m in refusals) == 2  # fetch + form
    assert all("cross-origin request from 'http://localhost:" in m for m in refusals)


async def test_the_console_is_readable_on_a_phone(tmp_path: Path) -> None:
    """A 390 px wide screen: nothing wider than the screen but the scrolling tables;
    an ejected backend shows its countdown, a migration its progress."""
    backends = [Backend(), Backend()]
    dead = f"ws://127.0.0.1:{free_port()}/"
    with anyio.fail_after(90):
        async with running_backends(*backends), \
                running_proxy([b.url for b in backends] + [dead], migrate_rate=0.1,
                              health_check_interval=0.5, eject_after=1, eject_base=60,
                              eject_max=60) as server, \
                AdminServer(server, token=TOKEN) as admin:
            with anyio.fail_after(10):
                while server.backends()[2].state is not BackendState.EJECTED:
                    await anyio.sleep(0.05)
            clients = [await Client.connect(url(server, client_path())) for _ in range(6)]
            for n, client in enumerate(clients):
                await client.send(f"hello {n}")
                await client.recv()
            server.remove_backend("b1", migrate=True)  # 0.1 pipes/s: still under way

            def look(context: BrowserContext) -> tuple[bytes, bytes, int, int]:
                page = context.new_page()
                login(page, admin.url)
                wait_text(page, '#backends tr[data-backend="b3"] td:nth-child(7)', "back in")
                wait_text(page, '#backends tr[data-backend="b1"] td:nth-child(8)', "moved 1/3")
                page.wait_for_selector('#pipes tr[data-pipe="p6"]')
                time.sleep(1.2)  # two polls: the rates have a window
                phone = page.screenshot(full_page=True)
                widths = page.evaluate(
                    "[document.documentElement.scrollWidth, window.innerWidth]")
                page.set_viewport_size({"width": 1280, "height": 900})
                time.sleep(0.3)
                desktop = page.screenshot(full_page=True)
                return phone, desktop, widths[0], widths[1]

            phone, desktop, scroll_width, width = await in_browser(
                look, viewport={"width": 390, "height": 844})
            assert width == 390 and scroll_width <= width
            for client in clients:
                await client.close()
    (tmp_path / "phone.png").write_bytes(phone)
    (tmp_path / "desktop.png").write_bytes(desktop)
    if os.environ.get("WSPIPE_UPDATE_SCREENSHOTS"):
        DOCS_IMAGES.mkdir(exist_ok=True)
        (DOCS_IMAGES / "console.png").write_bytes(desktop)
        (DOCS_IMAGES / "console-phone.png").write_bytes(phone)

"""A real headless Chromium (Debian's ``chromium``) driven by Playwright, for the console tests.

Playwright's sync API runs in a worker thread (``anyio.to_thread``) while the proxy
runs on the test's event loop (asyncio or trio); a test hands :func:`in_browser` a
function that does all its browser work in that thread, in a fresh profile. Code
in that function reaches the proxy through ``anyio.from_thread`` or over HTTP.
``.ci/run`` installs Chromium; Playwright never downloads a browser of its own.
"""

from __future__ import annotations

import contextlib
import http.server
import tempfile
import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

import anyio
from playwright.sync_api import BrowserContext, sync_playwright

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
#: The flags this machine needs (no sandbox for root, no network beyond loopback).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Longest wait for one thing to show on a page, in milliseconds.
WAIT_MS = 10_000


def _run(fn: Callable[[BrowserContext], T], viewport: dict[str, int]) -> T:
    with tempfile.TemporaryDirectory(prefix="wspipe-chromium-") as profile, \
            sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(WAIT_MS)
        try:
            return fn(context)
        finally:
            context.close()


async def in_browser(fn: Callable[[BrowserContext], T], *,
                     viewport: dict[str, int] | None = None) -> T:
    """Run ``fn(context)`` in a fresh Chromium profile, in a worker thread."""
    size = viewport or {"width": 1280, "height": 900}
    return await anyio.to_thread.run_sync(lambda: _run(fn, size))


@contextlib.contextmanager
def static_site(html: str) -> Iterator[int]:
    """Serve ``html`` at ``/`` on 127.0.0.1 (another origin: a hostile site); yield its port."""
    body = html.encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

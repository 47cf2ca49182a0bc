"""Active health checks over the wire: a real proxy probes real websockets backends.

No client connects: the pool and ``/readyz`` must follow the backends by the probes
alone. Runs on asyncio and trio.
"""

from __future__ import annotations

import time

import anyio
import httpx
import pytest
from peers import Backend, free_port, running_backends, running_proxy

from wspipe_anyio.admin import AdminServer
from wspipe_core import BackendState

pytestmark = pytest.mark.anyio

TOKEN = "health-token"
INTERVAL = 0.3
#: Slack for a loaded two-core machine on top of one interval.
SLACK = 1.0


async def wait_ready(http: httpx.AsyncClient, status: int, timeout: float) -> float:
    """Poll ``/readyz`` until it answers ``status``; return when that was (monotonic)."""
    with anyio.fail_after(timeout):
        while (await http.get("/readyz")).status_code != status:
            await anyio.sleep(0.02)
    return time.monotonic()


async def test_a_backend_that_comes_back_is_up_within_one_interval_with_no_traffic() -> None:
    port = free_port()  # nothing listens there yet: the backend is down
    config = dict(health_check_interval=INTERVAL, health_check_timeout=0.5, eject_after=1,
                  eject_base=30.0, eject_max=30.0)
    with anyio.fail_after(30):
        async with running_proxy([f"ws://127.0.0.1:{port}/app?room=1"], **config) as server, \
                AdminServer(server, token=TOKEN) as admin, \
                httpx.AsyncClient(base_url=admin.url, timeout=5) as http:
            await wait_ready(http, 503, timeout=5)  # the refused probe ejected it
            assert server.backends()[0].state is BackendState.EJECTED
            health = server.backend_health()[0]
            assert health.last_ok is False and health.ejected_until is not None
            backend = Backend(port=port)
            async with running_backends(backend):
                came_back = time.monotonic()
                ready = await wait_ready(http, 200, timeout=INTERVAL + SLACK + 1)
                assert ready - came_back <= INTERVAL + SLACK  # not the 30 s cool-down
                assert server.backends()[0].state is BackendState.UP
                with anyio.fail_after(5):
                    while not backend.connections or backend.connections[0].close_code is None:
                        await anyio.sleep(0.02)
                request = backend.requests[0]
                assert request.path == "/app?room=1"  # the backend URL's own target
                assert request.headers["User-Agent"] == "wspipe-health-check"
                # The probe said goodbye with a Close 1000, not a reset.
                assert backend.connections[0].close_code == 1000
                assert backend.received == []
            # Stopped again: the next probe finds it refused and /readyz turns 503.
            await wait_ready(http, 503, timeout=INTERVAL + SLACK + 1)
            assert server.stats.clients_accepted == 0  # no traffic at any time


async def test_a_backend_that_answers_the_wrong_status_is_ejected() -> None:
    backend = Backend(subprotocols=["only-this"])  # a plain upgrade is refused with 400
    config = dict(health_check_interval=INTERVAL, eject_after=2, eject_base=30.0,
                  eject_max=30.0)
    with anyio.fail_after(30):
        async with running_backends(backend), \
                running_proxy([backend.url], **config) as server, \
                AdminServer(server, token=TOKEN) as admin, \
                httpx.AsyncClient(base_url=admin.url, timeout=5) as http:
            await wait_ready(http, 503, timeout=2 * INTERVAL + SLACK + 1)
            health = server.backend_health()[0]
            assert health.check_failures >= 2
            assert health.last_result == "HTTP 400, expected 101"

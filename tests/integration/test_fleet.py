"""A fleet: two or three ``wspipe serve --store`` processes sharing one real Redis.

Each test runs the instances on the test's anyio backend (``--async-lib``), with real
websockets clients and backends, and a ``redis-server`` of its own (tests/integration/
fleet.py). Leases: 409 fleet-wide, freed on close, expired after a kill -9 within
``lease_ttl``. Registry: register on A reaches B. Faults: Redis killed and restarted
under streaming clients.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid

from fleet import (
    TOKEN,
    Instance,
    redis_server,
    sentinel_group,
    start_instance,
    stop_instance,
    wait_for,
)
from test_admin_serve import free_port, stop
from test_rolling import EchoBackend, Recorder, StreamingClient, check, stopping
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

LEASE_TTL = 3.0


def open_client(url: str):
    return connect(url, open_timeout=5, close_timeout=2, ping_interval=None, proxy=None,
                   legacy=True)


def status_of(url: str) -> int:
    """The HTTP status a new connection to ``url`` gets (101 when accepted)."""
    try:
        with open_client(url):
            return 101
    except InvalidStatus as exc:
        return exc.response.status_code


@contextlib.contextmanager
def instances(*specs):
    started: list[Instance] = []
    try:
        for spec in specs:
            started.append(start_instance(**spec))
        yield started
    finally:
        for instance in started:
            _code, err = stop_instance(instance)
            instance.log.append(err)


def test_a_client_id_live_on_one_instance_is_refused_with_409_on_the_others(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url]) for n in ("A", "B", "C")]) as (a, b, c):
        client_id = str(uuid.uuid4())
        with open_client(f"{a.ws}/{client_id}") as first:
            first.send("900:0")
            assert first.recv(timeout=5) == "900:0"
            assert redis.command("GET", f"wspipe:lease:{client_id}") == b"A"
            assert status_of(f"{b.ws}/{client_id}") == 409
            assert status_of(f"{c.ws}/{client_id}") == 409
            other = str(uuid.uuid4())
            assert status_of(f"{b.ws}/{other}") == 101  # other ids are untouched
            first.send("900:1")
            assert first.recv(timeout=5) == "900:1"
        # Closed: the lease is released, so B takes the id at once.
        wait_for(lambda: redis.command("GET", f"wspipe:lease:{client_id}") == b"$-1",
                 2, "lease released")
        assert status_of(f"{b.ws}/{client_id}") == 101
    assert "refused with 409: client id" in b.log[0] and "instance A" in b.log[0]


def test_any_instance_answers_for_the_fleet_and_wspipe_fleet_lists_it(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url]) for n in ("A", "B")]) as (a, b):
        with open_client(f"{a.ws}/{uuid.uuid4()}"), open_client(f"{a.ws}/{uuid.uuid4()}"):
            view = wait_for(lambda: (v := b.get("/fleet"))["members"] == 2 and {
                i["instance"]: i["pipes"] for i in v["instances"]} == {"A": 2, "B": 0} and v,
                5, "B lists both instances")
            assert view["instance"] == "B" and view["store"] == "up"
            assert {i["instance"]: i["backends"] for i in view["instances"]} == {
                "A": {"total": 1, "up": 1}, "B": {"total": 1, "up": 1}}
            done = subprocess.run(
                [sys.executable, "-m", "wspipe_anyio", "fleet", "--admin", a.admin],
                capture_output=True, text=True, timeout=30, check=False,
                env={**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN})
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == "store: up; 2 live instance(s)"
        assert lines[1].split() == ["ME", "INSTANCE", "HOST", "PID", "LISTEN", "PIPES",
                                    "CONNECTIONS", "BACKENDS_UP", "STORE", "STOPPING"]
        rows = {line.split()[1] if line.startswith("*") else line.split()[0]: line
                for line in lines[2:]}
        assert set(rows) == {"A", "B"} and rows["A"].startswith("*")
        assert rows["A"].split()[6] == "2" and "1/1" in rows["B"]


def test_a_killed_instances_leases_expire_within_lease_ttl(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url]) for n in ("A", "B")]) as (a, b):
        client_id = str(uuid.uuid4())
        ws = open_client(f"{a.ws}/{client_id}")
        try:
            time.sleep(1.5)  # at least one renewal (every lease_ttl / 3)
            a.proc.kill()  # kill -9: no release, no goodbye
            killed = time.monotonic()
            assert status_of(f"{b.ws}/{client_id}") == 409  # still leased
            wait_for(lambda: status_of(f"{b.ws}/{client_id}") == 101, LEASE_TTL + 2,
                     "lease expired", step=0.1)
            elapsed = time.monotonic() - killed
            assert elapsed <= LEASE_TTL + 0.5, elapsed
        finally:
            ws.close_socket()
        # And the dead instance leaves the member count that paces migrations.
        wait_for(lambda: b.get("/fleet")["members"] == 1, LEASE_TTL + 2, "member gone")


def test_a_backend_registered_on_one_instance_reaches_clients_of_another(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend)
                        for n in ("A", "B")]) as (a, b):
        assert b.get("/backends") == []
        with a.http() as http:
            assert http.post("/backends", json={"url": b1.url}).status_code == 201
        registered = time.monotonic()
        wait_for(lambda: [x["url"] for x in b.get("/backends")] == [b1.url], 2,
                 "B has the backend")
        assert time.monotonic() - registered < 1.0
        with open_client(f"{b.ws}/{uuid.uuid4()}") as ws:
            ws.send("901:0")
            assert ws.recv(timeout=5) == "901:0"
        assert recorder.total == 1
        # An instance that starts later loads the registry.
        with instances(dict(name="C", store=redis.url, async_lib=anyio_backend)) as (c,):
            wait_for(lambda: [x["url"] for x in c.get("/backends")] == [b1.url], 3,
                     "C loaded the registry")


def test_drain_with_migrate_on_one_instance_moves_the_pipes_of_all_at_the_fleet_rate(
        anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start(),
                                            EchoBackend(recorder).start()]) as (b1, b2), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url, b2.url], args=["--migrate-rate", "8"])
                        for n in ("A", "B")]) as (a, b):
        wait_for(lambda: a.get("/fleet")["members"] == 2 == b.get("/fleet")["members"], 5,
                 "two members")
        clients = [StreamingClient(i, f"{(a, b)[i % 2].ws}/{uuid.uuid4()}") for i in range(16)]
        try:
            for client in clients:
                client.start()
            time.sleep(0.5)
            on_b1 = sum(x["pipes"] for i in (a, b) for x in i.get("/backends")
                        if x["url"] == b1.url)
            assert on_b1 >= 4
            with b.http() as http:
                b1_id = next(x["id"] for x in b.get("/backends") if x["url"] == b1.url)
                assert http.delete(f"/backends/{b1_id}?migrate=true").status_code == 202
            start = time.monotonic()
            for instance in (a, b):
                wait_for(lambda i=instance: b1.url not in [x["url"] for x in i.get("/backends")],
                         20, f"b1 left {instance.name}'s pool")
            took = time.monotonic() - start
            # 8 pipes/s for the fleet: each of the two instances moves 4/s (the first
            # of each at once).
            assert took >= (on_b1 - 2) / 8 * 0.9, (took, on_b1)
            time.sleep(0.3)
            for client in clients:
                client.stop_sending()
            expected = sum(c.sent for c in clients)
            wait_for(lambda: recorder.total >= expected, 10, "every message arrived")
            result = check(clients, recorder)  # every message once, in order
            assert result["lost"] == 0 and recorder.total == expected
        finally:
            for client in clients:
                client.close()


class TimedEchoBackend(EchoBackend):
    """An :class:`EchoBackend` that notes when each link ended, and whose client it was."""

    def __init__(self, recorder: Recorder) -> None:
        super().__init__(recorder, on_end=self._ended)
        self.ended: list[tuple[float, str]] = []

    def _ended(self, ws) -> None:
        self.ended.append((time.monotonic(), ws.request.headers["x-wspipe-client-id"]))


def rate_of(times: list[float]) -> float:
    """Moves per second: the least-squares slope of the move count over time."""
    n = len(times)
    mean_t, mean_i = sum(times) / n, (n - 1) / 2
    return (sum((t - mean_t) * (i - mean_i) for i, t in enumerate(times))
            / sum((t - mean_t) ** 2 for t in times))


def test_drain_with_migrate_moves_pipes_at_the_fleet_rate_neither_faster_nor_slower(
        anyio_backend):
    """The moves' own timestamps (each pipe's link to the drained backend ending, seen by
    that backend): 8/s for the fleet, 4/s on each of the two instances."""
    rate, per_instance = 8.0, 12
    recorder = Recorder()
    with redis_server() as redis, stopping([TimedEchoBackend(recorder).start(),
                                            EchoBackend(recorder).start()]) as (b1, b2), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url], args=["--migrate-rate", str(rate)])
                        for n in ("A", "B")]) as (a, b):
        wait_for(lambda: a.get("/fleet")["members"] == 2 == b.get("/fleet")["members"], 5,
                 "two members")
        ids = [str(uuid.uuid4()) for _ in range(2 * per_instance)]
        owner = {client_id: (a, b)[i % 2].name for i, client_id in enumerate(ids)}
        clients = [StreamingClient(i, f"{(a, b)[i % 2].ws}/{client_id}")
                   for i, client_id in enumerate(ids)]
        try:
            for client in clients:  # every pipe on b1, half of them on each instance
                client.start()
            with a.http() as http:
                assert http.post("/backends", json={"url": b2.url}).status_code == 201
            for instance in (a, b):
                wait_for(lambda i=instance: len(i.get("/backends")) == 2, 3,
                         f"{instance.name} has b2")
            time.sleep(0.5)
            assert b1.ended == []
            with b.http() as http:
                b1_id = next(x["id"] for x in b.get("/backends") if x["url"] == b1.url)
                assert http.delete(f"/backends/{b1_id}?migrate=true").status_code == 202
            wait_for(lambda: len(b1.ended) == len(ids), 20, "every pipe moved off b1")
            moves = sorted(b1.ended)
            assert sorted(client_id for _, client_id in moves) == sorted(ids)  # each once
            fleet = rate_of([t for t, _ in moves])
            # A per-instance rate would move them at 16/s; one instance's share alone, 4/s.
            assert rate * 0.75 <= fleet <= rate * 1.25, (fleet, moves)
            for instance in (a, b):
                times = [t for t, client_id in moves if owner[client_id] == instance.name]
                assert len(times) == per_instance
                assert rate / 2 * 0.75 <= rate_of(times) <= rate / 2 * 1.25, (
                    instance.name, rate_of(times), times)
                # Never a burst: at most its share of a second's moves in any second (+1
                # for the jitter of when the backend sees a link end).
                most = max(sum(1 for u in times if t <= u < t + 1.0) for t in times)
                assert most <= rate / 2 + 1, (instance.name, most, times)
            time.sleep(0.3)
            for client in clients:
                client.stop_sending()
            expected = sum(c.sent for c in clients)
            wait_for(lambda: recorder.total >= expected, 10, "every message arrived")
            result = check(clients, recorder)  # every message once, in order; no disconnect
            assert result["lost"] == 0 and result["duplicated"] == 0
            assert recorder.total == expected
        finally:
            for client in clients:
                client.close()


def test_redis_killed_and_restarted_under_streaming_clients(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start(),
                                            EchoBackend(recorder).start()]) as (b1, b2), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url]) for n in ("A", "B")]) as (a, b):
        ids = [str(uuid.uuid4()) for _ in range(6)]
        clients = [StreamingClient(i, f"{(a, b)[i % 2].ws}/{ids[i]}") for i in range(6)]
        try:
            for client in clients:
                client.start()
            time.sleep(0.5)
            redis.kill()
            wait_for(lambda: a.get("/fleet")["store"] == "down", 5, "A sees the store down")
            # Registry changes fail closed; new client ids fail open.
            with a.http() as http:
                refused = http.post("/backends", json={"url": b2.url})
                assert refused.status_code == 503, refused.text
            late = str(uuid.uuid4())
            with open_client(f"{b.ws}/{late}") as ws:
                ws.send("902:0")
                assert ws.recv(timeout=5) == "902:0"
            time.sleep(1.0)  # streaming on, store down
            redis.start()
            wait_for(lambda: a.get("/fleet")["store"] == "up" == b.get("/fleet")["store"], 10,
                     "store back")
            # Reconciled without a restart: the registry re-seeded, leases written back.
            wait_for(lambda: redis.command("HEXISTS", "wspipe:registry", b1.url) == b":1", 5,
                     "registry re-seeded")
            for i, client_id in enumerate(ids):
                holder = (b"A", b"B")[i % 2]
                wait_for(lambda c=client_id, h=holder:
                         redis.command("GET", f"wspipe:lease:{c}") == h, 5, "lease back")
            with a.http() as http:
                assert http.post("/backends", json={"url": b2.url}).status_code == 201
            wait_for(lambda: len(b.get("/backends")) == 2, 3, "B got b2")
            with b.http() as http:
                text = http.get("/metrics").text
            assert "wspipe_store_up 1.0" in text and "wspipe_fleet_members 2.0" in text
            assert "wspipe_fleet_claims_failed_open_total 1.0" in text
            assert "wspipe_fleet_store_outages_total 1.0" in text
            time.sleep(0.3)
            for client in clients:
                client.stop_sending()
            expected = sum(c.sent for c in clients) + 1
            wait_for(lambda: recorder.total >= expected, 10, "every message arrived")
            check(clients, recorder)  # nobody disconnected, every message once, in order
        finally:
            for client in clients:
                client.close()
    assert "store unreachable" in a.log[0] and "fail open" in b.log[0]


def test_sentinel_promotes_the_replica_after_a_kill_9_and_the_fleet_follows(
        anyio_backend, tmp_path):
    """Redis HA: primary + replica + redis-sentinel. The primary is killed with SIGKILL
    under streaming clients; the Sentinel promotes the replica; both instances' store
    clients find the new primary through the Sentinel (the first one listed is down),
    registry changes work again, and no client is disconnected."""
    secret = "s3ntinel-pw"
    recorder = Recorder()
    dead_sentinel = free_port()
    with sentinel_group(str(tmp_path), password=secret) as group, \
            stopping([EchoBackend(recorder).start(), EchoBackend(recorder).start()]) as (
                b1, b2), \
            instances(*[dict(name=n, store=group.url([dead_sentinel]),
                             async_lib=anyio_backend, backends=[b1.url],
                             env={"WSPIPE_STORE_PASSWORD": secret}) for n in ("A", "B")]
                      ) as (a, b):
        wait_for(lambda: a.get("/fleet")["members"] == 2 == b.get("/fleet")["members"], 5,
                 "two members")
        ids = [str(uuid.uuid4()) for _ in range(6)]
        clients = [StreamingClient(i, f"{(a, b)[i % 2].ws}/{ids[i]}") for i in range(6)]
        try:
            for client in clients:
                client.start()
            time.sleep(0.5)
            assert group.replica.command("GET", f"wspipe:lease:{ids[0]}") == b"A"
            old = group.primary.port
            group.primary.kill()
            wait_for(lambda: group.primary_port() == group.replica.port, 30,
                     "the Sentinel promoted the replica")
            assert group.primary_port() != old
            # Registry changes work again once the store client reconnects (503 until then).
            def register() -> bool:
                with a.http() as http:
                    return http.post("/backends", json={"url": b2.url}).status_code == 201
            wait_for(register, 20, "A registered b2 on the new primary", step=0.3)
            wait_for(lambda: len(b.get("/backends")) == 2, 5, "B got b2")
            assert group.replica.command("HEXISTS", "wspipe:registry", b2.url) == b":1"
            wait_for(lambda: a.get("/fleet")["store"] == "up" == b.get("/fleet")["store"]
                     and a.get("/fleet")["members"] == 2, 10, "both up, two members")
            for i, client_id in enumerate(ids):  # leases renewed on the new primary
                holder = (b"A", b"B")[i % 2]
                wait_for(lambda c=client_id, h=holder: group.replica.command(
                    "GET", f"wspipe:lease:{c}") == h, 10, "lease on the new primary")
            # The 409 rule holds fleet-wide through the new primary.
            assert status_of(f"{b.ws}/{ids[0]}") == 409
            time.sleep(0.3)
            for client in clients:
                client.stop_sending()
            expected = sum(c.sent for c in clients)
            wait_for(lambda: recorder.total >= expected, 10, "every message arrived")
            check(clients, recorder)  # nobody disconnected, every message once, in order
        finally:
            for client in clients:
                client.close()
    assert all(secret not in i.log[0] for i in (a, b))


def test_a_client_that_drops_from_one_instance_resumes_its_session_through_another(
        anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(*[dict(name=n, store=redis.url, async_lib=anyio_backend,
                             backends=[b1.url], args=["--resume-window", "20",
                                                      "--delivery", "at-least-once"])
                        for n in ("A", "B")]) as (a, b):
        client_id = str(uuid.uuid4())
        ws = open_client(f"{a.ws}/{client_id}")
        for seq in range(5):
            ws.send(f"0:{seq}")
            assert ws.recv(timeout=5) == f"0:{seq}"
        session = a.get("/pipes")[0]["session_id"]
        ws.close_socket()  # a network blip: no Close
        wait_for(lambda: a.get("/pipes")[0]["parked"], 5, "parked on A")
        started = time.monotonic()
        with open_client(f"{b.ws}/{client_id}") as again:
            took = time.monotonic() - started
            for seq in range(5, 10):
                again.send(f"0:{seq}")
                while (echo := again.recv(timeout=5)) != f"0:{seq}":
                    # At least once: what the first link had not confirmed is replayed
                    # to the second backend (and echoed again), never a later message.
                    assert int(echo.split(":")[1]) < 5, echo
            pipes = b.get("/pipes")
            assert len(pipes) == 1 and pipes[0]["session_id"] == session
            wait_for(lambda: a.get("/pipes") == [], 5, "A let go")
            assert redis.command("GET", f"wspipe:lease:{client_id}") == b"B"
            with b.http() as http:
                text = http.get("/metrics").text
            assert "wspipe_client_resumes_total 1.0" in text
        assert took < 3.0, took
        with recorder.lock:
            delivered = [seq for link in sorted(recorder.links)
                         for _, seq in recorder.links[link]]
        # Nothing lost, in order on each link; duplicates only of unconfirmed ones.
        assert sorted(set(delivered)) == list(range(10)) and delivered[-5:] == [5, 6, 7, 8, 9]
        assert len(recorder.links) == 2
    assert "handing the parked session over to instance B" in a.log[0]
    assert "taken over from another instance" in b.log[0]


def test_a_store_that_stops_answering_never_blocks_the_relay(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(dict(name="A", store=redis.url, async_lib=anyio_backend,
                           backends=[b1.url])) as (a,):
        clients = [StreamingClient(i, f"{a.ws}/{uuid.uuid4()}") for i in range(4)]
        try:
            for client in clients:
                client.start()
            time.sleep(0.3)
            redis.pause()  # connections stay open; nothing is answered
            before = sum(len(c.echoes) for c in clients)
            time.sleep(1.0)
            assert sum(len(c.echoes) for c in clients) - before >= 4 * 20  # 40/s each
            started = time.monotonic()
            with open_client(f"{a.ws}/{uuid.uuid4()}") as ws:  # fails open after 1 s
                waited = time.monotonic() - started
                ws.send("904:0")
                assert ws.recv(timeout=5) == "904:0"
            assert 0.8 <= waited < 3.0, waited
            wait_for(lambda: a.get("/fleet")["store"] == "down", 5, "store seen down")
            redis.resume()
            wait_for(lambda: a.get("/fleet")["store"] == "up", 5, "store seen up")
            for client in clients:
                client.stop_sending()
            expected = sum(c.sent for c in clients) + 1
            wait_for(lambda: recorder.total >= expected, 10, "every message arrived")
            check(clients, recorder)
        finally:
            for client in clients:
                client.close()
    assert "no answer from the store within 1s" in a.log[0] or \
        "the store did not answer" in a.log[0]


GARBAGE = ["not json", '{"state": "up", "weight": "heavy"}', '["up"]', "x" * 5000,
           '{"state": "gone"}', '{"state": "up", "migrate": "yes"}']


def test_garbage_in_the_registry_is_logged_and_ignored(anyio_backend):
    recorder = Recorder()
    with redis_server() as redis, stopping([EchoBackend(recorder).start(),
                                            EchoBackend(recorder).start()]) as (b1, b2), \
            instances(dict(name="A", store=redis.url, async_lib=anyio_backend,
                           backends=[b1.url])) as (a,):
        for i, garbage in enumerate(GARBAGE):
            redis.command("HSET", "wspipe:registry", f"ws://127.0.0.1:1/bad{i}", garbage)
        redis.command("HSET", "wspipe:registry", b2.url, '{"state":"up","weight":1}')
        redis.command("INCR", "wspipe:registry:version")
        wait_for(lambda: len(a.get("/backends")) == 2, 3, "the good entry applied")
        assert [x["url"] for x in a.get("/backends")] == [b1.url, b2.url]
        with open_client(f"{a.ws}/{uuid.uuid4()}") as ws:
            ws.send("903:0")
            assert ws.recv(timeout=5) == "903:0"
        with a.http() as http:
            text = http.get("/metrics").text
        assert f"wspipe_fleet_store_garbage_total {float(len(GARBAGE))}" in text
    for i in range(len(GARBAGE)):
        assert f"registry entry 'ws://127.0.0.1:1/bad{i}' ignored" in a.log[0]


def test_workers_share_the_port_and_the_store_and_a_killed_one_is_started_again(
        anyio_backend):
    recorder = Recorder()
    port, admin_port = free_port(), free_port()
    admin = f"http://127.0.0.1:{admin_port}"
    with redis_server() as redis, stopping([EchoBackend(recorder).start()]) as (b1,):
        proc = subprocess.Popen(
            [sys.executable, "-m", "wspipe_anyio", "serve", "--workers", "2", "--store",
             redis.url, "--listen", f"127.0.0.1:{port}", "--admin", f"127.0.0.1:{admin_port}",
             "--backend", b1.url, "--instance-id", "host1", "--lease-ttl", "3",
             "--ping-interval", "0", "--async-lib", anyio_backend, "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "WSPIPE_ADMIN_TOKEN": TOKEN})
        sockets = []
        try:
            front = Instance("host1", proc, port, admin)
            wait_for(lambda: front.get("/fleet")["members"] == 2, 20, "two workers")
            for i in range(16):
                ws = open_client(f"ws://127.0.0.1:{port}/{uuid.uuid4()}")
                ws.send(f"{i}:0")
                assert ws.recv(timeout=5) == f"{i}:0"
                sockets.append(ws)
            view = wait_for(lambda: (v := front.get("/fleet")) and sum(
                i["pipes"] for i in v["instances"]) == 16 and v, 5, "16 pipes listed")
            pipes = {i["instance"]: i["pipes"] for i in view["instances"]}
            assert set(pipes) == {"host1-w0", "host1-w1"}
            assert all(n > 0 for n in pipes.values()), pipes  # the kernel spread them
            # A client id live on one worker is refused by the other (the store's lease).
            client_id = str(uuid.uuid4())
            held = open_client(f"ws://127.0.0.1:{port}/{client_id}")
            sockets.append(held)
            assert all(status_of(f"ws://127.0.0.1:{port}/{client_id}") == 409
                       for _ in range(8))
            # kill -9 one worker: the supervisor starts it again.
            victim = next(i["pid"] for i in view["instances"] if i["instance"] == "host1-w1")
            os.kill(victim, signal.SIGKILL)
            wait_for(lambda: any(i["instance"] == "host1-w1" and i["pid"] != victim
                                 for i in front.get("/fleet")["instances"]), 20,
                     "worker 1 started again")
        finally:
            for ws in sockets:
                ws.close_socket()
            code, err = stop(proc)
        assert code == 0, err[-3000:]
        assert "worker 1 (pid" in err and "starting it again" in err


def test_the_store_password_comes_from_the_environment_and_is_never_logged(anyio_backend):
    secret = "s3cret-store-pw"
    recorder = Recorder()
    with redis_server(password=secret) as redis, \
            stopping([EchoBackend(recorder).start()]) as (b1,), \
            instances(dict(name="A", store=redis.url, async_lib=anyio_backend,
                           backends=[b1.url], args=["--log-level", "debug"],
                           env={"WSPIPE_STORE_PASSWORD": secret})) as (a,):
        client_id = str(uuid.uuid4())
        with open_client(f"{a.ws}/{client_id}"):
            assert redis.command("GET", f"wspipe:lease:{client_id}") == b"A"
        assert a.get("/fleet")["store"] == "up"
    assert a.log[0] and secret not in a.log[0]


def test_workers_need_a_store_and_say_so(anyio_backend):
    done = subprocess.run([sys.executable, "-m", "wspipe_anyio", "serve", "--workers", "2",
                           "--async-lib", anyio_backend], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("wspipe: error: --workers needs --store: the workers share "
                                  "client-id leases and the pool registry through it")
    assert len(done.stderr.splitlines()) == 1
    env = {k: v for k, v in os.environ.items() if k != "WSPIPE_ADMIN_TOKEN"}
    done = subprocess.run([sys.executable, "-m", "wspipe_anyio", "serve", "--workers", "2",
                           "--store", "redis://127.0.0.1:1/0", "--admin", "127.0.0.1:0",
                           "--async-lib", anyio_backend], capture_output=True, text=True,
                          timeout=30, check=False, env=env)
    assert done.returncode == 2 and "--workers with --admin needs a token" in done.stderr
    done = subprocess.run([sys.executable, "-m", "wspipe_anyio", "serve", "--store",
                           "http://:pw-in-url@127.0.0.1/0"], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 2 and "redis://, rediss:// or redis+sentinel://" in done.stderr
    assert "pw-in-url" not in done.stderr and "***" in done.stderr


"""The fleet seam of the core: leases, store faults, the registry, membership.

Several cores share one :class:`MemoryStore` (the rules the Redis store implements),
on explicit time; nothing here does I/O.
"""

from __future__ import annotations

import pytest

from wspipe_core import ProxyConfig
from wspipe_core.store import (
    ClaimResult,
    EntryState,
    FleetMembers,
    HandoverArrived,
    RegistryEntry,
    RegistrySnapshot,
    StoreClaim,
    StoreClaimed,
    StoreHealth,
    StoreRelease,
    StoreRenew,
    StoreUnavailable,
)
from wspipe_core.testing import Harness
from wspipe_core.testing.store import MemoryStore

from .helpers import ID1, ID2


def fleet(store, *names, **config):
    cfg = ProxyConfig(**{"lease_ttl": 6.0, "store_timeout": 1.0, **config})
    return [Harness(cfg, instance=name, store=store) for name in names]


def test_without_a_store_the_core_emits_no_store_action():
    h = Harness(ProxyConfig())
    h.backend("ws://b1/")
    c = h.client(f"/{ID1}")
    h.advance(30)
    assert c.accepted and h.proxy.fleet is None
    assert not [a for a in h.actions if type(a).__name__.startswith("Store")]


def test_a_client_id_live_on_one_instance_is_refused_with_409_on_another():
    store = MemoryStore()
    a, b = fleet(store, "A", "B")
    a.backend("ws://b1/")
    b.backend("ws://b1/")
    first = a.client(f"/{ID1}")
    assert first.accepted and store.holder(ID1, a.now) == "A"
    second = b.client(f"/{ID1}")
    assert second.status == 409 and not second.accepted
    assert b.proxy.stats.fleet_claims_taken == 1 and b.proxy.stats.clients_rejected[409] == 1
    other = b.client(f"/{ID2}")  # other ids are untouched
    assert other.accepted and first.accepted and a.pipe(first) is not None


def test_the_client_is_not_read_until_the_store_answers():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/", echo=True)
    store.down = True  # answers nothing: the claim stays out
    c = a.client(f"/{ID1}")
    assert not c.accepted and a.pipe(c) is None
    assert ("c", c.conn) in a.paused or c.paused
    claim = [x for x in a.actions if isinstance(x, StoreClaim)]
    assert claim == [StoreClaim(ID1, "A", 6.0)]
    store.down = False
    a.feed(StoreClaimed(ID1, ClaimResult.OK))
    assert c.accepted and not c.paused
    c.send("hello")
    assert a.backends["ws://b1/"].messages() == ["hello"]


def test_a_claim_the_store_does_not_answer_in_time_fails_open_with_a_count(caplog):
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/")
    store.down = True
    c = a.client(f"/{ID1}")
    a.advance(0.99)
    assert not c.accepted
    a.advance(0.02)
    assert c.accepted and a.proxy.stats.fleet_claims_failed_open == 1
    assert "fail open" in caplog.text
    # The lease is written by the next renewal once the store answers again.
    store.down = False
    a.advance(2.0)
    assert store.holder(ID1, a.now) == "A"


def test_an_unavailable_answer_fails_open_and_a_late_ok_for_a_gone_client_is_released():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/")
    store.down = True
    c = a.client(f"/{ID1}")
    a.feed(StoreClaimed(ID1, ClaimResult.UNAVAILABLE))
    assert c.accepted and a.proxy.stats.fleet_claims_failed_open == 1
    gone = a.client(f"/{ID2}")
    gone.eof()
    assert gone.tcp_closed
    a.feed(StoreClaimed(ID2, ClaimResult.OK))
    assert StoreRelease(ID2, "A") in a.actions


def test_two_connections_with_one_id_on_one_instance_while_the_claim_is_out():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/")
    store.down = True
    first = a.client(f"/{ID1}")
    second = a.client(f"/{ID1}")
    assert second.status == 409
    a.feed(StoreClaimed(ID1, ClaimResult.OK))
    assert first.accepted and len(a.proxy.pipes()) == 1


def test_leases_are_renewed_while_the_pipe_lives_and_released_when_it_ends():
    store = MemoryStore()
    a, b = fleet(store, "A", "B")
    a.backend("ws://b1/")
    b.backend("ws://b1/")
    c = a.client(f"/{ID1}")
    for _ in range(10):  # 30 s, five lease lifetimes
        a.advance(3)
        b.now = a.now
        assert store.holder(ID1, a.now) == "A"
    renewals = [x for x in a.actions if isinstance(x, StoreRenew)]
    assert len(renewals) >= 14 and all(r.client_ids == (ID1,) for r in renewals)
    c.close_ws(1000)
    assert store.holder(ID1, a.now) is None
    assert b.client(f"/{ID1}").accepted


def test_a_dead_instances_leases_expire_within_lease_ttl():
    store = MemoryStore()
    a, b = fleet(store, "A", "B")
    a.backend("ws://b1/")
    b.backend("ws://b1/")
    a.client(f"/{ID1}")
    a.advance(2.5)  # a renewal at 2.0; then A dies (no more calls)
    b.now = a.now
    assert b.client(f"/{ID1}").status == 409
    b.advance(2.0 + 6.0 - 2.5 - 0.01)
    assert b.client(f"/{ID1}").status == 409
    b.advance(0.02)
    assert b.client(f"/{ID1}").accepted


def test_a_resume_on_the_same_instance_needs_no_claim():
    store = MemoryStore()
    (a,) = fleet(store, "A", resume_window=10)
    a.backend("ws://b1/")
    c = a.client(f"/{ID1}")
    c.eof()
    claims = len([x for x in a.actions if isinstance(x, StoreClaim)])
    again = a.client(f"/{ID1}")
    assert again.accepted
    assert len([x for x in a.actions if isinstance(x, StoreClaim)]) == claims


def test_registry_changes_fail_closed_while_the_store_is_down():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/")
    a.feed(StoreHealth(False))
    with pytest.raises(StoreUnavailable):
        a.proxy.add_backend("ws://b2/", now=a.now)
    with pytest.raises(StoreUnavailable):
        a.proxy.remove_backend("ws://b1/", migrate=False, now=a.now)
    assert [b.url for b in a.proxy.backends()] == ["ws://b1/"]
    assert a.proxy.stats.fleet_store_outages == 1


def test_a_backend_registered_on_one_instance_reaches_the_others():
    store = MemoryStore()
    a, b = fleet(store, "A", "B")
    a.backend("ws://b1/")
    assert store.registry["ws://b1/"] == RegistryEntry("ws://b1/", EntryState.UP, 1.0)
    b.backends["ws://b1/"] = a.backends["ws://b1/"]  # the same real backend
    b.sync_registry()
    assert [x.url for x in b.proxy.backends()] == ["ws://b1/"]
    c = b.client(f"/{ID2}")
    c.send("via B")
    assert a.backends["ws://b1/"].messages() == ["via B"]
    b.sync_registry()  # idempotent
    assert len(b.proxy.backends()) == 1


def test_a_drain_with_migrate_on_one_instance_moves_the_pipes_of_the_other():
    store = MemoryStore()
    a, b = fleet(store, "A", "B", migrate_rate=10)
    b1 = a.backend("ws://b1/", echo=True)
    b2 = a.backend("ws://b2/", echo=True)
    b.backends.update(a.backends)
    b.sync_registry()
    clients = [a.client(f"/{i:08x}-0000-4000-8000-000000000000") for i in range(4)]
    on_b1 = [c for c in clients if a.pipe(c).backend_id == "b1"]
    assert on_b1
    b.proxy.remove_backend("ws://b1/", migrate=True, now=b.now)
    b.advance(0)
    assert store.registry["ws://b1/"].state is EntryState.DRAINING
    a.sync_registry()
    a.feed(FleetMembers(2))
    a.advance(5)
    assert all(a.pipe(c).backend_id == "b2" for c in clients)
    assert [x.url for x in a.proxy.backends()] == ["ws://b2/"]
    for c in clients:
        c.send("after")
    assert b2.messages().count("after") == 4 and "after" not in b1.messages()


def test_membership_divides_the_migrate_rate_among_instances():
    store = MemoryStore()
    (a,) = fleet(store, "A", migrate_rate=30)
    a.feed(FleetMembers(3))
    assert a.proxy.migrations.rate == 10
    a.feed(FleetMembers(0))  # garbage-ish: never below one instance
    assert a.proxy.migrations.rate == 30


def test_a_bad_registry_entry_is_ignored_counted_and_the_rest_applies(caplog):
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.feed(RegistrySnapshot(3, (RegistryEntry("http://nope/", EntryState.UP),
                                RegistryEntry("ws://ok/", EntryState.UP, 2.0))))
    assert [x.url for x in a.proxy.backends()] == ["ws://ok/"]
    assert a.proxy.stats.fleet_registry_rejected == 1 and "ignored" in caplog.text


def test_a_wiped_store_is_reseeded_and_leases_written_back_when_it_returns():
    store = MemoryStore()
    a, b = fleet(store, "A", "B")
    a.backend("ws://b1/")
    b.sync_registry()
    a.client(f"/{ID1}")
    a.feed(StoreHealth(False))
    b.feed(StoreHealth(False))
    store.wipe()
    a.feed(StoreHealth(True))
    a.advance(0)
    assert store.holder(ID1, a.now) == "A"
    assert store.registry["ws://b1/"].state is EntryState.UP
    b.feed(StoreHealth(True))
    b.advance(0)
    b.sync_registry()
    assert len(b.proxy.backends()) == 1
    assert b.client(f"/{ID1}").status == 409


def test_a_backend_missing_from_the_registry_is_left_alone():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    a.backend("ws://b1/")
    a.feed(RegistrySnapshot(9, ()))
    assert [(x.url, x.state.value) for x in a.proxy.backends()] == [("ws://b1/", "up")]


def test_shutdown_refuses_clients_waiting_for_their_claim_with_503():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    store.down = True
    c = a.client(f"/{ID1}")
    a.apply(a.proxy.shutdown(a.now))
    assert c.status == 503


# ---------------------------------------------------------------- resume across instances


def shared_backend(a, b, url="ws://b1/", **kw):
    backend = a.backend(url, **kw)
    b.backends[url] = backend
    b.sync_registry()
    return backend


def test_a_session_parked_on_one_instance_resumes_through_another():
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10)
    b1 = shared_backend(a, b, echo=True)
    c = a.client(f"/{ID1}")
    c.send("1")
    c.eof()  # vanished: parked on A
    first = b1.links[0]
    first.send("held for the client")
    assert store.parked[ID1][0] == "A"
    again = b.client(f"/{ID1}")
    assert not again.accepted  # B asked A for the session
    with first.holding() as answer:
        a.poll_store()  # A: the handover request; its link closes like a migration
    assert first.close is not None and first.close.code == 1001
    first.send_raw(b"\x81\x0fafter our close")  # written before it saw our Close
    assert not again.accepted and b.store.exports == {}  # A waits for the backend's Close
    for data in answer:
        first.send_raw(data)
    b.poll_store()  # B: the export arrived
    assert again.accepted
    assert again.received == ["held for the client", "after our close"]
    second = b1.links[1]
    assert second.header("x-wspipe-session") == first.header("x-wspipe-session")
    assert second.header("x-wspipe-link") == "2"
    again.send("2")
    assert b1.messages() == ["1", "2"]
    assert a.proxy.pipes() == [] and store.holder(ID1, b.now) == "B"
    assert a.proxy.stats.fleet_handovers_out == 1 and b.proxy.stats.fleet_handovers_in == 1
    assert b.proxy.stats.client_resumes == 1


def test_client_messages_waiting_on_the_first_instance_are_replayed_by_the_second():
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10, delivery="at-least-once")
    b1 = shared_backend(a, b)
    c = a.client(f"/{ID1}")
    first = b1.links[0]
    with first.holding():  # the backend does not answer pings: nothing is confirmed
        c.send("m1")
        c.send("m2")
    c.eof()
    again = b.client(f"/{ID1}")
    a.poll_store()
    b.poll_store()
    second = b1.links[1]
    assert [m for m in second.received] == ["m1", "m2"]  # unconfirmed: replayed in order
    assert second.header("x-wspipe-replayed") == "2" and second.header("x-wspipe-seq") == "1"
    again.send("m3")
    assert second.received[-1] == "m3"


def test_a_handover_that_does_not_come_starts_a_new_session(caplog):
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=30, close_timeout=1.0)
    shared_backend(a, b)
    c = a.client(f"/{ID1}")
    c.eof()
    again = b.client(f"/{ID1}")  # A never polls (it is hung)
    b.advance(1.0 + 2 * 1.0 + 1.0 - 0.01)
    assert not again.accepted
    b.advance(0.02)
    assert again.accepted and "did not hand its session over" in caplog.text
    assert store.holder(ID1, b.now) == "B" and b.proxy.stats.fleet_handovers_failed == 1
    assert b.proxy.stats.client_resumes == 0  # a new session; A's stays parked till its end
    assert a.proxy.pipes()[0].parked_until is not None


@pytest.mark.parametrize("blob", [
    b"not json", b"[" * 10, b'{"v": 1, "client_id": "other"}', b'{"v": 2}',
    b'{"v":1,"client_id":"%s","session_id":"s","carried":1,"replaying":0,"delivery":"x",'
    b'"next_seq":1,"to_backend":[],"to_client":[]}' % ID1.encode(),
    b'{"v":1,"client_id":"%s","session_id":"s","carried":1,"replaying":0,'
    b'"delivery":"at-most-once","next_seq":1,"to_backend":[[1,"b","!!"]],"to_client":[]}'
    % ID1.encode(),
    b"x" * (3 * 65536 + 65537)])
def test_a_garbage_export_starts_a_new_session(caplog, blob):
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10, buffer_limit=65536,
                 max_message_size=65536)
    shared_backend(a, b)
    c = a.client(f"/{ID1}")
    c.eof()
    again = b.client(f"/{ID1}")
    assert not again.accepted
    b.feed(HandoverArrived(ID1, blob))
    assert again.accepted and "garbage" in caplog.text
    assert b.proxy.stats.fleet_handovers_failed == 1


def test_another_principal_cannot_take_a_parked_session_on_another_instance():
    from wspipe_core import Accept, hookimpl

    class Who:
        @hookimpl
        def wspipe_authenticate(self, request, client_id):
            return Accept(principal=dict(request.headers).get("x-user"))

    store = MemoryStore()
    cfg = ProxyConfig(lease_ttl=6.0, resume_window=10)
    a = Harness(cfg, instance="A", store=store, plugins=[Who()])
    b = Harness(cfg, instance="B", store=store, plugins=[Who()])
    shared_backend(a, b)
    c = a.client(f"/{ID1}", headers=[("x-user", "alice")])
    c.eof()
    assert b.client(f"/{ID1}", headers=[("x-user", "mallory")]).status == 403
    assert len(a.proxy.pipes()) == 1  # untouched


def test_a_session_resumed_on_its_own_instance_is_no_longer_offered():
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10)
    shared_backend(a, b)
    c = a.client(f"/{ID1}")
    c.eof()
    assert ID1 in store.parked
    assert a.client(f"/{ID1}").accepted
    assert ID1 not in store.parked
    assert b.client(f"/{ID1}").status == 409


def test_a_registry_entry_off_this_instances_backend_allow_list_is_refused(caplog):
    store = MemoryStore()
    (a,) = fleet(store, "A", backend_allow=("10.0.0.0/8",))
    a.feed(RegistrySnapshot(1, (RegistryEntry("ws://evil.example/", EntryState.UP),
                                RegistryEntry("ws://10.0.0.7/", EntryState.UP))))
    assert [x.url for x in a.proxy.backends()] == ["ws://10.0.0.7/"]
    assert a.proxy.stats.fleet_registry_rejected == 1 and "backend_allow" in caplog.text


def test_a_connection_on_the_instance_handing_a_session_over_gets_409():
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10)
    b1 = shared_backend(a, b)
    c = a.client(f"/{ID1}")
    c.eof()
    b.client(f"/{ID1}")
    with b1.links[0].holding():
        a.poll_store()  # handing over: the link is closing
    assert a.client(f"/{ID1}").status == 409


def test_a_session_that_arrives_after_its_client_left_ends_and_gives_the_lease_back(caplog):
    store = MemoryStore()
    a, b = fleet(store, "A", "B", resume_window=10)
    shared_backend(a, b)
    c = a.client(f"/{ID1}")
    c.eof()
    again = b.client(f"/{ID1}")
    a.poll_store()
    again.eof()  # gone before the export arrives
    b.poll_store()
    assert store.holder(ID1, b.now) is None and "arrived after its client left" in caplog.text
    assert b.proxy.pipes() == [] and b.proxy.stats.fleet_handovers_failed == 1


def test_a_url_registered_again_while_still_draining_here_is_added_once_it_has_left():
    store = MemoryStore()
    (a,) = fleet(store, "A")
    b1 = a.backend("ws://b1/")
    a.backend("ws://b2/")
    c = a.client(f"/{ID1}")
    assert a.pipe(c).backend_id == "b1"
    a.feed(RegistrySnapshot(5, (RegistryEntry("ws://b1/", EntryState.DRAINING),)))
    snapshot = RegistrySnapshot(6, (RegistryEntry("ws://b1/", EntryState.UP),))
    a.feed(snapshot)  # still draining here (it has a pipe): nothing yet
    assert a.proxy.backends()[0].state.value == "draining"
    c.close_ws(1000)
    a.advance(1)
    assert "ws://b1/" not in [x.url for x in a.proxy.backends()]
    a.feed(snapshot)  # the same registry read again (the driver reloads it every 2 s)
    assert [x.url for x in a.proxy.backends() if x.state.value == "up"] == ["ws://b2/",
                                                                            "ws://b1/"]
    assert b1 is a.backends["ws://b1/"]

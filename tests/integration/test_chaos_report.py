"""The chaos verdict on counted results: what is lost, duplicated, reordered, and which
promise each count breaks (the exact counting of a run, without a run)."""

from __future__ import annotations

import pytest

from wspipe_anyio.chaos.report import Fault, Record, Row, broken_promises, count


def rec(client: int, n: int, backend: str, link: int, position: int, time: float) -> Record:
    return Record(client, n, backend, link, position, time)


def test_losses_duplicates_and_reorders_are_counted_and_blamed_on_the_nearest_fault():
    sent = {1: [(n, n * 0.1) for n in range(1, 9)]}
    records = [
        rec(1, 1, "e1", 1, 0, 0.11), rec(1, 2, "e1", 1, 1, 0.21), rec(1, 3, "e1", 1, 2, 0.31),
        # e1 killed at 0.35: 4 lost; the next link replays 3 (a duplicate), then 6 before 5
        rec(1, 3, "e2", 2, 0, 0.90), rec(1, 6, "e2", 2, 1, 0.91), rec(1, 5, "e2", 2, 2, 0.92),
        rec(1, 7, "e2", 2, 3, 0.93), rec(1, 8, "e2", 2, 4, 0.94),
    ]
    faults = [Fault("kill", "e1", 0.35, 0.8), Fault("add", "e3", 0.5, 0.6)]
    counts = count(sent, records, faults, {})
    kill, total = counts.rows["kill"], counts.total
    assert (total.sent, total.lost, total.duplicated, total.reordered) == (8, 1, 1, 1)
    assert (kill.lost, kill.duplicated, kill.reordered, kill.faults) == (1, 1, 1, 1)
    assert counts.rows["add"].faults == 1 and counts.rows["add"].lost == 0
    assert kill.gaps == [pytest.approx(0.90 - 0.31)]  # last before the fault, first after
    assert "none" not in counts.rows  # everything was blamed on a fault
    assert "kill" in counts.as_text() and "590ms" in counts.as_text()


def test_order_is_the_proxys_delivery_order_link_then_position_not_wall_time():
    """A stopped backend that resumes reads an old link's message late: not a reorder."""
    sent = {1: [(1, 0.0), (2, 0.1)]}
    records = [rec(1, 2, "e2", 2, 0, 1.0), rec(1, 1, "e1", 1, 0, 5.0)]
    assert count(sent, records, [], {}).total.reordered == 0


def test_the_acked_ledgers_commit_order_is_the_applications_order():
    """A backend resumed after a black hole commits the next message on its old link
    while the new link commits around it: in commit order, nothing is reordered."""
    sent = {1: [(n, 0.0) for n in (1, 2, 3, 4)]}
    records = [rec(1, 1, "e2", 4, 0, 1.0), rec(1, 2, "e2", 4, 1, 1.1),
               rec(1, 3, "e1", 3, 2, 1.2), rec(1, 4, "e2", 4, 3, 1.3)]
    assert count(sent, records, [], {}).total.reordered == 2  # by link: an artifact
    assert count(sent, records, [], {}, by_link=False).total.reordered == 0


def test_a_disconnect_without_a_fault_nearby_is_blamed_on_none():
    counts = count({1: [(1, 0.0)]}, [rec(1, 1, "e1", 1, 0, 0.1)],
                   [Fault("kill", "e1", 100.0, 101.0)], {1: 50.0})
    assert counts.rows["none"].disconnects == 1 and counts.total.disconnects == 1
    assert counts.rows["kill"].disconnects == 0


def total(**values: int) -> Row:
    return Row("total", **values)


@pytest.mark.parametrize(("delivery", "row", "metric", "broken"), [
    ("at-most-once", total(lost=5), 5.0, []),
    ("at-most-once", total(lost=5), 7.0, []),
    ("at-most-once", total(lost=5), 4.0,
     ["at-most-once: 5 messages lost but the proxy counted only 4 as possibly lost"]),
    ("at-most-once", total(lost=0), None,
     ["at-most-once: the possibly-lost metric could not be read"]),
    ("at-most-once", total(duplicated=1, reordered=2), 0.0,
     ["at-most-once: 1 messages duplicated", "at-most-once: 2 messages reordered"]),
    ("at-most-once", total(disconnects=3), 0.0, []),
    ("at-least-once", total(duplicated=40), 0.0, []),
    ("at-least-once", total(lost=1, reordered=2, disconnects=3), 0.0,
     ["at-least-once: 1 lost", "at-least-once: 2 reordered",
      "at-least-once: 3 client disconnects"]),
    ("acked", total(reordered=0, disconnects=0), 9.0, []),
    ("acked", total(lost=1, duplicated=2), 0.0,
     ["acked: 1 lost", "acked: 2 duplicated at the application"]),
])
def test_each_mode_is_held_to_its_own_promise(delivery, row, metric, broken):
    assert broken_promises(delivery, row, metric) == broken

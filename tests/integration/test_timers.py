"""The driver's timer loop: fires at the core's deadline, never early, and wakes when poked."""

from __future__ import annotations

import anyio
import pytest

from wspipe_anyio.timers import TimerLoop

pytestmark = pytest.mark.anyio


class FakeCore:
    def __init__(self) -> None:
        self.deadline: float | None = None
        self.fired: list[tuple[float, float]] = []  # (now passed, deadline then)

    def next_deadline(self) -> float | None:
        return self.deadline

    def handle_timer(self, now: float) -> None:
        assert self.deadline is not None
        self.fired.append((now, self.deadline))
        self.deadline = None


async def test_fires_at_the_deadline_with_a_now_never_before_it() -> None:
    core = FakeCore()
    timers = TimerLoop(core.next_deadline, core.handle_timer)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            core.deadline = anyio.current_time() + 0.05
            tg.start_soon(timers.run)
            while not core.fired:
                await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
    ((now, deadline),) = core.fired
    assert now >= deadline


async def test_poke_wakes_the_loop_for_an_earlier_deadline() -> None:
    core = FakeCore()
    timers = TimerLoop(core.next_deadline, core.handle_timer)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            core.deadline = anyio.current_time() + 60
            tg.start_soon(timers.run)
            await anyio.sleep(0.05)
            started = anyio.current_time()
            core.deadline = started + 0.05
            timers.poke()
            while not core.fired:
                await anyio.sleep(0.005)
            assert anyio.current_time() - started < 1.0
            core.deadline = anyio.current_time() + 60
            timers.poke()  # armed for a minute from now: nothing fires meanwhile
            await anyio.sleep(0.05)
            assert len(core.fired) == 1
            tg.cancel_scope.cancel()


async def test_no_deadline_means_no_wakeups() -> None:
    core = FakeCore()
    timers = TimerLoop(core.next_deadline, core.handle_timer)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(timers.run)
            await anyio.sleep(0.1)
            timers.poke()
            await anyio.sleep(0.05)
            tg.cancel_scope.cancel()
    assert core.fired == []

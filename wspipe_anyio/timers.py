"""The one timer loop of a proxy: sleep until the core's next deadline, then fire it."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import anyio

log = logging.getLogger("wspipe.driver")


class TimerLoop:
    """Wakes the core at ``next_deadline()``; :meth:`poke` wakes it earlier.

    :param next_deadline: The core's ``Proxy.next_deadline``.
    :param fire: Called with ``now`` once a deadline is reached; it must call
        ``Proxy.handle_timer(now)`` and execute the actions.
    """

    def __init__(
        self, next_deadline: Callable[[], float | None], fire: Callable[[float], None]
    ) -> None:
        self._next_deadline = next_deadline
        self._fire = fire
        self._scope = anyio.CancelScope()

    def poke(self) -> None:
        """Re-read the deadline after a ``handle()``; wake the loop if it moved earlier."""
        deadline = self._next_deadline()
        if deadline is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    async def run(self) -> None:
        """Run until cancelled."""
        while True:
            deadline = self._next_deadline()
            with anyio.CancelScope(
                deadline=math.inf if deadline is None else deadline
            ) as self._scope:
                await anyio.sleep_forever()
            deadline = self._next_deadline()
            now = anyio.current_time()
            if deadline is None:
                continue
            if deadline > now and deadline - now > 0.001:
                continue  # poked to a deadline that is still ahead (or the loop woke early)
            # The loop may wake a little before the deadline: never pass a time before it.
            self._fire(max(deadline, now))
            if self._next_deadline() == deadline:
                log.error("timer: deadline %.3f still pending after handle_timer", deadline)
                await anyio.sleep(0.001)

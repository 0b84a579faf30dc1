"""Starts made together go on a few per turn of the event loop (`fsm.executor.turns`), so
that 100 of them do not hold the loop's timers up; none is lost, none overtakes another."""

from __future__ import annotations

import asyncio
from typing import Any

from actions import OneStep

import fsm
from fsm.executor.turns import Turns
from fsm.store.waking import TURN


def test_takers_go_on_a_turn_at_a_time_in_order_skipping_the_cancelled() -> None:
    turns = Turns(TURN)
    passed: list[int] = []
    seen_after_first_turn: list[int] = []

    async def taker(i: int) -> None:
        await turns.take()
        passed.append(i)

    async def run() -> None:
        n = 3 * TURN + 1
        tasks = [asyncio.create_task(taker(i)) for i in range(n)]
        await asyncio.sleep(0)  # every taker has come once: the first turn's went on
        seen_after_first_turn.extend(passed)
        tasks[TURN + 1].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert seen_after_first_turn == list(range(TURN))
    assert passed == [i for i in range(3 * TURN + 1) if i != TURN + 1]


def test_an_executor_takes_turns_on_every_loop_it_runs_on(store: fsm.Store) -> None:
    """Starts made together all start, on one loop and then another (a loop's turns end
    with it: a new loop starts from none taken)."""
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[OneStep])

    async def start(prefix: str) -> list[fsm.StartStatus]:
        made = [ex.start(OneStep(f"{prefix}{i:02d}")) for i in range(3 * TURN + 1)]
        return [r.status for r in await asyncio.gather(*made)]

    for prefix in ("a", "b"):
        assert asyncio.run(start(prefix)) == [fsm.StartStatus.STARTED] * (3 * TURN + 1)
    made = {f"{p}{i:02d}" for p in "ab" for i in range(3 * TURN + 1)}
    assert set(store.live_ids()) == made

"""A tiny crash-test scenario for tests/core/test_testing.py: payouts against a ledger file.

    python scenario_child.py FOLDER [--buggy] [--linger] [--slow]

``--buggy`` derives the effect's key from a fresh random value instead of the step's
idempotency key: the classic non-idempotent step, which crash enumeration must catch.
``--linger`` makes a driver that found nothing to do stay up for a few seconds before it
exits 0, as a driver that settles or reports before exiting does: killing it then
interrupts no work, and a soak must not count that as a kill survived. ``--slow`` makes
each payment take a moment, as a remote call does, so random kills can land on one.

`fsm.testing`'s crash runner drives it (and kills it, through ``FSM_CRASH`` or a SIGKILL
of its own): the store takes its hooks from the environment.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs
from actions import Ledger

import fsm


@attrs.frozen
class Pay(fsm.Action[Ledger]):
    name = "pay"
    label: str
    step: int = 0

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return ("reserve", "pay", "end")[self.step]

    async def advance(self, ctx: fsm.StepContext[Ledger]) -> fsm.Outcome:
        if self.step == 0:
            ctx.acquire(f"acct.{self.label}")
            return fsm.Next(attrs.evolve(self, step=1))
        key = f"{self.label}.pay.{uuid.uuid4().hex}" if BUGGY else ctx.idempotency_key
        await ctx.services.apply(key, self.label, "pay")
        return fsm.Done()


BUGGY = "--buggy" in sys.argv
LINGER_SECONDS = 1.5 if "--linger" in sys.argv else 0.0
PAY_SECONDS = 0.3 if "--slow" in sys.argv else 0.0


def setup(folder: Path) -> None:
    store = fsm.Store.sqlite(folder / "a.sqlite")
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Pay])

    async def start() -> None:
        for i in range(3):
            await ex.start(Pay(f"p{i}"))

    asyncio.run(start())
    store.close()


def ledger(folder: Path) -> Ledger:
    return Ledger.on_file(folder / "ledger.sqlite", pause=PAY_SECONDS)


async def drive(folder: Path) -> int:
    store = fsm.Store.sqlite(folder / "a.sqlite")
    ex: fsm.Executor[Any] = fsm.Executor(store, ledger(folder), kinds=[Pay])
    idle = not store.live_ids()
    await ex.resume_all()
    left = store.live_ids()
    store.close()
    if idle:
        await asyncio.sleep(LINGER_SECONDS)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(drive(Path(sys.argv[1]))))

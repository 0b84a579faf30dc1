"""A tiny crash-test scenario for tests/core/test_testing.py: transfers against a ledger file.

    python scenario_child.py FOLDER [--buggy] [--linger] [--slow]

The driver resumes the `actions.Transfer` s that `setup` started. ``--buggy`` gives each
effect a fresh random key instead of the step's idempotency key: the classic
non-idempotent step, which crash enumeration must catch. ``--linger`` makes a driver that
found nothing to do stay up for a few seconds before it exits 0, as a driver that settles
or reports before exiting does: killing it then interrupts no work, and a soak must not
count that as a kill survived. ``--slow`` makes each effect take a moment, as a remote call
does, so random kills can land on one.

`fsm.testing`'s crash runner drives it (and kills it, through ``FSM_CRASH`` or a SIGKILL
of its own): the store takes its hooks from the environment.
"""

from __future__ import annotations

import asyncio
import sys
import uuid
from pathlib import Path
from typing import Any

from actions import Ledger, Transfer, start_transfers

import fsm

TRANSFERS = 3
BUGGY = "--buggy" in sys.argv
LINGER_SECONDS = 1.5 if "--linger" in sys.argv else 0.0
EFFECT_SECONDS = 0.1 if "--slow" in sys.argv else 0.0


class FreshKeys(Ledger):
    """What the buggy step does: every call is a new effect, whatever its step's key."""

    async def apply(self, key: str, action_id: str, what: str) -> None:
        await super().apply(f"{key}.{uuid.uuid4().hex}", action_id, what)


def setup(folder: Path) -> None:
    store = fsm.Store.sqlite(folder / "a.sqlite")
    start_transfers(store, [f"t{i}" for i in range(TRANSFERS)])
    store.close()


def ledger(folder: Path) -> Ledger:
    return (FreshKeys if BUGGY else Ledger).on_file(folder / "ledger.sqlite", EFFECT_SECONDS)


async def drive(folder: Path) -> int:
    store = fsm.Store.sqlite(folder / "a.sqlite")
    ex: fsm.Executor[Any] = fsm.Executor(store, ledger(folder), kinds=[Transfer])
    idle = not store.live_ids()
    await ex.resume_all()
    left = store.live_ids()
    store.close()
    if idle:
        await asyncio.sleep(LINGER_SECONDS)
    return 1 if left else 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(drive(Path(sys.argv[1]))))

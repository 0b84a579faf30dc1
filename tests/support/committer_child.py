"""Drive every live `Together` action of a database, their steps in lock-step.

    python committer_child.py DB REPORT KEYS

DB is a SQLite file or a PostgreSQL URL (`fsm.open_store`).

Each step of every action waits at one barrier, so all drives reach their write in the same
turn of the event loop and the store's committer writes them as one batch. Every step a
drive was told is durable (``on_commit``) is appended to REPORT as ``id seq``; every
step's idempotency key, each time the step runs, to KEYS. Dies as ``FSM_CRASH`` says.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import attrs

import fsm
from fsm.store import LogEntry

STEPS = 3


class Barrier:
    """Every party's wait returns in the same turn of the loop (the last at once, the others
    in the next turn, before the committer's flush); `asyncio.Barrier` wakes them one by
    one, through its lock."""

    def __init__(self, parties: int) -> None:
        self.parties, self.count, self.event = parties, 0, asyncio.Event()

    async def wait(self) -> None:
        event = self.event
        self.count += 1
        if self.count == self.parties:
            self.count, self.event = 0, asyncio.Event()
            event.set()
        await event.wait()


@attrs.frozen
class Together(fsm.Action[Any]):
    """``STEPS`` steps; each waits until every live action's step has come to the barrier."""

    name = "together"
    label: str
    n: int = 0
    note: str = ""

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return f"s{self.n}"

    async def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        barrier, keys = ctx.services
        with open(keys, "a", encoding="ascii") as out:
            out.write(ctx.idempotency_key + "\n")
        await barrier.wait()
        if self.n + 1 >= STEPS:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))


async def main(db: str, report: str, keys: str) -> None:
    store = fsm.open_store(db)
    live = len(store.live_ids())
    with open(report, "a", encoding="ascii") as out:

        def reported(action_id: str, entry: LogEntry) -> None:
            out.write(f"{action_id} {entry.seq}\n")
            out.flush()  # in the kernel before the next step: a SIGKILL keeps it

        services = (Barrier(live), keys)
        ex = fsm.Executor(store, services, kinds=[Together], on_commit=reported)
        await ex.resume_all(concurrency=live)
    store.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))

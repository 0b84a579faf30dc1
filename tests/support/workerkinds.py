"""A kind for the worker tests: three slow steps, each with one effect on a shared ledger.

The ledger lives in the same database as the actions (PostgreSQL or SQLite), so every worker
process sees it. ``apply`` is idempotent per key, as a well-behaved remote is; it counts
calls so the tests can tell a replay from a second application.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import attrs

import fsm


class Ledger:
    def __init__(self, store: fsm.Store) -> None:
        self.db = store.db
        self.param = store.db.param
        self.db.execute_sql(
            "CREATE TABLE IF NOT EXISTS test_ledger (key VARCHAR(255) PRIMARY KEY, "
            "first_pid INTEGER NOT NULL, calls INTEGER NOT NULL)"
        )

    def apply(self, key: str) -> None:
        p = self.param
        self.db.execute_sql(
            f"INSERT INTO test_ledger (key, first_pid, calls) VALUES ({p}, {p}, 1) "
            "ON CONFLICT (key) DO UPDATE SET calls = test_ledger.calls + 1",
            (key, os.getpid()),
        )

    def rows(self) -> dict[str, int]:
        cur = self.db.execute_sql("SELECT key, calls FROM test_ledger")
        return {str(k): int(c) for k, c in cur.fetchall()}


def services(store: fsm.Store) -> Ledger:
    """The ``--services`` factory of ``fsm worker``."""
    return Ledger(store)


@attrs.frozen
class Job(fsm.Action[Ledger]):
    name = "job"
    label: str
    step: int = 0

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return f"step{self.step}"

    async def advance(self, ctx: fsm.StepContext[Ledger]) -> fsm.Outcome:
        await asyncio.sleep(float(os.environ.get("FSM_TEST_STEP_SECONDS", "0.02")))
        ctx.services.apply(ctx.idempotency_key)
        if self.step == 2:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, step=self.step + 1))


def start_jobs(store: fsm.Store, n: int) -> None:
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Job])

    async def start_all() -> None:
        for i in range(n):
            await ex.start(Job(f"job-{i:04d}"))

    asyncio.run(start_all())

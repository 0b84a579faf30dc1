"""The hand-written action kinds of the core, kind and CLI tests (child processes import them).

* `Script`: the puppet; each step does what the test put in ``ctx.services``.
* `one_step`: a one-step kind of any name and version (two teams' kinds, a kind after a
  release); `Held`: one step that lasts until the test opens its `Gate`.
* `Transfer`: three steps, each with one effect on a `Ledger`, the outside world's record.
  The ledger is a SQLite file of its own (`Ledger.on_file`) or a table in the store's own
  database (`Ledger.in_store`), which `fsm worker` processes on PostgreSQL all see; the
  worker loads it with ``--module actions --services actions:services``.
"""

from __future__ import annotations

import asyncio
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import attrs

import fsm

# ---- the outside world ------------------------------------------------------------------


class Ledger:
    """Every call of the outside world's ``apply``, with its idempotency key, pid and moment.

    A well-behaved remote applies a key once: `effects` says how many times each key was
    called, so a test can tell "applied once" from "attempted twice"; `overlaps` counts the
    calls for one action that were in flight at the same time (two drivers at once). Each
    call takes ``pause`` seconds, as a remote call does, so that drivers would overlap if
    their leases let them.
    """

    TABLE = (
        "CREATE TABLE IF NOT EXISTS ledger_call (key VARCHAR(255) NOT NULL, "
        "action_id VARCHAR(255) NOT NULL, what VARCHAR(64) NOT NULL, pid INTEGER NOT NULL, "
        "started DOUBLE PRECISION NOT NULL, ended DOUBLE PRECISION NOT NULL)"
    )

    def __init__(
        self, execute: Callable[[str, Sequence[Any]], Any], param: str, pause: float = 0.0
    ) -> None:
        self.execute, self.param, self.pause = execute, param, pause
        self.remote = param == "%s"
        """On PostgreSQL the record is a round trip (and a durable commit): it runs in a
        thread, as a client of a remote system would, so that it does not hold up the event
        loop's other drives; a local SQLite record takes microseconds and runs inline."""
        self.execute(self.TABLE, ())

    @classmethod
    def on_file(cls, path: str | os.PathLike[str], pause: float = 0.0) -> Ledger:
        conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        conn.execute("PRAGMA journal_mode=wal")
        return cls(conn.execute, "?", pause)

    @classmethod
    def in_store(cls, store: fsm.Store, pause: float = 0.0) -> Ledger:
        db = store.db

        def execute(sql: str, params: Sequence[Any]) -> Any:
            # A killed backend leaves this thread's connection closed, and peewee would
            # hand it out for ever: drop it, so that the statement opens a new one.
            if not db.is_closed() and getattr(db.connection(), "closed", False):
                db.close()
            return db.execute_sql(sql, params)

        return cls(execute, db.param, pause)

    async def apply(self, key: str, action_id: str, what: str) -> None:
        started = time.time()
        await asyncio.sleep(self.pause)
        p = self.param
        insert = f"INSERT INTO ledger_call VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
        values = (key, action_id, what, os.getpid(), started, time.time())
        if self.remote:
            await asyncio.to_thread(self.execute, insert, values)
        else:
            self.execute(insert, values)

    def effects(self) -> dict[str, int]:
        rows = self.execute("SELECT key, COUNT(*) FROM ledger_call GROUP BY key", ()).fetchall()
        return {str(key): int(calls) for key, calls in rows}

    def overlaps(self) -> int:
        sql = (
            "SELECT COUNT(*) FROM ledger_call a JOIN ledger_call b ON a.action_id = b.action_id "
            "AND a.started < b.started AND b.started < a.ended"
        )
        return int(self.execute(sql, ()).fetchone()[0])


def services(store: fsm.Store) -> Ledger:
    """The ``--services`` factory of ``fsm worker``: the ledger in the worker's database,
    each call taking ``FSM_TEST_STEP_SECONDS`` (0.02 unless set)."""
    return Ledger.in_store(store, float(os.environ.get("FSM_TEST_STEP_SECONDS", "0.02")))


def plain_keys(effects: dict[str, int]) -> dict[str, int]:
    """Effects by idempotency key without its incarnation (``t1~3f2a..0.2`` -> ``t1.2``).

    Each action here has one incarnation, so two keys that differ only in it would mean a
    step ran under two keys: refused.
    """
    out: dict[str, int] = {}
    for key, calls in effects.items():
        plain = re.sub(r"~[0-9a-f]{12}", "", key)
        assert plain not in out, f"{key}: the same step ran under two incarnations"
        out[plain] = calls
    return out


# ---- the kinds --------------------------------------------------------------------------


@attrs.frozen
class Script(fsm.Action[Any]):
    """Does whatever ``ctx.services[(label, n)]`` says at step ``n``; the test's puppet."""

    name = "script"
    label: str
    n: int = 0
    last: int = 3

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return f"s{self.n}"

    def advance(self, ctx: fsm.StepContext[Any]) -> Any:
        behaviour: Callable[[Script, fsm.StepContext[Any]], Any] | None = ctx.services.get(
            (self.label, self.n)
        )
        if behaviour is not None:
            result = behaviour(self, ctx)
            if result is not None:
                return result
        if self.n >= self.last:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, n=self.n + 1))

    def on_rejection(self, ctx: fsm.StepContext[Any], error: fsm.Rejected) -> Any:
        handler = ctx.services.get((self.label, "rejection"))
        if handler is not None:
            return handler(self, ctx, error)
        return super().on_rejection(ctx, error)

    def on_retry(self, ctx: fsm.StepContext[Any], attempts: int, error: BaseException) -> Any:
        handler = ctx.services.get((self.label, "retry"))
        if handler is not None:
            return handler(self, ctx, attempts, error)
        return super().on_retry(ctx, attempts, error)


@attrs.frozen
class OneStep(fsm.Action[Any]):
    """One step, then done. Make kinds of it with `one_step`."""

    name = "one_step"
    label: str

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Done()


def one_step(
    name: str, version: int = 1, upcasters: Mapping[int, fsm.Upcaster] | None = None
) -> type[OneStep]:
    """A one-step kind called ``name``: two names are two teams' kinds; the same name with a
    higher ``version`` (and its ``upcasters``) is that kind after a release."""
    body = {"name": name, "version": version, "upcasters": dict(upcasters or {})}
    return attrs.frozen(type(f"OneStep_{name}_v{version}", (OneStep,), body))


class Gate:
    """The services of `Held`: its step waits until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()


@attrs.frozen
class Held(OneStep):
    """A step that runs as long as the test wants (a long remote call)."""

    name = "held"

    async def advance(self, ctx: fsm.StepContext[Gate]) -> fsm.Outcome:
        ctx.services.entered.set()
        await ctx.services.open.wait()
        return fsm.Done()


@attrs.frozen
class Transfer(fsm.Action[Ledger]):
    """Three steps, each with one effect on the ledger; the first holds ``account.<label>``
    until the transfer ends."""

    name = "transfer"
    label: str
    step: int = 0

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return ("debit", "credit", "notify", "end")[self.step]

    async def advance(self, ctx: fsm.StepContext[Ledger]) -> fsm.Outcome:
        if self.step == 0:
            ctx.acquire(f"account.{self.label}")
        await ctx.services.apply(ctx.idempotency_key, self.label, self.state)
        if self.step == 2:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, step=self.step + 1))


def start_transfers(store: fsm.Store, labels: int | Iterable[str]) -> None:
    """Start transfers named ``labels`` (a number n: ``t0000`` to ``t{n-1:04d}``)."""
    if isinstance(labels, int):
        labels = [f"t{i:04d}" for i in range(labels)]
    ex: fsm.Executor[Any] = fsm.Executor(store, None, kinds=[Transfer])

    async def start_all() -> None:
        for label in labels:
            await ex.start(Transfer(label))

    asyncio.run(start_all())

"""Hand-written action kinds used by the core tests (also imported by child processes)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import attrs

import fsm


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


class Ledger:
    """The outside world's record of effects, keyed by idempotency key, in its own SQLite file.

    ``apply`` is idempotent per key (as a well-behaved remote would be) and counts every call,
    so a test can tell "applied once" from "attempted twice".
    """

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute("PRAGMA journal_mode=wal")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS effect (key TEXT PRIMARY KEY, action_id TEXT, what TEXT, "
            "calls INTEGER NOT NULL DEFAULT 1)"
        )
        self.conn.execute("CREATE TABLE IF NOT EXISTS inflight (action_id TEXT PRIMARY KEY)")
        self.conn.execute("CREATE TABLE IF NOT EXISTS overlap (action_id TEXT, pid INTEGER)")

    def apply(self, key: str, action_id: str, what: str) -> None:
        self.conn.execute(
            "INSERT INTO effect (key, action_id, what) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET calls = calls + 1",
            (key, action_id, what),
        )

    def enter(self, action_id: str) -> None:
        try:
            self.conn.execute("INSERT INTO inflight VALUES (?)", (action_id,))
        except sqlite3.IntegrityError:
            self.conn.execute("INSERT INTO overlap VALUES (?, ?)", (action_id, os.getpid()))

    def leave(self, action_id: str) -> None:
        self.conn.execute("DELETE FROM inflight WHERE action_id = ?", (action_id,))

    def effects(self) -> dict[str, int]:
        return dict(self.conn.execute("SELECT key, calls FROM effect").fetchall())

    def overlaps(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM overlap").fetchone()[0])


@attrs.frozen
class Script(fsm.Action[Any]):
    """Does whatever ``ctx.services[(name, n)]`` says at step ``n``; the test's puppet."""

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
class Other(fsm.Action[Any]):
    name = "other"
    label: str

    @property
    def id(self) -> str:
        return self.label

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Done()


@attrs.frozen
class Transfer(fsm.Action[Ledger]):
    """Three steps, each with one effect on the ledger; can crash right after an effect.

    ``FSM_TEST_CRASH=<step>`` kills the process with SIGKILL after that step's effect and
    before its checkpoint. ``FSM_TEST_SLOW`` makes each step hold for a moment so two
    drivers would overlap if the lease let them.
    """

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
        ledger = ctx.services
        ledger.enter(self.label)
        try:
            if os.environ.get("FSM_TEST_SLOW"):
                time.sleep(0.002)
                await asyncio.sleep(0.001)
            if self.step == 0:
                ctx.acquire(f"account.{self.label}")
            ledger.apply(ctx.idempotency_key, self.label, self.state)
            if os.environ.get("FSM_TEST_CRASH") == self.state:
                os.kill(os.getpid(), signal.SIGKILL)
        finally:
            ledger.leave(self.label)
        if self.step == 2:
            return fsm.Done()
        return fsm.Next(attrs.evolve(self, step=self.step + 1))

"""Expenses that wait for approvals sent while they are driven: events, crash and all.

Three expenses each wait in ``waiting`` until two approvers have approved it (each
approval an `Approval` event, `fsm.Executor.send`), then pay it. A sender thread, with a
store and an executor of its own as a web handler would have, sends every approval while
the main loop drives whatever is due. Every effect (an approval noted, an expense paid) is
written to a ledger, a separate SQLite file that applies an effect once per idempotency
key, as a real remote would.

    python examples/expenses.py              # start the expenses (on a new database) or
                                              # resume them, send the approvals, drive them
    python examples/expenses.py --fresh      # start over with new files

``TORTURE`` at the bottom describes this program to ``fsm torture --module
examples/expenses.py``: it kills it at every write point (the sender's among them: a send,
and a step that takes an event in its checkpoint's transaction) and at random, and checks
that no approval was lost or noted twice, and no expense paid twice.

Each approval is sent under its own key, so a program restarted after a crash sends them
all again and the inbox answers DUPLICATE (or FINISHED, to an expense already paid).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import sqlite3
import sys
import threading
from pathlib import Path

import attrs

import fsm
from fsm import Kind, State, StepContext
from fsm.store import is_transient
from fsm.testing import Scenario, check_invariants

EXPENSES = [("e0", 120), ("e1", 75), ("e2", 30)]
APPROVERS = ("ann", "bo")


class Ledger:
    """The outside world: one effect per idempotency key; a repeated key only counts."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS effect (key TEXT PRIMARY KEY, expense TEXT, what TEXT, "
            "requests INTEGER NOT NULL DEFAULT 1)"
        )

    def apply(self, key: str, expense: str, what: str) -> None:
        self.conn.execute(
            "INSERT INTO effect (key, expense, what) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET requests = requests + 1",
            (key, expense, what),
        )

    def effects(self) -> list[tuple[str, str, str]]:
        """(expense, what, key) of every effect applied, ordered by key (an expense's
        steps in order)."""
        rows = self.conn.execute("SELECT expense, what, key FROM effect ORDER BY key")
        return [(str(e), str(w), str(k)) for e, w, k in rows.fetchall()]


@attrs.frozen
class Approval:
    """An approver's yes, sent to the expense's action."""

    approver: str


@attrs.frozen
class Expense:
    expense_id: str
    amount: int
    approvers: tuple[str, ...] = ()


def note(ctx: StepContext[Ledger], e: Expense, approval: Approval) -> Expense:
    ctx.services.apply(ctx.idempotency_key, e.expense_id, f"approved by {approval.approver}")
    return attrs.evolve(e, approvers=(*e.approvers, approval.approver))


def approved(ctx: StepContext[Ledger], e: Expense) -> bool:
    return len(e.approvers) >= len(APPROVERS)


def pay(ctx: StepContext[Ledger], e: Expense) -> Expense:
    ctx.services.apply(ctx.idempotency_key, e.expense_id, f"paid {e.amount} after {e.approvers}")
    return e


class ExpenseKind(Kind[Expense, Ledger]):
    """Waits for its approvals (events), then pays."""

    name = "expense"

    waiting = State.wait(initial=True)
    paid = State.done()

    transitions = (
        waiting.to(waiting, on=Approval, effect=note),
        waiting.to(paid, guard=approved, effect=pay),
    )

    @staticmethod
    def action_id(e: Expense) -> str:
        return f"expense.{e.expense_id}"


def send_approvals(db: Path, failures: list[str]) -> None:
    """The sender: every approval, in order, through a store and executor of its own. A
    send that failed on a database error that can pass is sent again under the same key:
    if the first had been stored after all, the inbox answers DUPLICATE."""

    async def send(executor: fsm.Executor[None], expense_id: str, approver: str) -> None:
        action_id, key = f"expense.{expense_id}", f"{expense_id}:{approver}"
        for attempt in range(SEND_ATTEMPTS):
            try:
                sent = await executor.send(action_id, Approval(approver), key=key)
            except Exception as exc:
                if not is_transient(exc):
                    raise
                await asyncio.sleep(min(0.2, 0.005 * 2**attempt))
                continue
            if sent.status not in SENT:
                failures.append(f"{action_id}: {sent.status.value} {sent.detail}")
            return
        failures.append(f"{action_id}: no send of {key!r} went through")

    async def run() -> None:
        store = fsm.Store.sqlite(db)
        executor: fsm.Executor[None] = fsm.Executor(store, kinds=[ExpenseKind])
        try:
            for approver in APPROVERS:
                for expense_id, _ in EXPENSES:
                    await send(executor, expense_id, approver)
        finally:
            store.close()

    try:
        asyncio.run(run())
    except Exception as exc:  # the main loop sees the failure and exits 1: run again
        failures.append(f"the sender failed: {exc!r}")


SEND_ATTEMPTS = 30
SENT = (fsm.SendStatus.SENT, fsm.SendStatus.DUPLICATE, fsm.SendStatus.FINISHED)
"""What a send (or a send again after a restart) may answer."""


async def drive_until_paid(store: fsm.Store, executor: fsm.Executor[Ledger],
                           sender: threading.Thread, failures: list[str]) -> bool:  # fmt: skip
    """Drive what is due (the starts, and every expense an approval reached) until every
    expense is paid; False when that cannot happen in this run (the sender gave up, or
    it is done and expenses wait with no wake-up: an approval was lost).

    An expense waits with no wake-up of its own: only a send makes it due, so this loop
    claims nothing while nothing was sent.
    """
    while True:
        done_sending = not sender.is_alive()
        try:
            if not store.live_ids():
                return True
            if failures and done_sending:
                return False
            report = await executor.run_due()
            if done_sending and not sum(report.counts.values()) and store.next_wake() is None:
                return False  # every expense waits for an approval no one will send
        except Exception as exc:
            if not is_transient(exc):  # a database error that can pass: look again
                raise
        await asyncio.sleep(0.005)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Expenses that wait for approvals.")
    parser.add_argument("--dir", default=".", help="where the two SQLite files live")
    parser.add_argument("--fresh", action="store_true", help="delete earlier files first")
    parser.add_argument("--start-only", action="store_true", help="start the expenses and exit")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    db, ledger_db = folder / "expenses.sqlite", folder / "expenses-ledger.sqlite"
    if args.fresh:
        for path in folder.glob("expenses*.sqlite*"):
            path.unlink()

    new = not db.exists()
    store = fsm.Store.sqlite(db)
    executor = fsm.Executor(store, Ledger(ledger_db), kinds=[ExpenseKind])
    if new:
        for expense_id, amount in EXPENSES:
            await executor.start(ExpenseKind.create(Expense(expense_id, amount)))
        if args.start_only:
            store.close()
            return 0

    failures: list[str] = []
    sender = threading.Thread(target=send_approvals, args=(db, failures))
    sender.start()
    try:
        paid = await drive_until_paid(store, executor, sender, failures)
    finally:
        sender.join()
    for line in failures:
        print(f"send: {line}", file=sys.stderr)
    for expense, what, key in Ledger(ledger_db).effects():
        print(f"  expense.{expense}: {what} (key {key})")
    store.close()
    if not paid:
        print("expenses still wait: run again", file=sys.stderr)
    return 0 if paid and not failures else 1


def _check(folder: Path) -> list[str]:
    """After a finished run: every approval noted once, in the order sent, and every
    expense paid once after both; fsm's invariants; nothing left in flight."""
    problems = []
    applied: dict[tuple[str, str], int] = {}
    for expense, what, _ in Ledger(folder / "expenses-ledger.sqlite").effects():
        applied[expense, what] = applied.get((expense, what), 0) + 1
    expected = {(e, f"approved by {a}"): 1 for e, _ in EXPENSES for a in APPROVERS}
    expected |= {(e, f"paid {amount} after {APPROVERS}"): 1 for e, amount in EXPENSES}
    if applied != expected:
        lost = sorted(set(expected) - set(applied))
        twice = sorted(k for k, n in applied.items() if n > 1 or k not in expected)
        problems.append(f"ledger: missing {lost}, more than once or unexpected {twice}")
    problems += _fsm_checks(folder)
    store = fsm.Store.sqlite(folder / "expenses.sqlite")
    if store.rows():
        problems.append(f"{len(store.rows())} expense(s) still live")
    store.close()
    return problems


def _fsm_checks(folder: Path) -> list[str]:
    """fsm's invariants, the inbox's among them (checked after every kill too, while the
    actions and their events are still there)."""
    store = fsm.Store.sqlite(folder / "expenses.sqlite")
    try:
        return check_invariants(store, [ExpenseKind])
    finally:
        store.close()


def _setup(folder: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        asyncio.run(main(["--dir", str(folder), "--start-only"]))


TORTURE = Scenario(
    name="expenses",
    setup=_setup,
    driver=lambda folder: [sys.executable, __file__, "--dir", str(folder)],
    database=lambda folder: f"sqlite:///{folder / 'expenses.sqlite'}",
    check=_check,
    after_kill=_fsm_checks,
)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""A hand-written durable action, driven to the end on a SQLite file, crash and all.

Three payouts each go through ``reserve -> send -> confirm``. The bank is a separate SQLite
file that applies a transfer once per idempotency key, as a real payment API would.

    python examples/payout.py              # start three payouts (on a new database) or
                                           # resume the ones in flight, until every one is done
    python examples/payout.py --crash      # die with SIGKILL right after the first transfer,
                                           # before its checkpoint is saved; run again to resume
    python examples/payout.py --fresh      # start over with new files

``TORTURE`` at the bottom describes this program to ``fsm torture --module
examples/payout.py``, which kills it at every write point and checks nothing was lost.

Run it with ``--crash``, then without: the second run picks up the checkpoints of the first
and the bank ledger still shows every transfer exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import os
import signal
import sqlite3
import sys
from pathlib import Path

import attrs

import fsm
from fsm.testing import Scenario, check_invariants


class Bank:
    """The outside world: transfers keyed by idempotency key, confirmed on the second look."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS transfer (key TEXT PRIMARY KEY, account TEXT, "
            "amount INTEGER, looks INTEGER NOT NULL DEFAULT 0, requests INTEGER DEFAULT 1)"
        )

    def transfer(self, key: str, account: str, amount: int) -> None:
        self.conn.execute(
            "INSERT INTO transfer (key, account, amount) VALUES (?, ?, ?) "
            "ON CONFLICT (key) DO UPDATE SET requests = requests + 1",
            (key, account, amount),
        )

    def confirmed(self, key: str) -> bool:
        self.conn.execute("UPDATE transfer SET looks = looks + 1 WHERE key = ?", (key,))
        row = self.conn.execute("SELECT looks FROM transfer WHERE key = ?", (key,)).fetchone()
        return row is not None and row[0] >= 2

    def statement(self) -> list[tuple[str, str, int, int]]:
        return self.conn.execute(
            "SELECT key, account, amount, requests FROM transfer ORDER BY key"
        ).fetchall()


PAYOUTS = [("alice", 120), ("bob", 75), ("carol", 30)]


@attrs.frozen
class Services:
    bank: Bank
    crash: bool


@attrs.frozen
class Payout(fsm.Action[Services]):
    """Pay ``amount`` to ``account``: reserve the account, send, wait for confirmation."""

    name = "payout"
    payout_id: str
    account: str
    amount: int
    phase: str = "reserve"
    transfer_key: str | None = None

    @property
    def id(self) -> str:
        return f"payout.{self.payout_id}"

    @property
    def state(self) -> str:
        return self.phase

    async def advance(self, ctx: fsm.StepContext[Services]) -> fsm.Outcome:
        bank = ctx.services.bank
        if self.phase == "reserve":
            ctx.acquire(f"account.{self.account}")  # one payout per account at a time
            return fsm.Next(attrs.evolve(self, phase="send"))
        if self.phase == "send":
            key = ctx.idempotency_key  # the same on every re-run of this step
            bank.transfer(key, self.account, self.amount)
            print(f"  {self.id}: sent {self.amount} to {self.account} (key {key})")
            if ctx.services.crash:
                print(f"  {self.id}: crashing on purpose before the checkpoint is saved")
                sys.stdout.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return fsm.Next(attrs.evolve(self, phase="confirm", transfer_key=key))
        assert self.transfer_key is not None
        if bank.confirmed(self.transfer_key):
            print(f"  {self.id}: confirmed")
            return fsm.Done()
        return fsm.Park(self, wake_after=0.2)  # not yet: look again shortly


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Durable payouts on a SQLite file.")
    parser.add_argument("--dir", default=".", help="where the two SQLite files live")
    parser.add_argument("--crash", action="store_true", help="SIGKILL after the first transfer")
    parser.add_argument("--fresh", action="store_true", help="delete earlier files first")
    parser.add_argument("--start-only", action="store_true", help="start the payouts and exit")
    args = parser.parse_args(argv)
    folder = Path(args.dir)
    db, bank_db = folder / "payout.sqlite", folder / "payout-bank.sqlite"
    if args.fresh:
        for path in folder.glob("payout*.sqlite*"):
            path.unlink()

    new = not db.exists()
    store = fsm.Store.sqlite(db)
    services = Services(Bank(bank_db), crash=args.crash)
    executor = fsm.Executor(store, services, kinds=[Payout])

    if new:
        print(f"starting 3 payouts in {db}")
        for n, (account, amount) in enumerate(PAYOUTS):
            await executor.start(Payout(f"p{n}", account, amount))
        if args.start_only:
            store.close()
            return 0
    else:
        live = store.rows()
        print(f"resuming {len(live)} payout(s) from {db}: " + ", ".join(r.state for r in live))

    for row in store.rows():
        result = await executor.drive(row.id, fsm.DriveMode.UNTIL_DONE)
        print(f"  {row.id}: {result.status.value} after {result.steps} step(s)")

    print("bank statement (key, account, amount, requests received):")
    for line in services.bank.statement():
        print("  ", *line)
    left = store.rows()
    store.close()
    if left:
        print(f"{len(left)} payout(s) still live")
        return 1
    print("all payouts done; each transfer was applied once")
    return 0


def _check(folder: Path) -> list[str]:
    """After a finished run: each payout paid exactly once, nothing left in flight."""
    problems = []
    bank = Bank(folder / "payout-bank.sqlite")
    paid = sorted((account, amount) for _, account, amount, _ in bank.statement())
    if paid != sorted(PAYOUTS):
        problems.append(f"bank paid {paid}, expected each of {sorted(PAYOUTS)} once")
    store = fsm.Store.sqlite(folder / "payout.sqlite")
    problems += check_invariants(store, [Payout])
    if store.rows():
        problems.append(f"{len(store.rows())} payout(s) still live")
    store.close()
    return problems


def _setup(folder: Path) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        asyncio.run(main(["--dir", str(folder), "--start-only"]))


TORTURE = Scenario(
    name="payout",
    setup=_setup,
    driver=lambda folder: [sys.executable, __file__, "--dir", str(folder)],
    database=lambda folder: f"sqlite:///{folder / 'payout.sqlite'}",
    check=_check,
)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

"""A payout batch fanned out into child actions, one per payout, and gathered back.

The batch spawns one ``payout_item`` action per line (``ctx.spawn``) in the step that writes
its own checkpoint, then waits: each child's end arrives as a `fsm.ChildEnded` event, which
the batch records (``waiting.to(waiting, on=ChildEnded, effect=record)``); once every child
is recorded, a plain row with a guard (``all_recorded``) ends the batch with a summary. A
child is an ordinary action: it retries a flaky bank with backoff, and a refusal, or a retry
budget spent, ends it failed, which its parent hears about like any other end.

Run it: ``python examples/payouts.py [--db URL]``: a new SQLite file in a temporary folder
by default, ``--db postgresql://...`` for PostgreSQL. The clock is fake (a backoff of minutes
takes no time) and a loop standing in for ``fsm worker`` drives whatever is due, several
actions at once. docs/events.md walks through it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import attrs

import fsm
from fsm import ChildEnded, Kind, RetryPolicy, State, StepContext

# -- the outside world ---------------------------------------------------------------------------


@attrs.define
class FakeBank:
    """Applies a transfer once per idempotency key, and keeps what the batches reported.

    Accounts behave by name: ``closed-*`` refuse every transfer (`fsm.Rejected`);
    ``flaky-*`` time out twice, then pay; ``down-*`` always time out; anything else pays.
    """

    transfers: dict[str, tuple[str, int]] = attrs.field(factory=dict)
    reports: dict[str, str] = attrs.field(factory=dict)
    _timeouts: dict[str, int] = attrs.field(factory=dict)

    async def transfer(self, key: str, account: str, amount: int) -> str:
        await asyncio.sleep(0)  # a network call
        if key in self.transfers:
            return key
        if account.startswith("closed-"):
            raise fsm.Rejected(f"account {account} is closed", code="closed")
        tries = self._timeouts.get(account, 0)
        if account.startswith("down-") or (account.startswith("flaky-") and tries < 2):
            self._timeouts[account] = tries + 1
            raise TimeoutError(f"bank timed out paying {account}")
        self.transfers[key] = (account, amount)
        return key

    def report(self, batch_id: str, text: str) -> None:
        self.reports[batch_id] = text


# -- the child: one payout -----------------------------------------------------------------------


@attrs.frozen
class Payout:
    batch_id: str
    index: int
    account: str
    amount: int
    transfer: str | None = None


async def pay(ctx: StepContext[FakeBank], p: Payout) -> Payout:
    transfer = await ctx.services.transfer(ctx.idempotency_key, p.account, p.amount)
    return attrs.evolve(p, transfer=transfer)


class PayoutKind(Kind[Payout, FakeBank]):
    name = "payout_item"
    retry = RetryPolicy(base=30.0, cap=600.0, max_attempts=4)  # 30 s, 2 min, 4.5 min, ...

    start = State(initial=True, doc="transfer the amount")
    paid = State.done()
    refused = State.failed()

    transitions = (
        start.to(paid, effect=pay),
        start.rejected(to=refused),  # a refusal, or the retry budget spent
    )

    @staticmethod
    def action_id(p: Payout) -> str:
        # a child's id derives from its parent's and its place: a step re-run after a crash
        # spawns the same ids, which the database refuses to start twice
        return f"{p.batch_id}.{p.index}"


# -- the parent: the batch -----------------------------------------------------------------------


@attrs.frozen
class Line:
    account: str
    amount: int


@attrs.frozen
class Result:
    """A child's end as the batch recorded it (from its `fsm.ChildEnded`)."""

    child: str
    status: str
    error: str | None = None


@attrs.frozen
class Batch:
    batch_id: str
    lines: tuple[Line, ...]
    children: tuple[str, ...] = ()
    results: tuple[Result, ...] = ()


def spawn_payouts(ctx: StepContext[FakeBank], batch: Batch) -> Batch:
    children = tuple(
        ctx.spawn(PayoutKind.create(Payout(batch.batch_id, i, line.account, line.amount)))
        for i, line in enumerate(batch.lines)
    )
    return attrs.evolve(batch, children=children)


def record(ctx: StepContext[FakeBank], batch: Batch, ended: ChildEnded) -> Batch:
    if ended.child not in batch.children or any(r.child == ended.child for r in batch.results):
        return batch  # not one of ours, or recorded already: taken, and changes nothing
    return attrs.evolve(
        batch, results=(*batch.results, Result(ended.child, ended.status, ended.error))
    )


def all_recorded(ctx: StepContext[FakeBank], batch: Batch) -> bool:
    return len(batch.results) == len(batch.children)


def all_paid(ctx: StepContext[FakeBank], batch: Batch) -> bool:
    return all_recorded(ctx, batch) and all(r.status == "done" for r in batch.results)


def summarise(ctx: StepContext[FakeBank], batch: Batch) -> Batch:
    amounts = {child: line.amount for child, line in zip(batch.children, batch.lines, strict=True)}
    paid = [r for r in batch.results if r.status == "done"]
    failed = sorted((r for r in batch.results if r.status != "done"), key=lambda r: r.child)
    text = (
        f"{len(paid)} of {len(batch.children)} paid, "
        f"{sum(amounts[r.child] for r in paid)} of {sum(amounts.values())}"
    )
    text += "".join(f"\n  {r.child}: {r.status}: {r.error}" for r in failed)
    ctx.services.report(batch.batch_id, text)
    return batch


class PayoutBatchKind(Kind[Batch, FakeBank]):
    name = "payout_batch"

    start = State(initial=True, doc="spawn one payout per line")
    waiting = State.wait(doc="record each payout's end")
    paid = State.done(doc="every payout paid")
    partly_paid = State.done(doc="some payouts failed: see the report")

    transitions = (
        start.to(waiting, effect=spawn_payouts),
        # events first: each ChildEnded is taken by this row, one per step...
        waiting.to(waiting, on=ChildEnded, effect=record),
        # ...then the plain rows, once no event is pending
        waiting.to(paid, guard=all_paid, effect=summarise),
        waiting.to(partly_paid, guard=all_recorded, effect=summarise),
    )

    @staticmethod
    def action_id(batch: Batch) -> str:
        return batch.batch_id


# -- the demo ------------------------------------------------------------------------------------


class FakeClock:
    """The executor's clock: the demo moves it to the next wake-up when nothing is due."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


BATCH = Batch(
    "batch-2024-06",
    (
        Line("alice", 120),
        Line("flaky-bob", 75),
        Line("closed-carol", 30),
        Line("dave", 200),
        Line("down-erin", 55),
        Line("frank", 90),
    ),
)


async def run(url: str) -> FakeBank:
    bank = FakeBank()
    clock = FakeClock()
    store = fsm.open_store(url)
    kinds = [PayoutBatchKind, PayoutKind]
    executor = fsm.Executor(store, bank, kinds=kinds, clock=clock)
    await executor.start(PayoutBatchKind.create(BATCH))
    # what `fsm worker` does: drive what is due, several at once; sleep until the next wake-up
    while (wake := store.next_wake()) is not None:
        clock.now = max(clock.now, wake)
        await executor.run_due(concurrency=4)
    report = await executor.inspect(PayoutBatchKind.action_id(BATCH))
    assert report is not None
    print(f"{report.id}: {report.status.value} in state {report.state}")
    for child in (PayoutKind.action_id(Payout(BATCH.batch_id, i, "", 0)) for i in range(6)):
        ended = await executor.inspect(child)
        assert ended is not None
        print(f"  {ended.id}: {ended.status.value} in state {ended.state}")
    store.close()
    return bank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    args = parser.parse_args()
    url = args.db or str(Path(tempfile.mkdtemp(prefix="fsm-payouts-")) / "payouts.sqlite")
    bank = asyncio.run(run(url))
    print(f"report of {BATCH.batch_id}: {bank.reports[BATCH.batch_id]}")
    print(f"transfers applied: {len(bank.transfers)}")
    print(f"database: {url}")


if __name__ == "__main__":
    main()

"""Declarative kinds driven by the real executor on a SQLite file."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import attrs

import fsm
from fsm import DriveMode, DriveStatus, Kind, RetryPolicy, State, StepContext


def plain(ledger: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The ledger with keys stripped of their incarnation (``pay-1~3f..0.1`` -> ``pay-1.1``)."""
    return [(what, re.sub(r"~[0-9a-f]{12}", "", key)) for what, key in ledger]


@attrs.frozen
class Pay:
    pay_id: str
    amount: int
    charged: bool = False


class Bank:
    """Records every effect; fails the way it is told to."""

    def __init__(self, *, reject: bool = False, timeouts: int = 0) -> None:
        self.reject = reject
        self.timeouts = timeouts
        self.arrived = False
        self.ledger: list[tuple[str, str]] = []

    async def charge(self, key: str) -> None:
        await asyncio.sleep(0)
        if self.timeouts > 0:
            self.timeouts -= 1
            raise TimeoutError("bank timed out")
        if self.reject:
            raise fsm.Rejected("insufficient funds", code="funds")
        self.ledger.append(("charge", key))


def hold(ctx: StepContext[Bank], p: Pay) -> Pay:
    ctx.acquire(f"account:{p.pay_id}")
    ctx.services.ledger.append(("hold", ctx.idempotency_key))
    return p


async def charge(ctx: StepContext[Bank], p: Pay) -> Pay:
    await ctx.services.charge(ctx.idempotency_key)
    return attrs.evolve(p, charged=True)


def settled(ctx: StepContext[Bank], p: Pay) -> bool:
    return ctx.services.arrived


def unhold(ctx: StepContext[Bank], p: Pay) -> Pay:
    ctx.release(f"account:{p.pay_id}")
    ctx.services.ledger.append(("unhold", ctx.idempotency_key))
    return p


class PayKind(Kind[Pay, Bank]):
    name = "pay"

    start = State(initial=True)
    charging = State(retry=RetryPolicy(base=1.0, max_attempts=3))
    settling = State.wait()
    undo = State()
    paid = State.done()
    refused = State.failed()

    transitions = (
        start.to(charging, effect=hold),
        charging.to(settling, effect=charge),
        settling.to(paid, guard=settled),
        undo.to(refused, effect=unhold),
        charging.rejected(to=undo),
    )

    @staticmethod
    def action_id(p: Pay) -> str:
        return f"pay-{p.pay_id}"


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def executor(store: fsm.Store, bank: Bank, time: FakeTime) -> fsm.Executor[Bank]:
    return fsm.Executor(store, bank, kinds=[PayKind], clock=time.clock, sleep=time.sleep)


def steps(store: fsm.Store, action_id: str) -> list[tuple[Any, ...]]:
    return [(t.from_state, t.to_state, t.outcome, t.via) for t in store.transitions(action_id)]


def test_driven_to_done_through_a_wait_state(store: fsm.Store) -> None:
    bank, time = Bank(), FakeTime()
    ex = executor(store, bank, time)

    async def go() -> tuple[fsm.DriveResult, fsm.DriveResult]:
        await ex.start(PayKind.create(Pay("1", 500)))
        parked = await ex.drive("pay-1")
        assert store.all_resources() == {"account:1": "pay-1"}
        bank.arrived = True
        return parked, await ex.notify("pay-1")

    parked, done = asyncio.run(go())
    assert (parked.status, parked.state, parked.error) == (DriveStatus.PARKED, "settling", None)
    assert done.status is DriveStatus.DONE
    assert store.row("pay-1") is None
    assert store.all_resources() == {}
    assert plain(bank.ledger) == [("hold", "pay-1.0"), ("charge", "pay-1.1")]
    assert steps(store, "pay-1") == [
        ("start", "charging", "next", "step"),
        ("charging", "settling", "next", "step"),
        ("settling", "settling", "park", "step"),
        ("settling", None, "done", "step"),
    ]


def test_rejection_is_routed_to_the_compensating_state(store: fsm.Store) -> None:
    bank, time = Bank(reject=True), FakeTime()
    ex = executor(store, bank, time)

    async def go() -> fsm.DriveResult:
        await ex.start(PayKind.create(Pay("2", 700)))
        return await ex.drive("pay-2", DriveMode.UNTIL_DONE)

    result = asyncio.run(go())
    assert result.status is DriveStatus.FAILED
    assert "failed state 'refused'" in str(result.error)
    assert plain(bank.ledger) == [("hold", "pay-2.0"), ("unhold", "pay-2.2")]
    assert steps(store, "pay-2") == [
        ("start", "charging", "next", "step"),
        ("charging", "undo", "next", "rejection"),
        ("undo", None, "failed", "step"),
    ]
    assert store.all_resources() == {}


def test_retry_budget_exhausted_takes_the_route(store: fsm.Store) -> None:
    bank, time = Bank(timeouts=10), FakeTime()
    ex = executor(store, bank, time)

    async def go() -> fsm.DriveResult:
        await ex.start(PayKind.create(Pay("3", 900)))
        return await ex.drive("pay-3", DriveMode.UNTIL_DONE)

    result = asyncio.run(go())
    assert result.status is DriveStatus.FAILED
    assert time.slept == [1.0, 4.0]  # attempts 1 and 2 back off; the third spends the budget
    assert bank.timeouts == 7
    assert [s[2:] for s in steps(store, "pay-3")] == [
        ("next", "step"),
        ("park", "retry"),
        ("park", "retry"),
        ("next", "retry"),
        ("failed", "step"),
    ]
    assert ("unhold", "pay-3.2") in plain(bank.ledger)


def test_transient_errors_then_success(store: fsm.Store) -> None:
    bank, time = Bank(timeouts=2), FakeTime()
    bank.arrived = True
    ex = executor(store, bank, time)

    async def go() -> fsm.DriveResult:
        await ex.start(PayKind.create(Pay("4", 100)))
        return await ex.drive("pay-4", DriveMode.UNTIL_DONE)

    result = asyncio.run(go())
    assert result.status is DriveStatus.DONE
    assert time.slept == [1.0, 4.0]
    assert ("charge", "pay-4.1") in plain(bank.ledger)


def test_row_with_an_unknown_state_is_quarantined(store: fsm.Store) -> None:
    bank, time = Bank(), FakeTime()
    ex = executor(store, bank, time)

    async def go() -> tuple[fsm.DriveResult, fsm.DriveResult]:
        await ex.start(PayKind.create(Pay("5", 1)))
        await ex.start(PayKind.create(Pay("6", 1)))
        store.db.execute_sql("UPDATE fsm_action SET state = 'renamed' WHERE id = 'pay-5'")
        return await ex.drive("pay-5"), await ex.drive("pay-6")

    bad, good = asyncio.run(go())
    assert bad.status is DriveStatus.QUARANTINED
    assert "state 'renamed': unknown state" in str(bad.error)
    [row] = store.quarantined()
    assert row.id == "pay-5"
    assert "unknown state" in (row.quarantine or "")
    assert (good.status, good.state) == (DriveStatus.PARKED, "settling")


def test_sync_executor_runs_a_kind(store: fsm.Store) -> None:
    bank = Bank()
    bank.arrived = True
    with fsm.SyncExecutor(store, bank, kinds=[PayKind]) as ex:
        assert ex.start(PayKind.create(Pay("7", 1)))
        assert not ex.start(PayKind.create(Pay("7", 1)))  # idempotent
        assert ex.drive("pay-7").status is DriveStatus.DONE

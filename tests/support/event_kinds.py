"""Kinds the event tests send to: an approval that waits for a decision (with a deadline),
a kind with a queued-then-accepted event, and a payout batch that fans out into children.

`Book` records every effect with its idempotency key, so a test can tell an effect applied
once from one applied twice.
"""

from __future__ import annotations

import attrs

import fsm
from fsm import ChildEnded, Kind, State, StepContext


@attrs.frozen
class Approve:
    by: str


@attrs.frozen
class Reject:
    why: str


@attrs.frozen
class Note:
    text: str


class Book:
    """The outside world: (what, key, detail) of every effect."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str]] = []


@attrs.frozen
class Request:
    rid: str
    approver: str | None = None
    notes: tuple[str, ...] = ()
    hours: float = 72.0


def approved(ctx: StepContext[Book], r: Request, e: Approve) -> Request:
    ctx.services.calls.append(("approve", ctx.idempotency_key, e.by))
    return attrs.evolve(r, approver=e.by)


def noted(ctx: StepContext[Book], r: Request, e: Note) -> Request:
    ctx.services.calls.append(("note", ctx.idempotency_key, e.text))
    return attrs.evolve(r, notes=(*r.notes, e.text))


def not_by_mallory(ctx: StepContext[Book], r: Request, e: Approve) -> bool:
    return e.by != "mallory"


def deadline_of(r: Request) -> float:
    return r.hours * 3600


class ApprovalKind(Kind[Request, Book]):
    """Waits for a decision; notes may come any time while it waits (a self-transition keeps
    the deadline); no decision within ``hours``: escalated."""

    name = "approval"
    escalated = State.failed(doc="no decision in time")
    waiting = State.wait(initial=True, timeout=deadline_of, on_timeout=escalated)
    approved_ = State.done()
    rejected = State.failed()

    transitions = (
        waiting.to(approved_, on=Approve, guard=not_by_mallory, effect=approved),
        waiting.to(rejected, on=Reject),
        waiting.to(waiting, on=Note, effect=noted),
    )

    @staticmethod
    def action_id(r: Request) -> str:
        return f"approval-{r.rid}"


@attrs.frozen
class Order:
    oid: str
    paid: bool = False
    shipped_by: str | None = None


def pay(ctx: StepContext[Book], o: Order) -> Order:
    ctx.services.calls.append(("pay", ctx.idempotency_key, o.oid))
    return attrs.evolve(o, paid=True)


def is_paid(ctx: StepContext[Book], o: Order) -> bool:
    return ("paid", o.oid, "") in ctx.services.calls


@attrs.frozen
class Ship:
    carrier: str


def ship(ctx: StepContext[Book], o: Order, e: Ship) -> Order:
    ctx.services.calls.append(("ship", ctx.idempotency_key, e.carrier))
    return attrs.evolve(o, shipped_by=e.carrier)


class OrderKind(Kind[Order, Book]):
    """A `Ship` sent while the order waits for its payment is not taken until the order is
    paid: it stays queued."""

    name = "event_order"
    awaiting_payment = State.wait(initial=True)
    paying = State()
    ready = State.wait()
    shipped = State.done()

    transitions = (
        awaiting_payment.to(paying, guard=is_paid),
        paying.to(ready, effect=pay),
        ready.to(shipped, on=Ship, effect=ship),
    )

    @staticmethod
    def action_id(o: Order) -> str:
        return f"order-{o.oid}"


@attrs.frozen
class Payout:
    pid: str
    amount: int


def payout_guard(ctx: StepContext[Book], p: Payout) -> bool:
    return p.amount < 0


def send_money(ctx: StepContext[Book], p: Payout) -> Payout:
    ctx.services.calls.append(("payout", ctx.idempotency_key, p.pid))
    return p


class PayoutKind(Kind[Payout, Book]):
    name = "payout"
    paying = State(initial=True)
    paid = State.done()
    refused = State.failed()
    transitions = (paying.to(refused, guard=payout_guard), paying.to(paid, effect=send_money))

    @staticmethod
    def action_id(p: Payout) -> str:
        return p.pid


@attrs.frozen
class Batch:
    bid: str
    amounts: tuple[int, ...]
    children: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()


def fan_out(ctx: StepContext[Book], b: Batch) -> Batch:
    ids = tuple(
        ctx.spawn(PayoutKind.create(Payout(f"{b.bid}.{i}", amount)))
        for i, amount in enumerate(b.amounts)
    )
    return attrs.evolve(b, children=ids)


def record(ctx: StepContext[Book], b: Batch, e: ChildEnded) -> Batch:
    return attrs.evolve(b, ended=(*b.ended, f"{e.child}:{e.status}:{e.state}"))


def all_ended(ctx: StepContext[Book], b: Batch) -> bool:
    return len(b.ended) == len(b.children)


class BatchKind(Kind[Batch, Book]):
    name = "payout_batch"
    fanning = State(initial=True)
    waiting = State.wait()
    done = State.done()
    transitions = (
        fanning.to(waiting, effect=fan_out),
        waiting.to(waiting, on=ChildEnded, effect=record),
        waiting.to(done, guard=all_ended),
    )

    @staticmethod
    def action_id(b: Batch) -> str:
        return b.bid


KINDS = (ApprovalKind, OrderKind, PayoutKind, BatchKind)


def executor(store: fsm.Store, book: Book, **kwargs: object) -> fsm.Executor[Book]:
    return fsm.Executor(store, book, kinds=KINDS, **kwargs)  # type: ignore[arg-type]

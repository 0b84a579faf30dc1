"""The kinds the control tests cancel, retry and stop (child processes and the CLI load them).

`BookingKind` reserves a seat (one step, `Desk.hold`, which the test can make fail or keep
waiting), then waits for a confirmation (a notify); a cancel before the seat is held ends it
at once, after it runs the compensation (`releasing`, which gives the seat back). The
``releasing`` state has no cancel route. `Pass` is a hand-written action with an
``on_cancel`` hook.

Services: `Desk` in process (faults and a gate the test opens), `StdinDesk` in a child
process (``hold`` says ``stepping`` on stdout and returns when the test writes a line).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import attrs

import fsm
from fsm import Kind, State, StepContext


@attrs.frozen
class Booking:
    ref: str
    held: bool = False
    released: bool = False


class Desk:
    """The outside world of a booking: every call with its idempotency key.

    ``fault``: an exception ``hold`` raises (a ``TypeError`` breaks the step, an ``OSError``
    is transient); ``gate``: while set and not open, ``hold`` waits on it, having set
    ``entered`` (the step is running: its driver holds the lease).
    """

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []
        self.fault: BaseException | None = None
        self.gate: asyncio.Event | None = None
        self.entered = asyncio.Event()
        self.confirmed = False

    async def hold(self, key: str) -> None:
        self.calls.append(("hold", key))
        self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.fault is not None:
            raise self.fault

    def give_back(self, key: str) -> None:
        self.calls.append(("give_back", key))


class StdinDesk(Desk):
    """`Desk` for a child process: ``hold`` prints ``stepping`` and waits for a line on stdin."""

    async def hold(self, key: str) -> None:
        self.calls.append(("hold", key))
        print("stepping", flush=True)
        await asyncio.to_thread(sys.stdin.readline)


async def reserve(ctx: StepContext[Desk], booking: Booking) -> Booking:
    ctx.acquire(f"seat:{booking.ref}")
    await ctx.services.hold(ctx.idempotency_key)
    return attrs.evolve(booking, held=True)


def is_confirmed(ctx: StepContext[Desk], booking: Booking) -> bool:
    return ctx.services.confirmed


def give_back(ctx: StepContext[Desk], booking: Booking) -> Booking:
    ctx.services.give_back(ctx.idempotency_key)
    ctx.release(f"seat:{booking.ref}")
    return attrs.evolve(booking, held=False, released=True)


class BookingKind(Kind[Booking, Desk]):
    name = "booking"
    retry = fsm.RetryPolicy(base=60.0, max_attempts=10)

    reserving = State(initial=True)
    held = State.wait(doc="until the customer confirms (a notify)")
    releasing = State(doc="give the seat back")
    confirmed = State.done()
    cancelled = State.failed()

    transitions = (
        reserving.to(held, effect=reserve),
        held.to(confirmed, guard=is_confirmed),
        releasing.to(cancelled, effect=give_back),
        reserving.cancelled(to=cancelled),
        held.cancelled(to=releasing),
    )

    @staticmethod
    def action_id(booking: Booking) -> str:
        return f"booking-{booking.ref}"


@attrs.frozen
class Pass(fsm.Action[Any]):
    """A hand-written action whose ``on_cancel`` does what ``plan`` says.

    ``plan``: ``route`` (a `Next` into phase ``refunding``), ``fail`` (end now), ``none``
    (refuse), ``bad`` (a wrong return type), ``other`` (a `Next` with another id), ``raise``
    (a bug in the hook).
    """

    name = "pass"
    label: str
    phase: str = "open"
    plan: str = "route"

    @property
    def id(self) -> str:
        return self.label

    @property
    def state(self) -> str:
        return self.phase

    def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        if self.phase == "refunding":
            return fsm.Failed("refunded", "refunded")
        return fsm.Park(self)

    def on_cancel(self, cancel: fsm.Cancellation) -> Any:
        if self.plan == "route":
            return fsm.Next(attrs.evolve(self, phase="refunding"))
        if self.plan == "fail":
            return fsm.Failed(f"closed ({cancel.reason})", "closed")
        if self.plan == "bad":
            return "refund please"
        if self.plan == "other":
            return fsm.Next(attrs.evolve(self, label="someone-else"))
        if self.plan == "raise":
            raise AttributeError("'Pass' object has no attribute 'refund'")
        return None

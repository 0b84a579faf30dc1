"""A queued cancel (`fsm.Controls.cancel` of a held action) meets a state with event rows.

The cancel is queued while the step in a state with a cancel route runs; that step moves the
action on to a state with event rows and no cancel route. The cancel stays queued there (the
state's steps read only the events its rows take), and is taken as soon as the action enters
a state that has a cancel route, although no new event arrived since the drive last looked
(`Drive.advanced` looks again on entering a new state).
"""

from __future__ import annotations

import asyncio

import attrs

import fsm
from fsm import Kind, State, StepContext


@attrs.frozen
class Ping:
    n: int


@attrs.frozen
class Job:
    job_id: str


class Gate:
    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.open = asyncio.Event()


async def held_step(ctx: StepContext[Gate], job: Job) -> Job:
    ctx.services.entered.set()
    await ctx.services.open.wait()
    return job


class PingKind(Kind[Job, Gate]):
    name = "ping_job"

    working = State(initial=True)
    listening = State.wait()  # event rows, no cancel route
    finishing = State.wait()
    done = State.done()
    cancelled = State.failed()

    transitions = (
        working.to(listening, effect=held_step),
        listening.to(finishing, on=Ping),
        finishing.to(done, on=Ping),
        working.cancelled(to=cancelled),
        finishing.cancelled(to=cancelled),
    )

    @staticmethod
    def action_id(job: Job) -> str:
        return f"job-{job.job_id}"


def test_a_queued_cancel_is_not_set_aside_by_a_state_with_event_rows(store: fsm.Store) -> None:
    gate = Gate()
    ex = fsm.Executor(store, gate, kinds=[PingKind])
    ops = fsm.Controls(store, kinds=[PingKind])  # another process's controls

    async def race() -> fsm.DriveResult:
        driving = asyncio.create_task(ex.drive(PingKind.create(Job("1"))))
        await gate.entered.wait()
        queued = ops.cancel("job-1", reason="customer asked", by="ops", wait=0.0)
        assert queued.outcome == "queued"
        gate.open.set()
        return await driving

    parked = asyncio.run(race())
    assert (parked.status, parked.state) == (fsm.DriveStatus.PARKED, "listening")
    asyncio.run(ex.run_due())  # the claim sees the cancel: no route in `listening`
    assert [e.name for e in store.pending_events("job-1")] == ["fsm.Cancel"]

    async def ping() -> None:
        assert await ex.send("job-1", Ping(1), key="ping-1")
        await ex.run_due()

    asyncio.run(ping())  # `finishing` has a route: the cancel is taken there
    kept = store.outcome("job-1")
    assert kept is not None and (kept.state, kept.cause) == (
        "cancelled",
        "cancelled by ops: customer asked",
    )

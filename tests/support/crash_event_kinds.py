"""Declarative kinds that wait for events, for the events' crash and concurrency tests.

Every effect is recorded in a `actions.Ledger` under the step's idempotency key, with what
it applied (``what``): a step re-run after a crash records under the same key (a replay,
not a second effect), so *distinct keys per what* says how many times an effect was made.

* `BallotKind`: waits in ``open`` for `Vote` events; each vote is counted by its own step
  (``vote:<voter>`` in the ledger), and once ``needed`` votes are in, ``close`` records the
  votes in the order the ballot took them (`closing`) and ends it.
* `FanOutKind`: spawns ``size`` `JobKind` children in its first step, then takes one
  `fsm.ChildEnded` per step; once every child has ended it records which ended
  (``ended:<sorted ids>``) and ends. Each child records ``work`` once and ends.
* `OfferKind`: waits in ``waiting`` for an `Accept` (or a `Withdraw`) until its deadline
  (`OFFER_TIMEOUT` seconds from its first step), then ends in ``expired``.
"""

from __future__ import annotations

import hashlib

import attrs
from actions import Ledger

import fsm
from fsm import Kind, State, StepContext

# -- a ballot: votes in, one effect each ------------------------------------------------------


@attrs.frozen
class Vote:
    voter: str


@attrs.frozen
class Ballot:
    ballot_id: str
    needed: int = 3
    votes: tuple[str, ...] = ()


async def count_vote(ctx: StepContext[Ledger], ballot: Ballot, vote: Vote) -> Ballot:
    await ctx.services.apply(ctx.idempotency_key, ctx.action_id, f"vote:{vote.voter}")
    return attrs.evolve(ballot, votes=(*ballot.votes, vote.voter))


def all_in(ctx: StepContext[Ledger], ballot: Ballot) -> bool:
    return len(ballot.votes) >= ballot.needed


def closing(votes: tuple[str, ...]) -> str:
    """What a ballot that took ``votes``, in this order, records at its close (short: the
    ledger's column holds 64 characters)."""
    digest = hashlib.sha256(",".join(votes).encode()).hexdigest()[:16]
    return f"closed:{len(votes)}:{digest}"


async def close(ctx: StepContext[Ledger], ballot: Ballot) -> Ballot:
    await ctx.services.apply(ctx.idempotency_key, ctx.action_id, closing(ballot.votes))
    return ballot


class BallotKind(Kind[Ballot, Ledger]):
    name = "ballot"

    open = State.wait(initial=True)
    closed = State.done()

    transitions = (
        open.to(open, on=Vote, effect=count_vote),
        open.to(closed, guard=all_in, effect=close),
    )

    @staticmethod
    def action_id(ballot: Ballot) -> str:
        return ballot.ballot_id


# -- a batch: children spawned, their ends awaited ----------------------------------------------


@attrs.frozen
class Job:
    parent: str
    n: int


async def work(ctx: StepContext[Ledger], job: Job) -> Job:
    await ctx.services.apply(ctx.idempotency_key, ctx.action_id, "work")
    return job


class JobKind(Kind[Job, Ledger]):
    name = "job"

    start = State(initial=True)
    done = State.done()

    transitions = (start.to(done, effect=work),)

    @staticmethod
    def action_id(job: Job) -> str:
        return f"{job.parent}.job{job.n}"


@attrs.frozen
class Batch:
    batch_id: str
    size: int = 3
    children: tuple[str, ...] = ()
    ended: tuple[str, ...] = ()


def spawn_all(ctx: StepContext[Ledger], batch: Batch) -> Batch:
    ids = tuple(ctx.spawn(JobKind.create(Job(batch.batch_id, n))) for n in range(batch.size))
    return attrs.evolve(batch, children=ids)


def child_ended(ctx: StepContext[Ledger], batch: Batch, ended: fsm.ChildEnded) -> Batch:
    return attrs.evolve(batch, ended=(*batch.ended, f"{ended.child}:{ended.status}"))


def all_ended(ctx: StepContext[Ledger], batch: Batch) -> bool:
    return len(batch.ended) >= batch.size


async def report(ctx: StepContext[Ledger], batch: Batch) -> Batch:
    what = "ended:" + ",".join(sorted(batch.ended))
    await ctx.services.apply(ctx.idempotency_key, ctx.action_id, what)
    return batch


class FanOutKind(Kind[Batch, Ledger]):
    name = "fan_out"

    start = State(initial=True)
    waiting = State.wait()
    done = State.done()

    transitions = (
        start.to(waiting, effect=spawn_all),
        waiting.to(waiting, on=fsm.ChildEnded, effect=child_ended),
        waiting.to(done, guard=all_ended, effect=report),
    )

    @staticmethod
    def action_id(batch: Batch) -> str:
        return batch.batch_id


def batch_report(batch_id: str, size: int) -> str:
    """What a batch records once every child of it ended once, done."""
    return "ended:" + ",".join(sorted(f"{batch_id}.job{n}:done" for n in range(size)))


# -- an offer: an event or its deadline --------------------------------------------------------

OFFER_TIMEOUT = 3600.0
"""An offer's deadline, in seconds from its first step: far beyond any test's real time, so
only a clock moved on by the test (``Executor(clock=...)``) reaches it."""


@attrs.frozen
class Accept:
    by: str


@attrs.frozen
class Withdraw:
    why: str


@attrs.frozen
class Offer:
    offer_id: str
    accepted_by: str | None = None


def take_offer(ctx: StepContext[Ledger], offer: Offer, accept: Accept) -> Offer:
    return attrs.evolve(offer, accepted_by=accept.by)


class OfferKind(Kind[Offer, Ledger]):
    name = "offer"

    accepted = State.done()
    expired = State.done()
    waiting = State.wait(initial=True, timeout=OFFER_TIMEOUT, on_timeout=expired)

    transitions = (
        waiting.to(accepted, on=Accept, effect=take_offer),
        waiting.to(expired, on=Withdraw),
    )

    @staticmethod
    def action_id(offer: Offer) -> str:
        return offer.offer_id


KINDS = (BallotKind, FanOutKind, JobKind, OfferKind)

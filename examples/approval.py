"""A purchase request waiting for a human's approval: events, a daily reminder, a deadline.

A request mails its approver and waits. A web handler turns the approver's click into an
event (`Approve` or `Reject`) with ``executor.send``; the waiting request takes it in the
step that writes its next checkpoint, so a decision is acted on exactly once, however often
the click is posted. While nobody answers, the request mails a reminder once a day (a
self-transition whose guard compares ``ctx.now`` with the last reminder kept in the data);
after three days its deadline (``State.wait(timeout=..., on_timeout=...)``) escalates it to
a manager, who decides through the same handler.

Run it: ``python examples/approval.py [--db URL]``. It runs five simulated days in about a
second: the clock is fake, and a loop standing in for ``fsm worker`` drives what is due every
simulated hour. Without ``--db`` the database is a new SQLite file in a temporary folder;
``--db postgresql://...`` runs the same on PostgreSQL. docs/events.md walks through it.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from pathlib import Path

import attrs

import fsm
from fsm import Kind, State, StepContext

HOUR = 3600.0
DAY = 24 * HOUR
MAX_REMINDERS = 2
"""Reminders before the deadline escalates: one a day, on days 1 and 2 (see `reminder_due`)."""


# -- the outside world ---------------------------------------------------------------------------


@attrs.define
class FakeMailer:
    """Records every mail instead of sending it. A mail is keyed by the step's idempotency
    key, as a real mail API's request id: a step re-run after a crash mails once."""

    sent: dict[str, tuple[str, str]] = attrs.field(factory=dict)

    def send(self, key: str, to: str, subject: str) -> None:
        self.sent.setdefault(key, (to, subject))

    def to(self, who: str) -> list[str]:
        return [subject for to, subject in self.sent.values() if to == who]


# -- the events ----------------------------------------------------------------------------------


@attrs.frozen
class Approve:
    """The approver (or, after escalation, the manager) said yes."""

    by: str


@attrs.frozen
class Reject:
    """The approver (or the manager) said no, and why."""

    by: str
    reason: str


# -- the kind ------------------------------------------------------------------------------------


@attrs.frozen
class Request:
    """The checkpoint of a purchase request."""

    request_id: str
    item: str
    amount: int
    approver: str
    manager: str
    last_reminder: float = 0.0
    """When the approver was last mailed (the request itself, or a reminder)."""
    reminders: int = 0
    decided_by: str | None = None
    reason: str | None = None


def ask(ctx: StepContext[FakeMailer], req: Request) -> Request:
    subject = f"please approve {req.request_id}: {req.item} ({req.amount})"
    ctx.services.send(ctx.idempotency_key, req.approver, subject)
    return attrs.evolve(req, last_reminder=ctx.now)


def reminder_due(ctx: StepContext[FakeMailer], req: Request) -> bool:
    # A day since the last mail. The plain rows run before the deadline, so at the end of
    # day 3 this guard would hold once more: the count stops it, and the deadline escalates.
    return ctx.now - req.last_reminder >= DAY and req.reminders < MAX_REMINDERS


def remind(ctx: StepContext[FakeMailer], req: Request) -> Request:
    n = req.reminders + 1
    subject = f"reminder {n}: please approve {req.request_id}"
    ctx.services.send(ctx.idempotency_key, req.approver, subject)
    return attrs.evolve(req, last_reminder=ctx.now, reminders=n)


def escalate(ctx: StepContext[FakeMailer], req: Request) -> Request:
    subject = f"{req.approver} did not answer {req.request_id} in 3 days: please decide"
    ctx.services.send(ctx.idempotency_key, req.manager, subject)
    return req


def approved_by(ctx: StepContext[FakeMailer], req: Request, event: Approve) -> Request:
    return attrs.evolve(req, decided_by=event.by)


def rejected_by(ctx: StepContext[FakeMailer], req: Request, event: Reject) -> Request:
    return attrs.evolve(req, decided_by=event.by, reason=event.reason)


def tell_requester(ctx: StepContext[FakeMailer], req: Request) -> Request:
    verdict = "approved" if req.reason is None else f"rejected ({req.reason})"
    ctx.services.send(ctx.idempotency_key, "requester", f"{req.request_id} {verdict}")
    return req


class ApprovalKind(Kind[Request, FakeMailer]):
    name = "approval"

    start = State(initial=True, doc="mail the approver")
    escalated = State(doc="mail the manager")
    waiting = State.wait(
        after=DAY,  # wake daily for the reminder's guard; an event wakes it at once
        timeout=3 * DAY,  # no decision in 3 days: escalate
        on_timeout=escalated,
        doc="wait for the approver",
    )
    with_manager = State.wait(doc="wait for the manager")
    approving = State(doc="tell the requester")
    rejecting = State(doc="tell the requester")
    approved = State.done()
    rejected = State.failed()

    transitions = (
        start.to(waiting, effect=ask),
        # a step in `waiting`: pending events first (oldest first, to these rows in order),
        # then the plain rows, then the deadline
        waiting.to(approving, on=Approve, effect=approved_by),
        waiting.to(rejecting, on=Reject, effect=rejected_by),
        waiting.to(waiting, guard=reminder_due, effect=remind),  # keeps the deadline
        escalated.to(with_manager, effect=escalate),
        with_manager.to(approving, on=Approve, effect=approved_by),
        with_manager.to(rejecting, on=Reject, effect=rejected_by),
        approving.to(approved, effect=tell_requester),
        rejecting.to(rejected, effect=tell_requester),
    )

    @staticmethod
    def action_id(req: Request) -> str:
        return f"approval-{req.request_id}"


# -- the web handler -----------------------------------------------------------------------------


async def decide(
    executor: fsm.Executor[FakeMailer], request_id: str, by: str, reason: str | None = None
) -> fsm.SendResult:
    """What ``POST /requests/<id>/decision`` does: no services, no step runs here.

    The key makes a decision final at the door: a click posted twice is one event
    (`fsm.SendStatus.DUPLICATE`), and a different answer under the same key is refused
    (`fsm.SendStatus.REFUSED`). A decision after the request ended is refused too
    (`fsm.SendStatus.FINISHED`): the page can say so at once.
    """
    event: Approve | Reject = Approve(by) if reason is None else Reject(by, reason)
    action_id = ApprovalKind.action_id(Request(request_id, "", 0, "", ""))
    return await executor.send(action_id, event, key=f"{request_id}:decision")


# -- the demo ------------------------------------------------------------------------------------


class FakeClock:
    """The executor's clock: the demo moves it an hour at a time."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


REQUESTS = (
    Request("r1", "laptop", 1200, approver="dana", manager="erin"),
    Request("r2", "conference", 800, approver="dana", manager="erin"),
    Request("r3", "server", 9000, approver="dana", manager="erin"),
)

CLICKS: dict[int, list[tuple[str, str, str | None]]] = {
    # hour -> (request, who, reason: None approves)
    5: [("r2", "dana", "no budget left"), ("r2", "dana", "no budget left")],  # posted twice
    30: [("r1", "dana", None), ("r1", "dana", "changed my mind")],  # second answer: refused
    49: [("r2", "dana", None)],  # r2 has ended
    80: [("r3", "erin", None)],  # the manager, after the escalation
}
"""The web handler's calls, by simulated hour since the requests were made."""


async def run(url: str) -> FakeMailer:
    mailer = FakeMailer()
    clock = FakeClock()
    store = fsm.open_store(url)
    executor = fsm.Executor(store, mailer, kinds=[ApprovalKind], clock=clock)
    start = clock.now
    for req in REQUESTS:
        await executor.start(ApprovalKind.create(req))
    for hour in range(5 * 24 + 1):
        clock.now = start + hour * HOUR
        for request_id, by, reason in CLICKS.get(hour, ()):
            sent = await decide(executor, request_id, by, reason)
            what = "approve" if reason is None else "reject"
            detail = f" ({sent.detail})" if sent.detail else ""
            print(f"hour {hour:3}: {by} {what}s {request_id}: {sent.status.name}{detail}")
        wake = store.next_wake()  # what `fsm worker` does: sleep until something is due,
        if wake is not None and wake <= clock.now:  # then drive it
            await executor.run_due()
    for req in REQUESTS:
        report = await executor.inspect(ApprovalKind.action_id(req))
        assert report is not None
        print(f"{report.id}: {report.status.value} in state {report.state}")
    store.close()
    return mailer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--db", help="database URL (default: a new SQLite file)")
    args = parser.parse_args()
    url = args.db or str(Path(tempfile.mkdtemp(prefix="fsm-approval-")) / "approval.sqlite")
    mailer = asyncio.run(run(url))
    for who in ("dana", "erin", "requester"):
        print(f"mails to {who}: " + "; ".join(mailer.to(who)))
    print(f"database: {url}")


if __name__ == "__main__":
    main()

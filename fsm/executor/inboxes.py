"""A drive's inbox at a step boundary: a queued cancel taken, and a step's outbox encoded.

`Drive.step` calls these only on the rare paths: `queued_cancel` when events arrived since
the drive last looked (an operator's cancel queued while the action was held, taken through
the state's cancel route in the transaction of the checkpoint it leads to), `step_inbox`
after every step (None at once when the step took no event and spawned nothing).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from fsm.errors import KindError, LeaseLost
from fsm.events import CANCEL, decode_cancel
from fsm.executor.plan import plan
from fsm.executor.step import encode
from fsm.failures import error_text
from fsm.ids import check_id, new_incarnation
from fsm.protocol import Action, Done, DriveMode, Failed, Next, StepContext
from fsm.results import DriveResult
from fsm.store.inbox import Child, StepInbox

if TYPE_CHECKING:
    from fsm.executor.drive import Drive

_CANCEL = (CANCEL,)
_ENDS = (Done, Failed)


def step_inbox(drive: Drive, ctx: StepContext[Any]) -> StepInbox | None:
    """What the step wrote to its outbox, encoded for the store (None: nothing)."""
    out = ctx.changes()
    if out is None:
        return None
    children = []
    for child in out.spawned:
        codec = drive.ex.registry.of(child)
        state, payload = codec.dump(child)
        check_id(child.id)
        children.append(
            Child(child.id, codec.name, state, codec.version, payload.decode(), new_incarnation())
        )
    taken = (out.consumed is not None) + len(out.dropped)
    drive.pending = max(0, drive.pending - taken)  # as it will be once written
    drive.seen = min(drive.seen, drive.pending)
    return StepInbox(out.consumed, drive.seq, tuple(out.dropped), tuple(children))


async def queued_cancel(
    drive: Drive, ctx: StepContext[Any], started: float, t0: float, mode: DriveMode
) -> DriveResult | float | bool | None:
    """A step boundary with new events: an operator's cancel queued while this action
    was held (`fsm.Controls.cancel`) is taken here, through the state's cancel route, in
    the transaction of the checkpoint it leads to. False: no cancel to take now (none
    queued, or this state has no cancel route: it stays queued for one that has)."""
    drive.seen = drive.pending
    try:
        queued = ctx.events(_CANCEL)
    except Exception as exc:  # the step's own read or write meets the fault, and backs off
        drive.adapter.warning("could not look for a queued cancel: %s", exc)
        drive.seen = 0  # look again at the next boundary
        return False
    if not queued:
        return False
    try:
        cancel = decode_cancel(queued[0].payload)
    except Exception as exc:  # written by hand: set aside with the step's write
        ctx.drop_event(queued[0].id, f"a queued cancel that does not load: {exc!r}")
        return False
    try:
        outcome = drive.action.on_cancel(cancel)
        if isinstance(outcome, Next):
            check_cancel_route(drive.action, outcome)
    except Exception as exc:  # the kind's bug: parked, as any step's
        return await drive.park_broken(exc, started, t0)
    if outcome is None:
        return False
    drive.adapter.info("%s (queued while the action was held)", cancel.text)
    ctx.consume_event(queued[0].id)
    try:
        encoded = encode(drive.codec, outcome)
    except Exception as exc:
        return await drive.park_broken(exc, started, t0)
    now = drive.ex.clock()
    planned = plan(
        outcome,
        drive,
        encoded,
        kind=drive.codec.name,
        version=drive.codec.version,
        via="cancel",
        attempts=0,
        cause=error_text(cancel.text),
        routed=True,
        mode=mode,
        stopping=drive.ex.stopping,
        started=started,
        now=now,
        lease_ttl=drive.ex.store.lease_ttl,
        duration=time.perf_counter() - t0,
    )
    inbox = step_inbox(drive, ctx)
    if isinstance(outcome, _ENDS):
        return await drive.finish(planned, now, inbox)
    try:
        await drive.write(planned, (), (), now, inbox)
    except LeaseLost as exc:
        return drive.dropped(exc)
    except Exception as exc:
        drive.adapter.error("could not write the cancel: %s", exc)
        return drive.record_failure(exc)
    assert isinstance(outcome, Next)
    return drive.advanced(planned, outcome)


def check_cancel_route(action: Action[Any], outcome: Next) -> None:
    """A cancel route's `Next` must keep the action's class and id (as `fsm.Controls` checks)."""
    new = outcome.state
    if type(new) is not type(action) or new.id != action.id:
        raise KindError(
            f"{type(action).__name__}.on_cancel returned {new!r}: the cancel route must keep "
            "the action's class and id"
        )

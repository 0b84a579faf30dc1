"""`Executor.update`: a live action's checkpoint changed from outside, under its lease.

A user's decision while an action waits (bark's "allow this send to exit") is written as a
step of its own (``via="update"`` in the log), fenced like any step: the action is claimed
first, so an update never races a drive, and let go after.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fsm.errors import ActionBusy, DecodeError, KindError, NoSuchAction
from fsm.executor.claims import claim, let_go, readable
from fsm.executor.plan import plan_update
from fsm.interpreter import Instance
from fsm.protocol import Action, S
from fsm.results import DriveStatus

if TYPE_CHECKING:
    from fsm.executor.executor import Executor

log = logging.getLogger(__name__)


async def update(
    ex: Executor[S], action_id: str, change: Callable[[Action[S]], Action[S]]
) -> Action[S]:
    """`Executor.update` (see there)."""
    if action_id in ex.driving:
        raise ActionBusy(f"action {action_id} is being driven; update it once it parks")
    now = ex.clock()
    claimed = claim(ex.store, action_id, ex.owner, now)
    if claimed is DriveStatus.BUSY:
        raise ActionBusy(f"action {action_id} is being driven; update it once it parks")
    if isinstance(claimed, DriveStatus):
        raise NoSuchAction(f"no live action {action_id!r} to update ({claimed.value})")
    try:
        decoded = readable(ex.registry, claimed)
        if isinstance(decoded, str):
            raise DecodeError(f"action {action_id}: {decoded}")
        codec, action = decoded
        new = kept_deadline(action, change(action))
        if new.id != action_id:
            raise KindError(f"update changed the action id to {new.id!r}; ids must be stable")
        state, payload = codec.dump(new)
        planned = plan_update(
            claimed, (state, payload.decode()), kind=codec.name, version=codec.version
        )
        assert planned.bookkeeping is not None
        ex.store.write(
            action_id,
            claimed.epoch,
            state=planned.state,
            payload=planned.payload,
            seq=planned.seq,
            was=claimed.bookkeeping,
            new=planned.bookkeeping,
            acquired=(),
            released=(),
            entry=planned.entry,
            now=now,
        )
    except BaseException:
        let_go(ex.store, action_id, claimed.epoch)
        raise
    log.info("action %s: updated from outside", action_id)
    return new


def kept_deadline(old: Action[Any], new: Action[Any]) -> Action[Any]:
    """An update that leaves a declarative action in its wait state keeps the state's
    deadline (a new instance made with ``Kind.create`` has none): changing the data of an
    action waiting for a decision must not give it more time."""
    if (
        isinstance(old, Instance)
        and type(new) is type(old)
        and isinstance(new, Instance)
        and new.state == old.state
        and new.deadline is None
        and old.deadline is not None
    ):
        return type(new)(new.state, new.data, new.parks, old.deadline)
    return new

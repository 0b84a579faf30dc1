"""Reading a live action's checkpoint from outside a step (user operations, inspection).

A step sees its action as the executor hands it over. Code outside the drive (an operation
that must check an action's phase before acting, a status page) needs the same: the state
and data as last committed, decoded by the kind. Two cold reads (`Store.row` for the state,
`Store.payload_of` for the payload) could straddle a step's commit and pair one step's state
with another's payload; `Store.claim` reads state, version and payload in the one statement
that takes the lease, and refuses while a driver holds it, so what it returns is a committed
checkpoint no step is changing. The lease is taken with ``now=0.0``, so it is already expired
should this process die before letting go, and released at once.
"""

from __future__ import annotations

from fsm.errors import ActionBusy, KindMismatch
from fsm.interpreter import Instance
from fsm.kind import Kind
from fsm.protocol import S
from fsm.state import D
from fsm.store import Claimed, ClaimMiss, Store, new_owner


def read_action(store: Store, kind: type[Kind[D, S]], action_id: str) -> Instance[D, S] | None:
    """The live action ``action_id`` of ``kind`` as last committed (``.state``, ``.data``);
    None if there is no such action.

    Raises `fsm.ActionBusy` while a driver holds it (or it is quarantined), `fsm.DecodeError`
    if its row cannot be read, and `fsm.KindMismatch` if it belongs to another kind.
    """
    claimed = store.claim(action_id, new_owner(), store.now())
    if not isinstance(claimed, Claimed):
        if claimed is ClaimMiss.MISSING:
            return None
        raise ActionBusy(f"action {action_id} is {claimed}")
    try:
        codec = kind.__fsm_codec__
        if claimed.kind != codec.name:
            raise KindMismatch(
                f"action {action_id} is of kind {claimed.kind!r}, not {codec.name!r}"
            )
        action: Instance[D, S] = codec.load(claimed.state, claimed.version, claimed.payload)
    finally:
        store.unclaim(action_id, claimed.epoch)
    return action

"""Reading a live action's checkpoint from outside a step (user operations, inspection).

A step sees its action as the executor hands it over. Code outside the drive (an operation
that must check an action's phase before acting, a status page) needs the same: the state
and data as last committed, decoded by the kind. `Store.checkpoint` reads kind, state,
version and payload in one statement, so they are always one step's, whether or not a driver
holds the action right now; it writes nothing, so it works on a read-only store too.
"""

from __future__ import annotations

from fsm.errors import DecodeError, KindMismatch
from fsm.interpreter import Instance
from fsm.kind import Kind
from fsm.protocol import S
from fsm.state import D
from fsm.store import Store


def read_action(store: Store, kind: type[Kind[D, S]], action_id: str) -> Instance[D, S] | None:
    """The live action ``action_id`` of ``kind`` as last committed (``.state``, ``.data``);
    None if there is no such action.

    Raises `fsm.KindMismatch` if it belongs to another kind, and `fsm.DecodeError` if its row
    cannot be read (quarantined, or written by a newer version of the kind).
    """
    found = store.checkpoint(action_id)
    if found is None:
        return None
    codec = kind.__fsm_codec__
    if found.kind != codec.name:
        raise KindMismatch(f"action {action_id} is of kind {found.kind!r}, not {codec.name!r}")
    if found.quarantine is not None:
        raise DecodeError(f"action {action_id} is quarantined: {found.quarantine}")
    action: Instance[D, S] = codec.load(found.state, found.version, found.payload)
    return action

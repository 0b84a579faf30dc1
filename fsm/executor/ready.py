"""A claimed row made ready to drive: decoded into a `Drive`, or the result saying why not.

Before any step runs, a claimed row is checked (`fsm.executor.claims`): a row of a kind this
executor does not know, or written by a newer version of it, is left for another driver (its
lease let go); a row that does not decode is quarantined. What passes becomes a `Drive`.
Kept apart from the drive loop (`fsm.executor.drive`), which only steps what it is given.
"""

from __future__ import annotations

from fsm.executor.claims import foreign, let_go, readable
from fsm.executor.drive import Drive, Driver, log
from fsm.executor.drivelog import Adapter
from fsm.ids import idempotency_key
from fsm.results import DriveResult, DriveStatus
from fsm.store import Claimed


def prepare(
    ex: Driver, claimed: Claimed, stepper: type[Drive] | None = None
) -> Drive | DriveResult:
    """A claimed action ready to drive, or why it is not driven here: left for another
    driver (its lease let go), or quarantined.

    ``stepper``: the `Drive` class that steps it (`fsm.executor.observed.ObservedDrive` when the
    executor has an observer), chosen once per drive rather than checked at every step.

    Not a coroutine: the caller awaits `Drive.run` itself, so a drive asleep in a park
    holds two frames of fsm's (its caller's and `Drive.run`'s), not one per layer.
    """
    action_id = claimed.id
    try:
        reason = foreign(ex.registry, claimed)
        if reason is not None:
            adapter = Adapter(log, claimed)
            adapter.info("left for another driver: %s", reason)
            let_go(ex.store, action_id, claimed.epoch, adapter)
            return _result(claimed, DriveStatus.SKIPPED, reason)
        decoded = readable(ex.registry, claimed)
        if isinstance(decoded, str):
            Adapter(log, claimed).error("quarantined: %s", decoded)
            ex.store.quarantine(action_id, decoded)
            return _result(claimed, DriveStatus.QUARANTINED, decoded)
    except BaseException:
        let_go(ex.store, action_id, claimed.epoch)
        raise
    # What the drive keeps is in the `Drive`; the claimed row and its decoded form are not
    # kept, so a parked drive does not hold its payload twice.
    return (stepper or Drive)(ex, claimed, codec=decoded[0], action=decoded[1])


def _result(claimed: Claimed, status: DriveStatus, error: str) -> DriveResult:
    """The result of a drive that never stepped (the row is another's, or unreadable)."""
    key = idempotency_key(claimed.id, claimed.incarnation, claimed.seq)
    return DriveResult(claimed.id, status, claimed.state, error, kind=claimed.kind, key=key)

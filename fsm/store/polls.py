"""What an idle worker reads on every poll: when the next action becomes claimable.

Called on every idle poll, so it must cost the same at a million live rows as at a thousand:
each half of the statement reads one of schema v3's partial indexes (`fsm.store.schema`),
never the table. The claim itself (`fsm.store.leases.claim_due`) reads the same wake-up
index in order and stops after its batch.
"""

from __future__ import annotations

from collections.abc import Mapping

from fsm.store.connection import Link
from fsm.store.statements import _KINDS, Statements

NEXT_WAKE = (
    "SELECT MIN(t) FROM ("
    "SELECT t FROM (SELECT wake_at AS t FROM fsm_action "
    f"WHERE quarantine IS NULL AND wake_at IS NOT NULL AND lease_owner IS NULL{_KINDS} "
    "ORDER BY wake_at LIMIT 1) AS free "
    "UNION ALL "
    "SELECT CASE WHEN quarantine IS NOT NULL OR wake_at IS NULL THEN NULL "
    "WHEN lease_expires < wake_at THEN wake_at ELSE lease_expires END "
    f"FROM fsm_action WHERE lease_owner IS NOT NULL{_KINDS}"
    ") AS soonest"
)
"""The soonest of: the first wake-up among the rows no one holds (the wake-up index, read in
order: one entry, past the few leased rows), and for each leased row (the lease index: a few
per worker) its wake-up or, when later, its lease's expiry. The leased half tests
quarantine and wake-up in its CASE, not its WHERE, so that no planner picks the wake-up index
(all the rows) for it. No parameter but the kinds'."""


def next_wake(link: Link, sql: Statements, kinds: Mapping[str, int] | None) -> float | None:
    """When the next action becomes claimable: its wake-up time, or its lease's expiry.

    ``kinds``: name -> newest readable version (see `fsm.store.leases.claim_due`); ``None``
    for every kind, an empty mapping for none (then nothing ever wakes the caller).
    """
    if kinds is not None and not kinds:
        return None
    statement, params = sql.for_kinds(NEXT_WAKE, kinds)
    value = link.exec(statement, params * 2).fetchone()[0]
    return None if value is None else float(value)

"""What the gauges read: live actions per kind and state, and how late the oldest due one is.

Read by metrics collectors (`fsm.telemetry`), off the event loop's thread and never on a
step's path: so these are plain statements on the calling thread's own connection (peewee
keeps one per thread), not the cold paths' query builder, whose model binding is not safe
across threads.

The oldest due action is read from the polls' partial indexes (`fsm.store.polls`), so it
costs the same at a million rows as at a thousand. The count per kind and state reads every
live row: no index serves it, and none is added, since an index on ``state`` would be
rewritten by nearly every step. A collector reads it once per scrape, not per step.
"""

from __future__ import annotations

from fsm.store.connection import Link

LIVE_COUNTS = "SELECT kind, state, COUNT(*) FROM fsm_action GROUP BY kind, state"

OLDEST_DUE = (
    "SELECT MIN(since) FROM ("
    "SELECT since FROM (SELECT wake_at AS since FROM fsm_action "
    "WHERE quarantine IS NULL AND wake_at IS NOT NULL AND wake_at > 0 AND wake_at <= {p} "
    "AND lease_owner IS NULL ORDER BY wake_at LIMIT 1) AS waiting "
    "UNION ALL "
    "SELECT MIN(updated_at) FROM fsm_action "
    "WHERE quarantine IS NULL AND wake_at IS NOT NULL AND wake_at = 0 AND lease_owner IS NULL "
    "UNION ALL "
    "SELECT CASE WHEN quarantine IS NOT NULL OR wake_at IS NULL OR wake_at > {p} "
    "OR lease_expires >= {p} THEN NULL "
    "WHEN wake_at > lease_expires THEN wake_at ELSE lease_expires END "
    "FROM fsm_action WHERE lease_owner IS NOT NULL"
    ") AS due"
)
"""Since when the longest-waiting claimable action has been claimable, of three kinds:

* free rows due by their wake-up: the first entry of the wake-up index past ``0``;
* free rows due at once (``wake_at = 0``: left between two steps by a drive that died or
  stopped): since their last write, ``updated_at`` (the wake-up index's ``0`` entries: a
  few, each claimed at the next poll);
* leased rows whose lease ran out (a dead driver's): since the later of their wake-up and
  the lease's expiry (the lease index: a few rows per worker; tested in the CASE, as in
  `fsm.store.polls`, so no planner reads the wake-up index for it).

Parameters: now, three times."""


def live_counts(link: Link) -> dict[tuple[str, str], int]:
    """How many live actions stand in each (kind, state), quarantined and broken included."""
    rows = link.exec(LIVE_COUNTS).fetchall()
    return {(str(kind), str(state)): int(n) for kind, state, n in rows}


def oldest_due(link: Link, now: float) -> float:
    """Seconds the longest-waiting claimable action has waited at ``now``; 0 if none waits."""
    statement = OLDEST_DUE.format(p=link.db.param)
    since = link.exec(statement, (now, now, now)).fetchone()[0]
    return 0.0 if since is None else max(0.0, now - float(since))

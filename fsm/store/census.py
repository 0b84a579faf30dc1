"""What the gauges read: live actions per kind and state, and how late the oldest due one is.

Read by metrics collectors (`fsm.telemetry`), off the event loop's thread and never on a
step's path: so these are plain statements on the calling thread's own connection (peewee
keeps one per thread), not the cold paths' query builder, whose model binding is not safe
across threads.

The oldest due action is read from the polls' partial indexes (`fsm.store.polls`), so it
costs the same at a million rows as at a thousand. The count per kind and state reads every
live row: no index serves it, and none is added, since an index on ``state`` would be
rewritten by nearly every step. A collector reads it once per scrape, not per step.

`state_census` is the same full read with a little more per state (broken, quarantined, since
when the longest-waiting claimable one has waited), for a page that paints a kind's diagram
(``fsm console``): which states are in trouble, not only how full they are.
"""

from __future__ import annotations

import attrs

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


@attrs.frozen
class StateCensus:
    """The live actions of one (kind, state): how many, and how many of them are in trouble.

    ``live`` counts them all (quarantined and broken included, as `live_counts`);
    ``broken``: the kind's code failed on their step (quarantined ones not counted);
    ``quarantined``: set aside. ``due_since``: since when (unix time) the longest-waiting
    claimable one has been claimable (due by its wake-up, due at once since its last write,
    or a lease run out), ``None`` when none is: a state whose actions wait long for a worker
    stands out by it.
    """

    live: int
    broken: int = 0
    quarantined: int = 0
    due_since: float | None = None

    def waited(self, now: float) -> float:
        """Seconds the longest-waiting claimable action has waited at ``now`` (0: none)."""
        return 0.0 if self.due_since is None else max(0.0, now - self.due_since)


STATE_CENSUS = (
    "SELECT kind, state, COUNT(*), "
    "SUM(CASE WHEN quarantine IS NULL AND broken THEN 1 ELSE 0 END), "
    "SUM(CASE WHEN quarantine IS NOT NULL THEN 1 ELSE 0 END), "
    "MIN(CASE WHEN quarantine IS NOT NULL OR broken OR wake_at IS NULL OR wake_at > {p} "
    "OR (lease_owner IS NOT NULL AND lease_expires > {p}) THEN NULL "
    "WHEN lease_owner IS NOT NULL AND lease_expires > wake_at THEN lease_expires "
    "WHEN wake_at = 0 THEN updated_at "
    "ELSE wake_at END) "
    "FROM fsm_action{where} GROUP BY kind, state"
)
"""Per (kind, state): live, broken, quarantined, and the claimable rows' earliest time of
becoming claimable (the cases of `OLDEST_DUE`, row by row). Parameters: now, twice, then
the kind when one is asked for."""


def state_census(
    link: Link, now: float, kind: str | None = None
) -> dict[tuple[str, str], StateCensus]:
    """`StateCensus` per (kind, state) at ``now``, of every kind or of ``kind`` only."""
    p = link.db.param
    where = "" if kind is None else f" WHERE kind = {p}"
    params: tuple[object, ...] = (now, now) if kind is None else (now, now, kind)
    rows = link.exec(STATE_CENSUS.format(p=p, where=where), params).fetchall()
    return {
        (str(k), str(s)): StateCensus(
            int(n), int(broken or 0), int(quarantined or 0), None if since is None else float(since)
        )
        for k, s, n, broken, quarantined, since in rows
    }

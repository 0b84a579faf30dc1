"""The operator's controls as store writes (`fsm.executor.controls` decides what they write).

A control is written like a step: under the action's lease, fenced by its epoch. `take`
claims the row for a control, quarantined rows too (unquarantine and stop act on them; a
worker never claims one, so the lease a control takes there keeps no driver out that would
have come). `release` writes the control's columns, lets go of the lease (the epoch moves on,
as at every release) and logs the control in the transition log, in one transaction: a crash
leaves all of it or none. `notify` is the one control written without the lease: a notify
must land while a driver holds the action (that driver's fenced write reads the ``notified``
mark, see `Store.mark_due`), and it changes no checkpoint column, only the wake-up and the
mark; its log row is written in the same transaction.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from fsm.errors import LeaseLost
from fsm.store.channel import NOTIFY
from fsm.store.connection import Link
from fsm.store.leases import owner_is_dead
from fsm.store.records import Claimed, ClaimMiss, LogEntry
from fsm.store.statements import CLAIMED_COLUMNS, Statements

WriteNow = Callable[..., Any]
"""`Store._write_now`: runs a write body now, or through the committer while it has work."""

COLUMNS = frozenset(
    {
        "state",
        "payload",
        "version",
        "seq",
        "attempts",
        "last_error",
        "cause",
        "broken",
        "wake_at",
        "quarantine",
    }
)
"""The columns a control may write (`ControlWrites.release` refuses any other)."""


@attrs.frozen(slots=True)
class Taken:
    """A row a control holds the lease on: as claimed, and its quarantine reason if set aside."""

    claimed: Claimed
    quarantine: str | None


class ControlWrites:
    """The controls' statements over one store's connection."""

    def __init__(
        self,
        link: Link,
        sql: Statements,
        write_now: WriteNow,
        logs: Callable[[], bool],
        channel: str | None,
    ) -> None:
        self._link = link
        self._sql = sql
        self._write_now = write_now
        self._logs = logs
        self._channel = channel
        """PostgreSQL: the NOTIFY channel of the store's schema (`fsm.store.channel`)."""
        p = link.db.param
        self._p = p
        returning = f"RETURNING {CLAIMED_COLUMNS}, quarantine"
        self._take = (
            f"UPDATE fsm_action SET lease_owner = {p}, lease_expires = {p}, epoch = epoch + 1 "
            f"WHERE id = {p} AND (lease_owner IS NULL OR lease_expires < {p} "
            f"OR lease_owner = {p}) {returning}"
        )
        self._steal = (
            f"UPDATE fsm_action SET lease_owner = {p}, lease_expires = {p}, epoch = epoch + 1 "
            f"WHERE id = {p} AND lease_owner = {p} {returning}"
        )
        self._holder = f"SELECT lease_owner FROM fsm_action WHERE id = {p}"
        self._notify = (
            f"UPDATE fsm_action SET wake_at = {p}, notified = TRUE "
            f"WHERE id = {p} AND quarantine IS NULL RETURNING kind, seq, state, attempts"
        )
        self._quarantine_of = f"SELECT quarantine FROM fsm_action WHERE id = {p}"

    def take(self, action_id: str, owner: str, now: float, until: float) -> Taken | ClaimMiss:
        """The lease on ``action_id`` for a control, until ``until``: `ClaimMiss.MISSING` when
        there is no such action, `ClaimMiss.BUSY` when a live driver holds it (the lease of
        a certainly dead owner is taken over, as `fsm.store.leases.claim` does)."""

        def body(batched: bool) -> Taken | ClaimMiss:
            link = self._link
            with link.write_point("claim"):
                row = link.exec(self._take, (owner, until, action_id, now, owner)).fetchone()
                if row is None:
                    found = link.exec(self._holder, (action_id,)).fetchone()
                    if found is None:
                        return ClaimMiss.MISSING
                    holder = found[0]
                    if holder is None or not owner_is_dead(holder):
                        return ClaimMiss.BUSY
                    row = link.exec(self._steal, (owner, until, action_id, holder)).fetchone()
                    if row is None:
                        return ClaimMiss.BUSY
            return Taken(Claimed(action_id, *row[:-1]), row[-1])

        result: Taken | ClaimMiss = self._write_now(None, body, solo=True)
        return result

    def release(
        self,
        action_id: str,
        epoch: int,
        columns: Mapping[str, Any],
        entry: LogEntry,
        now: float,
        *,
        wake: bool,
    ) -> None:
        """Write ``columns`` on the row held at ``epoch``, let go of its lease and log
        ``entry``, in one transaction; ``wake``: the action is due now, so tell listening
        workers (PostgreSQL NOTIFY, sent at the commit). Raises `LeaseLost` if the lease was
        taken over meanwhile (then nothing is written)."""
        unknown = set(columns) - COLUMNS
        if unknown:
            raise ValueError(f"a control cannot write {sorted(unknown)}")
        p = self._p
        sets = "".join(f"{name} = {p}, " for name in columns)
        sql = (
            f"UPDATE fsm_action SET {sets}step_outcome = NULL, updated_at = {p}, "
            "lease_owner = NULL, lease_expires = NULL, epoch = epoch + 1 "
            f"WHERE id = {p} AND epoch = {p}"
        )
        params = (*columns.values(), now, action_id, epoch)
        log = (action_id, *entry.values(), now) if self._logs() else None

        def body(batched: bool) -> None:
            link = self._link
            with contextlib.nullcontext() if batched else link.transaction():
                if link.exec(sql, params).rowcount != 1:
                    raise LeaseLost(action_id, f"claim epoch {epoch} was taken over")
                if log is not None:
                    link.exec(self._sql.log, log)
                if wake and self._channel is not None:
                    link.exec(NOTIFY, (self._channel,))

        self._write_now("control", body, solo=True)

    def notify(
        self, action_id: str, now: float, text: str | None
    ) -> tuple[str, str, int] | ClaimMiss:
        """Make the action due now and mark it notified (`Store.mark_due`), and log it with
        ``text``, in one transaction; (kind, state, attempts) of the action, or why not:
        `ClaimMiss.MISSING` or `ClaimMiss.QUARANTINED` (nothing is written then)."""

        def body(batched: bool) -> tuple[str, str, int] | ClaimMiss:
            link = self._link
            with contextlib.nullcontext() if batched else link.transaction():
                row = link.exec(self._notify, (now, action_id)).fetchone()
                if row is None:
                    found = link.exec(self._quarantine_of, (action_id,)).fetchone()
                    return ClaimMiss.MISSING if found is None else ClaimMiss.QUARANTINED
                kind, seq, state, attempts = row
                if self._logs():
                    entry = LogEntry(kind, seq, state, state, "due", "notify", attempts, text, 0.0)
                    link.exec(self._sql.log, (action_id, *entry.values(), now))
                if self._channel is not None:
                    link.exec(NOTIFY, (self._channel,))
            return str(kind), str(state), int(attempts)

        result: tuple[str, str, int] | ClaimMiss = self._write_now("wake", body, solo=True)
        return result

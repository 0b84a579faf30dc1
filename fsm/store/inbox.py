"""The inbox: events sent to live actions, taken by their steps, and children started by them.

Everything here joins a transaction that already exists, or opens one: an event is stored,
counted on its action's row and the action made due in one transaction (`Inbox.send`); a
step's taking of an event, the events it sets aside and the children it spawns are written
in the transaction of its checkpoint (`Inbox.with_outbox`), so a crash either keeps all of
it or none. The row's ``inbox`` column counts the pending events, so a drive knows at its
claim whether there is anything to read, and a step of a state without event rows never
reads the inbox.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import orjson

from fsm.errors import FsmError
from fsm.events import Delivered
from fsm.store.committer import Body
from fsm.store.connection import Link

_NO_TRANSACTION = contextlib.nullcontext()

READ_AT_MOST = 1000
"""Pending events a step reads at most (the oldest the state can take): an inbox flooded
with events no state takes yet costs a step nothing, and one flooded with events it takes
costs a bounded read."""

Verdict = tuple[str, str | None]
"""What a sender's check says of an event for the action's (kind, state): ``("accept",
None)``, ``("drop", why)`` (kept as set aside, for the record and for its key) or
``("refuse", why)`` (nothing stored)."""


class ChildConflict(FsmError):
    """A child's id belongs to a live action already (not one this step started)."""


@attrs.frozen
class Child:
    """A child to insert with its parent's checkpoint: its row's values, as a start's."""

    id: str
    kind: str
    state: str
    version: int
    payload: str
    incarnation: str


@attrs.frozen
class StepInbox:
    """What a step writes to the inbox besides its checkpoint (`fsm.protocol.Outbox`,
    encoded): the event it took (with the step's sequence), those it set aside, its
    children."""

    consumed: int | None
    seq: int
    dropped: tuple[tuple[int, str], ...] = ()
    children: tuple[Child, ...] = ()


class Inbox:
    """The inbox's statements over one connection."""

    def __init__(self, link: Link, channel: str | None) -> None:
        self._link = link
        self._exec = link.exec
        self._channel = channel
        p = "?" if link.sqlite else "%s"
        names = "IN (SELECT value FROM json_each(?))" if link.sqlite else "= ANY(%s)"
        self.pending = (
            "SELECT id, name, payload, key, sent_at FROM fsm_event "
            f"WHERE action_id = {p} AND consumed_at IS NULL AND name {names} "
            f"ORDER BY id LIMIT {READ_AT_MOST}"
        )
        self._target = f"SELECT kind, state FROM fsm_action WHERE id = {p}"
        self._count = f"SELECT inbox FROM fsm_action WHERE id = {p}"
        self._outcome = (
            f"SELECT status, state FROM fsm_outcome WHERE id = {p} "
            "ORDER BY finished_at DESC LIMIT 1"
        )
        self._add = (
            "INSERT INTO fsm_event (action_id, key, name, payload, sent_at, consumed_at, dropped) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}) ON CONFLICT (action_id, key) DO NOTHING"
        )
        self._same = f"SELECT name, payload FROM fsm_event WHERE action_id = {p} AND key = {p}"
        self._due = (  # a broken row waits for its fix (a notify); the event waits with it
            f"UPDATE fsm_action SET wake_at = CASE WHEN broken THEN wake_at "
            f"WHEN wake_at IS NULL OR wake_at > {p} THEN {p} ELSE wake_at END, "
            f"notified = TRUE, inbox = inbox + 1 WHERE id = {p}"
        )
        self._take = (
            f"UPDATE fsm_event SET consumed_at = {p}, consumed_seq = {p}, dropped = {p} "
            f"WHERE id = {p} AND action_id = {p} AND consumed_at IS NULL"
        )
        self._taken = f"UPDATE fsm_action SET inbox = inbox - {p} WHERE id = {p}"
        self._child = (
            "INSERT INTO fsm_action (id, kind, state, version, payload, seq, attempts, wake_at, "
            "epoch, created_at, updated_at, incarnation, parent, parent_incarnation) "
            f"VALUES ({p}, {p}, {p}, {p}, {p}, 0, 0, {p}, 0, {p}, {p}, {p}, {p}, "
            f"(SELECT incarnation FROM fsm_action WHERE id = {p})) "
            "ON CONFLICT (id) DO NOTHING"
        )

    def read(self, action_id: str, names: Sequence[str]) -> list[Delivered]:
        """The oldest pending events of ``action_id`` named ``names`` (at most
        `READ_AT_MOST`), in the order they were sent."""
        listed: Any = orjson.dumps(list(names)).decode() if self._link.sqlite else list(names)
        return _delivered(self._exec(self.pending, (action_id, listed)).fetchall())

    def read_all(self, action_id: str) -> list[Delivered]:
        """Every pending event of ``action_id`` (inspection), in the order they were sent."""
        p = "?" if self._link.sqlite else "%s"
        return _delivered(
            self._exec(
                "SELECT id, name, payload, key, sent_at FROM fsm_event "
                f"WHERE action_id = {p} AND consumed_at IS NULL ORDER BY id",
                (action_id,),
            ).fetchall()
        )

    def counts(self, ids: Sequence[str]) -> dict[str, int]:
        """{id: pending events} of the actions among ``ids`` with any (one statement)."""
        if not ids:
            return {}
        if self._link.sqlite:
            sql = "SELECT id, inbox FROM fsm_action WHERE id IN (SELECT value FROM json_each(?))"
            listed: Any = orjson.dumps(list(ids)).decode()
        else:
            sql, listed = "SELECT id, inbox FROM fsm_action WHERE id = ANY(%s)", list(ids)
        rows = self._exec(sql + " AND inbox > 0", (listed,)).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    def count(self, action_id: str) -> int:
        """The row's count of pending events (0 when there is no such row)."""
        row = self._exec(self._count, (action_id,)).fetchone()
        return 0 if row is None else int(row[0])

    def send(
        self,
        action_id: str,
        name: str,
        payload: str,
        key: str,
        now: float,
        check: Callable[[str, str], Verdict],
    ) -> Body[tuple[str, str | None]]:
        """The write of `fsm.Executor.send`: returns (status, detail).

        ``status``: ``sent``, ``dropped`` (kept as set aside), ``duplicate`` (this key was
        sent before with the same event: nothing new), ``refused`` (``check`` said so, or
        the key was used before for another event), ``finished`` (the action has ended;
        detail: how) or ``unknown`` (no such action).
        """

        def body(batched: bool) -> tuple[str, str | None]:
            with self._link.transaction() if not batched else _NO_TRANSACTION:
                row = self._exec(self._target, (action_id,)).fetchone()
                if row is None:
                    kept = self._exec(self._outcome, (action_id,)).fetchone()
                    if kept is None:
                        return "unknown", None
                    return "finished", f"ended {kept[0]} in state {kept[1]!r}"
                verdict, why = check(str(row[0]), str(row[1]))
                if verdict == "refuse":
                    return "refused", why
                dropped = why if verdict == "drop" else None
                taken = now if dropped is not None else None
                params = (action_id, key, name, payload, now, taken, dropped)
                if self._exec(self._add, params).rowcount != 1:
                    same = self._exec(self._same, (action_id, key)).fetchone()
                    if same is not None and (same[0], same[1]) == (name, payload):
                        return "duplicate", None
                    return "refused", f"key {key!r} was already used for another event"
                if dropped is not None:
                    return "dropped", dropped
                self._exec(self._due, (now, now, action_id))
                if self._channel is not None:
                    self._exec("SELECT pg_notify(%s, '')", (self._channel,))
                return "sent", None

        return body

    def with_outbox(
        self, action_id: str, write: Body[None], inbox: StepInbox, now: float
    ) -> Body[None]:
        """A step's write (``write``: its checkpoint or its end) with what it does to the
        inbox and its children, in one transaction."""

        def body(batched: bool) -> None:
            with self._link.transaction() if not batched else _NO_TRANSACTION:
                # first: a fence that fails (LeaseLost) must fail before anything else is
                # written, as a batch commits its other jobs (an end deletes the row and its
                # events by cascade: the takes below then change nothing)
                write(True)
                self.spawn(action_id, inbox.children, now)
                taken: list[tuple[int, int | None, str | None]] = [
                    (e, None, why) for e, why in inbox.dropped
                ]
                if inbox.consumed is not None:
                    taken.append((inbox.consumed, inbox.seq, None))
                gone = 0
                for event_id, seq, why in taken:
                    gone += self._exec(self._take, (now, seq, why, event_id, action_id)).rowcount
                if gone:
                    self._exec(self._taken, (gone, action_id))

        return body

    def spawn(self, parent: str, children: Sequence[Child], now: float) -> None:
        """Insert ``children`` as actions of ``parent`` (inside the caller's transaction)."""
        for c in children:
            params: tuple[Any, ...] = (
                c.id, c.kind, c.state, c.version, c.payload, now, now, now, c.incarnation,
                parent, parent,
            )  # fmt: skip
            if self._exec(self._child, params).rowcount != 1:
                raise ChildConflict(
                    f"action {parent}: cannot spawn child {c.id!r}: a live action has that "
                    "id. Fix: derive child ids from the parent's id and the child's place"
                )
        if children and self._channel is not None:
            self._exec("SELECT pg_notify(%s, '')", (self._channel,))


def _delivered(rows: Sequence[Any]) -> list[Delivered]:
    """Inbox rows (id, name, payload, key, sent_at) as `Delivered` events."""
    return [Delivered(int(r[0]), r[1], r[2], r[3], float(r[4])) for r in rows]

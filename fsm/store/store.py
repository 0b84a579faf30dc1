"""`Store`: the checkpoint store over one database, and the writes every step makes.

Every checkpoint write is *fenced*: ``UPDATE ... WHERE id = ? AND epoch = ?``. A drive claims
the row by bumping ``epoch`` and setting a lease (owner, expiry); any write from an older
claim matches no row and is refused with `LeaseLost` (see `fsm.store.leases`).

The writes on a step's path are here, as prepared SQL (`fsm.store.statements`) run through
the `Link` (`fsm.store.connection`); the schema (`fsm.store.schema`), the cold reads
(`fsm.store.inspection`) and the clock (`fsm.store.clock`) live in modules of their own,
which the methods below call.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, ParamSpec, TypeVar

import peewee

from fsm.events import Delivered
from fsm.store import channel, leases, records, schema
from fsm.store.clock import DatabaseClock
from fsm.store.committer import Body, Committer
from fsm.store.connection import Link
from fsm.store.controls import ControlWrites
from fsm.store.files import sqlite_database
from fsm.store.hooks import StoreHooks, environment_hooks
from fsm.store.inbox import Inbox, StepInbox, Verdict
from fsm.store.operations import Operations
from fsm.store.statements import Statements
from fsm.store.writes import StepValues, Writes

P = ParamSpec("P")
R = TypeVar("R")

_NEVER = float("inf")
"""``ended_since`` of a start that ignores kept outcomes (a deliberate new incarnation)."""


DEFAULT_LEASE_TTL = 30.0
"""Seconds a claim stays valid without a write, unless the store is told otherwise."""


class Store(Operations):
    """The checkpoint store over one peewee database (SQLite by default).

    ``lease_ttl``: seconds a claim stays valid without a write.
    ``log_transitions``: write the per-step transition log.
    ``hooks``: test tools run at the write points and before each statement (`StoreHooks`);
    by default those the environment arms (``FSM_CRASH``, ``FSM_DB_FAULTS``: see
    `fsm.testing.faults`), usually none.
    ``local_clock``: this host's clock (unix seconds); `now` corrects it to the database's.
    The reads of single rows, resources and polls, and the cold paths, come from `Reads`;
    the operator's reads (`list_actions`, `inspect`, `history`), `prune` and the row
    controls (`quarantine`, `mark_due`, ...) from `Operations`.
    ``readonly``: inspection only (``fsm actions``, ``fsm diagram --db``), safe to point at
    any file: no table is created and nothing migrated; through `open_store` or `sqlite` the
    connection cannot write either (SQLite ``mode=ro``, a PostgreSQL read-only session).
    The schema must be fsm's (`NotAnFsmDatabase` otherwise) and not newer than this code
    (`SchemaError`); an older one is read as it is, and a query needing what it lacks raises
    `SchemaError` saying how to upgrade.
    """

    def __init__(
        self,
        database: peewee.Database,
        *,
        lease_ttl: float = DEFAULT_LEASE_TTL,
        log_transitions: bool = True,
        hooks: StoreHooks | None = None,
        local_clock: Callable[[], float] = time.time,
        readonly: bool = False,
    ) -> None:
        self.db = database
        self.readonly = readonly
        self._read_version: int | None = None
        if not (isinstance(lease_ttl, int | float) and 0 < lease_ttl < math.inf):
            raise ValueError(f"lease_ttl must be a finite number of seconds > 0, got {lease_ttl}")
        self.lease_ttl = lease_ttl
        self.log_transitions = log_transitions
        self._link = link = Link(database, environment_hooks() if hooks is None else hooks)
        self._sqlite = link.sqlite
        self._exec = link.exec
        self._sql = Statements(database.param)
        self.committer = Committer(link)
        self.db.connect(reuse_if_open=True)
        if readonly:
            check = schema.check_schema
            self._read_version = self._cold(check, self._exec, self._sqlite, database.param)
        else:
            self._cold(schema.migrate, database, self._sqlite)
        self.due_channel = None if self._sqlite else channel.current_channel(link)
        """PostgreSQL: the NOTIFY channel of this store's schema (`fsm.store.channel`)."""
        self._writes = Writes(link, self._sql, self.due_channel)
        self.inbox = Inbox(link, self.due_channel)
        """The events' statements (`fsm.store.inbox`)."""
        self.control_writes = ControlWrites(
            link, self._sql, self._write_now, lambda: self.log_transitions, self.due_channel
        )
        """The operator's controls' writes (`fsm.Controls` decides them)."""
        self._clock = DatabaseClock(local_clock, None if self._sqlite else database.connection)
        self._local_clock = local_clock

    @classmethod
    def sqlite(
        cls,
        path: str | os.PathLike[str],
        *,
        synchronous: Literal["OFF", "NORMAL", "FULL"] = "NORMAL",
        busy_timeout: float = 10.0,
        readonly: bool = False,
        **kwargs: Any,
    ) -> Store:
        """A store on a SQLite file in WAL mode; a new file is created owner-only (0600).

        ``readonly``: open the existing file through a ``mode=ro`` URI, without switching its
        journal mode; a file that is not there raises `DatabaseNotFound`.
        """
        db = sqlite_database(
            path, synchronous=synchronous, busy_timeout=busy_timeout, readonly=readonly
        )
        return cls(db, readonly=readonly, **kwargs)

    @property
    def is_sqlite(self) -> bool:
        return self._sqlite

    @property
    def hooks(self) -> StoreHooks:
        """The test hooks in force; assign `NO_HOOKS` to switch them off."""
        return self._link.hooks

    @hooks.setter
    def hooks(self, hooks: StoreHooks) -> None:
        self._link.hooks = hooks

    @property
    def failed_calls(self) -> int:
        """Statements that raised so far (a worker asks whether a drive met a failure)."""
        return self._link.failed_calls

    @property
    def schema_version(self) -> int:
        return self._cold(schema.schema_version)

    def close(self) -> None:
        self.committer.close()
        self.db.close()

    def now(self) -> float:
        """The current unix time on the database's clock (the executor's default clock);
        see `fsm.store.clock`."""
        return self._clock.now()

    @property
    def clock(self) -> Callable[[], float]:
        """`now` as a callable an executor calls twice a step, as short as it can be: the
        local clock itself on SQLite (on this host, nothing to correct), else the database
        clock's own method."""
        return self._local_clock if self._sqlite else self._clock.now

    # -- the hot path ---------------------------------------------------------------------

    def insert(
        self,
        action_id: str,
        kind: str,
        state: str,
        version: int,
        payload: str,
        resources: Iterable[str],
        now: float,
        *,
        incarnation: str = "",
        ended_since: float | None = None,
        lease: tuple[str, float] | None = None,
    ) -> str | records.KeptOutcome | None:
        """Create a live action (a new ``incarnation`` of its id) with its resources, atomically.

        Returns ``None`` if created. Otherwise nothing is changed and it returns the kind of the
        live action that already has this id, or, when ``ended_since`` is given, the kept
        outcome of an incarnation of this id that ended at or after that time. Raises
        `ResourceConflict` if a resource is taken.

        ``lease``: (owner, until): the row is created already claimed, as a claim right after
        the start would leave it (epoch `leases.CLAIMED_EPOCH`), so that the drive that starts an
        action does not commit twice.
        """
        body = self._start(action_id, kind, state, version, payload, resources, now,
                           incarnation, ended_since, lease)  # fmt: skip
        return self._write_now("start", body)

    def insert_soon(
        self,
        action_id: str,
        kind: str,
        state: str,
        version: int,
        payload: str,
        resources: Iterable[str],
        now: float,
        *,
        incarnation: str = "",
        ended_since: float | None = None,
        lease: tuple[str, float] | None = None,
    ) -> Awaitable[str | records.KeptOutcome | None]:
        """`insert` (same arguments) through the committer: a start made on the event loop
        (`Executor.start`) is batched with the drives' writes instead of holding the loop
        for its commit (on PostgreSQL, a round trip)."""
        body = self._start(action_id, kind, state, version, payload, resources, now,
                           incarnation, ended_since, lease)  # fmt: skip
        return self.committer.run("start", body)

    def _start(
        self,
        action_id: str,
        kind: str,
        state: str,
        version: int,
        payload: str,
        resources: Iterable[str],
        now: float,
        incarnation: str,
        ended_since: float | None,
        lease: tuple[str, float] | None,
    ) -> Body[str | records.KeptOutcome | None]:
        """The write of `insert` and `insert_soon`."""
        since = _NEVER if ended_since is None else ended_since
        owner, until = (None, None) if lease is None else lease
        epoch = 0 if lease is None else leases.CLAIMED_EPOCH
        params = (action_id, kind, state, version, payload, now, epoch, now, now, incarnation)
        return self._writes.start((*params, owner, until), tuple(resources), since)

    def _write_now(self, point: str | None, body: Body[R], *, solo: bool = False) -> R:
        """Run a write for a synchronous caller: through the committer while it has work (one
        connection writes, so no caller sleeps in SQLite's busy handler), else right here."""
        committer = self.committer
        if committer.busy and not committer.on_thread():
            return committer.call(point, body, solo=solo)
        if point is None:
            result = body(False)
        else:
            with self._link.write_point(point):
                result = body(False)
        committer.wrote(1)
        return result

    def claim(self, action_id: str, owner: str, now: float) -> records.Claimed | records.ClaimMiss:
        """Take the lease on a live action and read it, in one statement (`leases.claim`)."""
        until = now + self.lease_ttl
        return self._write_now(
            None,
            lambda _: leases.claim(self._link, self._sql, action_id, owner, now, until),
            solo=True,
        )

    def claim_soon(
        self, action_id: str, owner: str, now: float
    ) -> Awaitable[records.Claimed | records.ClaimMiss]:
        """`claim` through the committer, so that the event loop does not wait on the
        database: batched with other drives' writes (on PostgreSQL in the same pipeline,
        sharing their commit)."""
        until = now + self.lease_ttl
        taking = leases.claim_statement(self._link, self._sql, action_id, owner, now, until)
        return self.committer.run("claim", taking)

    def write(
        self,
        action_id: str,
        epoch: int,
        *,
        state: str,
        payload: str,
        seq: int,
        was: records.Bookkeeping,
        new: records.Bookkeeping,
        acquired: Sequence[str],
        released: Sequence[str],
        entry: records.LogEntry | None,
        now: float,
    ) -> None:
        """Persist a checkpoint, its resource changes and its log entry atomically.

        ``was`` is the row's bookkeeping as it stands, ``new`` what it must become (see
        `step_update`). Raises `LeaseLost` if another driver has claimed the row since.

        A step without resource changes is one autocommit statement: on SQLite an ``UPDATE``
        whose log row a trigger writes inside the same statement; on PostgreSQL an ``UPDATE``
        and the log ``INSERT`` joined in one data-modifying CTE (one round-trip). Anything
        else runs in an explicit transaction. A new ``wake_at`` is written only if no notify
        arrived since the claim (`mark_due`); otherwise the action is left due now.
        """
        step = (state, payload, seq, was, new, acquired, released, entry, now)
        self._write_now(*self._writes.step(action_id, epoch, step, self.log_transitions))

    def write_soon(
        self, action_id: str, epoch: int, step: StepValues, inbox: StepInbox | None = None
    ) -> Awaitable[None]:
        """`write` through the committer (``step``: its arguments after ``epoch``, in order):
        batched with other drives' writes, off the event loop's thread; awaiting it returns
        once the step is durable. ``inbox``: the event the step took, those it set aside and
        the children it spawned, written in the same transaction (`fsm.store.inbox`)."""
        point, body = self._writes.step(action_id, epoch, step, self.log_transitions)
        if inbox is not None:
            point, body = "inbox", self.inbox.with_outbox(action_id, body, inbox, step[-1])
        return self.committer.run(point, body)

    # -- the inbox ------------------------------------------------------------------------

    def inbox_counts(self, ids: Iterable[str]) -> dict[str, int]:
        """{id: pending events} of the actions among ``ids`` that have any."""
        return self.inbox.counts(list(ids))

    def inbox_count(self, action_id: str) -> int:
        """How many events wait in the action's inbox (the row's count)."""
        return self.inbox.count(action_id)

    def pending_events(self, action_id: str, names: Sequence[str] | None = None) -> list[Delivered]:
        """The action's pending events named ``names`` (None: all), in the order they
        were sent (at most `fsm.store.inbox.READ_AT_MOST`)."""
        if names is None:
            return self.inbox.read_all(action_id)
        return self.inbox.read(action_id, names)

    def send_event(
        self,
        action_id: str,
        name: str,
        payload: str,
        key: str,
        now: float,
        check: Callable[[str, str], Verdict],
    ) -> Awaitable[tuple[str, str | None]]:
        """Store an event in the action's inbox, make it due and wake the workers, in one
        transaction through the committer (`fsm.store.inbox.Inbox.send`)."""
        body = self.inbox.send(action_id, name, payload, key, now, check)
        return self.committer.run("send", body)

    def send_event_now(
        self,
        action_id: str,
        name: str,
        payload: str,
        key: str,
        now: float,
        check: Callable[[str, str], Verdict],
    ) -> tuple[str, str | None]:
        """`send_event` for a synchronous caller (an operator's queued cancel)."""
        return self._write_now("send", self.inbox.send(action_id, name, payload, key, now, check))

    def record_failure(
        self,
        action_id: str,
        epoch: int,
        *,
        attempts: int,
        error: str,
        wake_at: float | None,
        broken: bool,
        now: float,
    ) -> None:
        """Record a failed step on the row, keeping its checkpoint, and let go of the lease.

        The fallback when a step's own write failed: the attempt, its error and its backoff
        (or the broken mark) still reach the row, so the action is neither due again at once
        nor silently retried. Raises `LeaseLost` if another driver holds the row now.
        """
        params = (attempts, error, wake_at, broken, now, action_id, epoch)
        self._write_now("checkpoint", self._writes.failure(action_id, epoch, params))

    def finish(
        self,
        action_id: str,
        epoch: int,
        entry: records.LogEntry,
        now: float,
        *,
        status: str,
        state: str,
        error: str | None = None,
        cause: str | None = None,
    ) -> None:
        """Terminal: delete the row (its resources go with it, by cascade), keep its outcome
        (``status`` done, failed or stopped, the terminal ``state``, the ``error`` and the
        ``cause`` it carried) and log the end, in one transaction."""
        logged = self.log_transitions
        body = self._writes.ending(
            action_id,
            epoch,
            entry,
            now,
            logged,
            status=status,
            state=state,
            error=error,
            cause=cause,
        )
        self._write_now("finish", body)

    def finish_soon(
        self,
        action_id: str,
        epoch: int,
        entry: records.LogEntry,
        now: float,
        inbox: StepInbox | None = None,
        **outcome: Any,
    ) -> Awaitable[None]:
        """`finish` (same arguments) through the committer (see `write_soon`); ``inbox``:
        children the last step spawned, inserted in the same transaction."""
        logged = self.log_transitions
        body = self._writes.ending(action_id, epoch, entry, now, logged, **outcome)
        if inbox is not None:
            body = self.inbox.with_outbox(action_id, body, inbox, now)
        return self.committer.run("finish", body)

    def claim_due(
        self, owner: str, now: float, limit: int, kinds: Mapping[str, int] | None = None
    ) -> list[records.Claimed]:
        """Take the leases of up to ``limit`` due actions (a worker's batch), oldest first;
        ``kinds``: name -> newest version the caller can read (see `leases.claim_due`)."""
        until = now + self.lease_ttl
        return self._write_now(
            None,
            lambda _: leases.claim_due(self._link, self._sql, owner, now, until, limit, kinds),
            solo=True,
        )

    def claim_due_soon(
        self, owner: str, now: float, limit: int, kinds: Mapping[str, int] | None = None
    ) -> Awaitable[list[records.Claimed]]:
        """`claim_due` through the committer: batched with the drives' writes (on PostgreSQL
        in the same pipeline, sharing their commit), off the event loop's thread."""
        until = now + self.lease_ttl
        due = leases.due_claim(self._link, self._sql, owner, now, until, limit, kinds)
        if due is None:
            nothing = asyncio.get_running_loop().create_future()
            nothing.set_result([])
            return nothing
        return self.committer.run("claim", due)

    def release_dead_leases(self) -> int:
        """Let go of the leases of certainly dead owners; see `leases.release_dead_leases`."""
        return leases.release_dead_leases(self._link, self._sql)

    def renew(self, owner: str, until: float, ids: Iterable[str]) -> int:
        """Extend the leases ``owner`` holds on ``ids`` to ``until``; see `leases.renew`."""
        return leases.renew(self._link, self._sql, owner, until, ids)

    def wake_workers(self) -> None:
        """Tell listening workers that something became due (PostgreSQL NOTIFY; no-op else)."""
        self._writes.wake_workers()

    def unclaim(self, action_id: str, epoch: int) -> None:
        """Let go of the lease without touching the checkpoint (the epoch moves on)."""
        self._write_now("unclaim", lambda _: self._exec(self._sql.unclaim, (action_id, epoch)))

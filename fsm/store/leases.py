"""Lease owners: who holds a claim, whether that owner is certainly dead, and renewals.

A drive claims a row by bumping its fencing ``epoch`` and setting a lease (owner, expiry);
any write from an older claim matches no row and is refused with `LeaseLost`. On one host a
lease whose owner process is dead is taken over at once, so a crashed driver never blocks
the next run; anywhere else a lease is left to expire.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from fsm.store.connection import Link
from fsm.store.pipeline import Statement
from fsm.store.records import Claimed, ClaimMiss
from fsm.store.statements import Statements

log = logging.getLogger("fsm.store")

HOST = socket.gethostname()

CLAIMED_EPOCH = 1
"""The epoch of a row created already claimed (`Store.insert` with a lease): the one a claim
of a new row (epoch 0) gives it."""


@functools.cache
def _process_space() -> str | None:
    """A short hash naming where a pid means this process: host, boot and PID namespace.

    Two processes with the same pid name the same process only if all three agree: workers in
    containers sharing a hostname (host networking) have PID namespaces of their own, and a
    host that rebooted reuses pids. ``None`` when ``/proc`` does not tell (then no owner is
    ever certainly dead).
    """
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot = f.read().strip()
    except OSError:
        return None
    return hashlib.sha256(f"{HOST}\0{boot}\0{pid_ns}".encode()).hexdigest()[:12]


def new_owner() -> str:
    """A lease owner token: ``host:pid:random:space`` (see `_process_space`).

    The random part keeps two executors of one process apart. Without a readable ``/proc``
    the token has no space part, and no one will ever take its leases before they expire.
    """
    token = f"{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    space = _process_space()
    return token if space is None else f"{token}:{space}"


def owner_is_dead(owner: str) -> bool:
    """True only when ``owner`` is certainly dead: a process of our space that is gone.

    Anything else (another host, another container, another boot, an older token without a
    space, an unreadable ``/proc``) may be alive, and its lease is left to expire: taking a
    live lease lets two drivers run one step at once. (A reused pid only makes a dead owner
    look alive: the safe direction.)
    """
    parts = owner.split(":")
    here = _process_space()
    if len(parts) != 4 or here is None:
        return False
    host, pid_text, _, space = parts
    if host != HOST or space != here or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(
    link: Link, sql: Statements, action_id: str, owner: str, now: float, until: float
) -> Claimed | ClaimMiss:
    """Take the lease on a live action until ``until`` and read it, in one statement.

    Returns `ClaimMiss.BUSY` when another live driver holds it, `ClaimMiss.MISSING` when
    there is no such action, `ClaimMiss.QUARANTINED` when the row is set aside. A lease
    ``owner`` already holds (left behind by a drive whose store call failed) is taken again
    at once; the executor keeps two of its own tasks apart in memory. The lease of a
    certainly dead owner (`owner_is_dead`) is taken over.
    """
    taking = claim_statement(link, sql, action_id, owner, now, until)
    with link.write_point("claim"):
        cursor = link.exec(taking.sql, taking.params)
    return taking.judge(cursor)


def claim_statement(
    link: Link, sql: Statements, action_id: str, owner: str, now: float, until: float
) -> Statement[Claimed | ClaimMiss]:
    """`claim`'s one statement, for the committer to batch with other writes
    (`Store.claim_soon`); its judge reads the claimed row, or finds out why there is none
    (reads, and the takeover of a dead owner's lease, run after the claim's commit)."""

    def judge(cursor: Any) -> Claimed | ClaimMiss:
        row = cursor.fetchone()
        if row is not None:
            return Claimed(action_id, *row)
        return _missed(link, sql, action_id, owner, until)

    return Statement(link, sql.claim, (owner, until, action_id, now, owner), judge)


def _missed(
    link: Link, sql: Statements, action_id: str, owner: str, until: float
) -> Claimed | ClaimMiss:
    """Why a claim took no row; a dead owner's lease is taken over instead."""
    info = link.exec(sql.lease_of, (action_id,)).fetchone()
    if info is None:
        return ClaimMiss.MISSING
    holder, quarantined = info
    if quarantined is not None:
        return ClaimMiss.QUARANTINED
    if holder is not None and owner_is_dead(holder):
        log.info(
            "action %s: taking over the lease of dead driver %s",
            action_id,
            holder,
            extra={"action": action_id},
        )
        row = link.exec(sql.steal, (owner, until, action_id, holder)).fetchone()
        if row is not None:
            return Claimed(action_id, *row)
    return ClaimMiss.BUSY


def claim_due(
    link: Link,
    sql: Statements,
    owner: str,
    now: float,
    until: float,
    limit: int,
    kinds: Mapping[str, int] | None,
) -> list[Claimed]:
    """Take the leases of up to ``limit`` due actions until ``until``, oldest first.

    Due: not quarantined, ``wake_at`` passed, no live lease. ``kinds`` (name -> newest
    version the caller can read) restricts the batch to the rows the caller can drive:
    a worker must not claim (and quarantine) a kind it does not load, or a row written by
    a newer version of its kind; those wait for a worker that can. ``None``: every kind.
    On PostgreSQL the rows are picked ``FOR UPDATE SKIP LOCKED``, so concurrent workers
    never wait on each other; on SQLite the statement runs under the database's single
    write lock.
    """
    due = due_claim(link, sql, owner, now, until, limit, kinds)
    if due is None:
        return []
    with link.write_point("claim"):
        return due(False)


def due_claim(
    link: Link,
    sql: Statements,
    owner: str,
    now: float,
    until: float,
    limit: int,
    kinds: Mapping[str, int] | None,
) -> Statement[list[Claimed]] | None:
    """`claim_due`'s one statement (``None`` when ``kinds`` is empty: nothing to claim),
    for the committer to batch with other writes (`Store.claim_due_soon`)."""
    if kinds is not None and not kinds:
        return None
    statement, kind_params = sql.for_kinds(sql.claim_due, kinds)
    params = (owner, until, now, now, *kind_params, limit)
    return Statement(link, statement, params, _claimed)


def _claimed(cursor: Any) -> list[Claimed]:
    return [Claimed(*row) for row in cursor.fetchall()]


def release_dead_leases(link: Link, sql: Statements) -> int:
    """Let go of the leases of certainly dead owners (see `owner_is_dead`); returns how many.

    A worker's batch claim cannot ask whether a lease's owner is alive, so without this
    the actions of a driver that crashed would wait for their leases to expire. The
    release bumps the epoch: were the owner alive after all, its writes are refused.
    """
    owners = link.exec(sql.lease_owners).fetchall()
    released = 0
    for (owner,) in owners:
        if owner_is_dead(owner):
            log.info("releasing the leases of dead driver %s", owner)
            released += link.exec(sql.release_owner, (owner,)).rowcount
    return released


def renew(link: Link, sql: Statements, owner: str, until: float, ids: Iterable[str]) -> int:
    """Extend the leases ``owner`` holds on ``ids`` to ``until``; returns how many it holds.

    Only the actions being driven right now: a lease left behind by a drive that ended
    (its release failed) must expire, or no one drives that action again while its owner
    lives. One statement whatever the number of ids (a JSON array on SQLite, an array
    parameter on PostgreSQL).
    """
    wanted = list(ids)
    if not wanted:
        return 0
    id_list = orjson.dumps(wanted).decode() if link.sqlite else wanted
    return int(link.exec(sql.renew, (until, owner, id_list)).rowcount)

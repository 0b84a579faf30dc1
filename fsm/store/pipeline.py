"""One-statement writes, and PostgreSQL batches of them sent in one round trip.

On PostgreSQL a write costs its round trips more than its work: a batch of ten steps sent
statement by statement (``BEGIN``, ten ``UPDATE``\\ s, ``COMMIT``) waits twelve times for
the server, and on a busy machine each wait is a context switch to a backend and back. So
every write of a step's path is one statement on PostgreSQL (its log row, its resources and
its wake-up notification ride in the same statement as CTEs), described by a `Statement`:
what it sends and how its result reads. The committer sends a batch of them with psycopg's
pipeline mode (`fsm.store.connection.Link.pipeline`): ``BEGIN``, every statement,
``COMMIT``, then one sync; the results are read once the batch committed. A statement
refused by the server aborts the batch: `refused` says which one, so that its neighbours
are committed again one by one, as a batch run statement by statement would.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import peewee

from fsm.errors import LeaseLost
from fsm.store.connection import Link

R = TypeVar("R")


class Statement(Generic[R]):
    """A write that is one statement: its SQL and parameters, and ``judge``, which reads the
    cursor once the statement ran (the result, or `LeaseLost` when its fence matched no row).

    Called (``statement(batched)``, as any job body) it runs at once. ``fallback``: a body
    run instead when the statement, run alone, breaks a constraint (an optimistic statement
    that takes resources: the fallback runs the careful transaction that says which
    resource is taken, and by whom); inside a batch the error is raised, so that the batch
    is split and this write runs again alone.
    """

    __slots__ = ("fallback", "judge", "link", "params", "sql")

    def __init__(
        self,
        link: Link,
        sql: str,
        params: Sequence[Any],
        judge: Callable[[Any], R],
        fallback: Callable[[bool], R] | None = None,
    ) -> None:
        self.link = link
        self.sql = sql
        self.params = params
        self.judge = judge
        self.fallback = fallback

    def __call__(self, batched: bool) -> R:
        try:
            cursor = self.link.exec(self.sql, self.params)
        except peewee.IntegrityError:
            if self.fallback is None or batched:
                raise
            return self.fallback(batched)
        return self.judge(cursor)


def fenced(action_id: str, epoch: int) -> Callable[[Any], None]:
    """The judge of a fenced write: exactly one row changed, or `LeaseLost`."""

    def judge(cursor: Any) -> None:
        if cursor.rowcount != 1:
            raise LeaseLost(action_id, f"claim epoch {epoch} was taken over")

    return judge


def pipelined(link: Link, bodies: Sequence[object]) -> list[Statement[Any]] | None:
    """The statements of a batch of job bodies that can be sent as one pipeline
    (PostgreSQL, and every body one `Statement`), else ``None``."""
    if link.sqlite:
        return None
    statements = [body for body in bodies if isinstance(body, Statement)]
    return statements if len(statements) == len(bodies) else None


def refused(link: Link, sent: Sequence[Any]) -> int | None:
    """After a pipelined batch failed: the index of the statement the server refused, or
    ``None`` when the failure is the batch's own (its ``COMMIT``, or a lost connection:
    then no one can tell what the server did, and nothing may be repeated).

    The server runs a pipeline in order and skips everything after an error, so the
    refused statement is the first whose cursor holds no result, provided the connection
    still stands (then the server answered, and the ``COMMIT`` was skipped).
    """
    if not link.usable():
        return None
    for index, cursor in enumerate(sent):
        if cursor.pgresult is None:
            return index
    return None

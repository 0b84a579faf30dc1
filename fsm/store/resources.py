"""Named resources held by live actions (the seed's coin locks, generalised).

Taking and releasing them runs inside the transaction of the checkpoint (or start) that
changes them, and the foreign key to ``fsm_action`` cascades, so no resource outlives its
action. A resource held by another action is a `ResourceConflict`.
"""

from __future__ import annotations

from collections.abc import Iterable

from fsm.errors import ResourceConflict
from fsm.store.connection import Link
from fsm.store.statements import Statements


def change_held(
    link: Link,
    sql: Statements,
    action_id: str,
    acquired: Iterable[str],
    released: Iterable[str],
    now: float,
) -> None:
    """Take ``acquired`` and let go of ``released`` for ``action_id`` (inside a transaction).

    Taking one the action already holds changes nothing; one another action holds raises
    `ResourceConflict`, which rolls the whole transaction back.
    """
    for name in acquired:
        if link.exec(sql.acquire, (name, action_id, now)).rowcount == 1:
            continue
        row = link.exec(sql.holder_of, (name,)).fetchone()
        if row is not None and row[0] != action_id:
            raise ResourceConflict(name, row[0], action_id)
    for name in released:
        link.exec(sql.release_one, (name, action_id))


def holder(link: Link, sql: Statements, name: str) -> str | None:
    """The live action holding resource ``name``, if any."""
    row = link.exec(sql.holder_of, (name,)).fetchone()
    return None if row is None else str(row[0])


def held_by(link: Link, sql: Statements, action_id: str) -> list[str]:
    """The resources ``action_id`` holds, by name."""
    return [str(r[0]) for r in link.exec(sql.resources_of, (action_id,)).fetchall()]


def all_held(link: Link, sql: Statements) -> dict[str, str]:
    """Every held resource and its holder."""
    return {str(name): str(holder) for name, holder in link.exec(sql.all_resources)}

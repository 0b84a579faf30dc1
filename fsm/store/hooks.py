"""The store's test seam: callables run at its named write points and before its statements.

Crash-safety is only believable if it is tested by killing real processes at every place the
framework writes, and by failing its statements the way a real database does. The store
does neither itself: it names its write points (`WRITE_POINTS`) and calls the `StoreHooks`
it was given there, and the testing tools (`fsm.testing.faults`: crash points, database
faults, "kill this process after N commits") are hooks. Without hooks the hot path pays one
``is None`` test per statement.

Hooks also come from the environment (``FSM_CRASH``, ``FSM_DB_FAULTS``, ...), so a crash
runner can arm a driver process it did not write. A store made without explicit hooks asks
`environment_hooks` once, at construction: with none of `ENVIRONMENT` set (production) that
is one look at the environment and nothing is imported; with one set, the testing tools
(`fsm.testing.faults`) are imported then, and read it. So ``import fsm`` does not load the
testing tools, and any program is armed by the variables whatever it imported.
`warn_armed` is here, below both, because the executor's double-drive switch is armed from
the environment too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import TypeVar

import attrs

T = TypeVar("T")

WRITE_POINTS: tuple[str, ...] = (
    "start",  # insert of a new action and its resources
    "claim",  # taking the lease (a single drive, or a worker's batch)
    "checkpoint",  # the step's checkpoint (and its log row)
    "resources",  # a checkpoint that also changes resources (one transaction)
    "inbox",  # a checkpoint that also takes an event or spawns children (one transaction)
    "finish",  # the terminal delete (resources released by cascade, log row)
    "unclaim",  # letting go of the lease without a checkpoint change
    "wake",  # marking an action due (notify)
    "send",  # an event stored in an action's inbox, the action made due (one transaction)
    "control",  # an operator's control written under the lease (retry, cancel, ...)
    "quarantine",  # setting an unreadable row aside
)
"""Every place the store writes, in the order a drive usually passes them.

The transition log has no point of its own: its row is written by the checkpoint's
statement (a trigger on SQLite, a CTE on PostgreSQL) or inside the same transaction, so no
crash can fall between the two.
"""

PHASES = ("before", "after")
"""A write point is passed twice: ``<point>.before`` the write, ``<point>.after`` it committed."""


@attrs.frozen
class StoreHooks:
    """What the store calls, if set.

    ``point(name)``: at every pass of a write point, ``name`` being ``<point>.<phase>``
    (`WRITE_POINTS`, `PHASES`); ``.after`` runs once the write committed, before the store
    returns. ``statement(sqlite)``: before every statement sent to the database but a
    rollback; what it raises is what the statement raised (``sqlite``: the database is
    SQLite, so the hook can raise that driver's own errors).
    """

    point: Callable[[str], None] | None = None
    statement: Callable[[bool], None] | None = None

    def __or__(self, other: StoreHooks) -> StoreHooks:
        """Both hooks' callables, ``self``'s first (a crash plan and database faults)."""
        return StoreHooks(_both(self.point, other.point), _both(self.statement, other.statement))


NO_HOOKS = StoreHooks()


def _both(
    first: Callable[[T], None] | None, second: Callable[[T], None] | None
) -> Callable[[T], None] | None:
    if first is None or second is None:
        return first or second

    def both(value: T) -> None:
        first(value)
        second(value)

    return both


CRASH_ENV = "FSM_CRASH"
TRACE_ENV = "FSM_CRASH_TRACE"
DB_FAULTS_ENV = "FSM_DB_FAULTS"
DB_FAULTS_TRACE_ENV = "FSM_DB_FAULTS_TRACE"
ENVIRONMENT = (CRASH_ENV, TRACE_ENV, DB_FAULTS_ENV)
"""The variables that arm hooks (`fsm.testing.faults` reads them, and the traces' files)."""


def environment_hooks() -> StoreHooks:
    """The hooks this process's environment arms (`NO_HOOKS` when it arms none)."""
    if not any(os.environ.get(name) for name in ENVIRONMENT):
        return NO_HOOKS
    from fsm.testing.faults import hooks_from_env  # test tools, loaded only when armed

    return hooks_from_env()


log = logging.getLogger("fsm.testing")


def warn_armed(name: str, value: str) -> None:
    """Say, in one WARNING line, that the test-only environment variable ``name`` is acting.

    Called by every reader of such a variable (crash points, database faults, the executor's
    double-drive mode) at the moment it arms, so a variable forgotten in a production
    environment shows in the logs instead of silently killing or failing work.
    """
    log.warning(
        "%s=%r is set: test-only fault injection is armed in this process (unset it in production)",
        name,
        value,
    )

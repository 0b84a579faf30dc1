"""Definition-time checks of a kind: every mistake found at import, not in production.

Each check is a tiny function over a `Definition` (and, for the graph checks, the
python-statemachine class built once from the table) that raises `fsm.DefinitionError` whose
message names the kind, the state and the fix. They are grouped by topic:
`fsm.validate.declaration` (names, data type, version, ids, policies), `fsm.validate.table`
(rows, callbacks, rejection and cancel rows), `fsm.validate.events` (event rows' types, the
kind's ``events`` and ``unaccepted``, deadlines), `fsm.validate.blocking` (``blocking = True``),
`fsm.validate.reachability` (python-statemachine's graph checks) and `fsm.validate.hints`
(the warnings). They run in the order of `STRUCTURE_CHECKS` then `GRAPH_CHECKS`: the
structural ones make sure the table is well-formed enough to build a graph at all.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable

from statemachine import StateMachine

from fsm.definition import Definition
from fsm.validate.blocking import check_blocking_flags, check_blocking_has_effect
from fsm.validate.declaration import (
    check_action_id,
    check_data_storable,
    check_data_type,
    check_name,
    check_reserved_names,
    check_retry,
    check_timeout,
    check_upcasters,
    check_version,
)
from fsm.validate.events import (
    check_deadlines,
    check_declared_events,
    check_event_names,
    check_event_rows_live,
    check_event_types,
    check_unaccepted,
)
from fsm.validate.hints import (
    GuardedExitWarning,
    KindWarning,
    UntypedDataWarning,
    warn_guarded_exits,
    warn_untyped_data,
)
from fsm.validate.reachability import (
    check_path_to_terminal,
    check_reachable,
    check_trap_states,
    statemachine_of,
)
from fsm.validate.table import (
    check_callbacks,
    check_cancel_rows,
    check_initial,
    check_initial_not_terminal,
    check_known_states,
    check_rejection_rows,
    check_shadowed,
    check_table_ordered,
    check_terminal_exits,
    check_wait_exits,
)

STRUCTURE_CHECKS: tuple[Callable[[Definition], None], ...] = (
    check_reserved_names,
    check_name,
    check_data_type,
    check_data_storable,
    check_version,
    check_upcasters,
    check_action_id,
    check_retry,
    check_timeout,
    check_blocking_flags,
    check_initial,
    check_initial_not_terminal,
    check_table_ordered,
    check_known_states,
    check_terminal_exits,
    check_event_types,
    check_event_names,
    check_declared_events,
    check_event_rows_live,
    check_unaccepted,
    check_deadlines,
    check_callbacks,
    check_shadowed,
    check_wait_exits,
    check_rejection_rows,
    check_cancel_rows,
    check_blocking_has_effect,
)

GRAPH_CHECKS: tuple[Callable[[Definition, type[StateMachine]], None], ...] = (
    check_trap_states,
    check_reachable,
    check_path_to_terminal,
)

WARNINGS: tuple[Callable[[Definition], list[KindWarning]], ...] = (
    warn_untyped_data,
    warn_guarded_exits,
)


def check_definition(d: Definition) -> list[KindWarning]:
    """Run every check; raise the first `DefinitionError`, return the warnings."""
    for check in STRUCTURE_CHECKS:
        check(d)
    sm = statemachine_of(d)
    for graph_check in GRAPH_CHECKS:
        graph_check(d, sm)
    return [w for warn in WARNINGS for w in warn(d)]


def validate_kind(kind_cls: type) -> list[KindWarning]:
    """Check a kind class again (for ``fsm validate``): raise on errors, return the warnings.

    A class that got past its own creation already passed the errors; calling this is how a
    tool collects the warnings without catching them from `warnings`.
    """
    definition = getattr(kind_cls, "__fsm_definition__", None)
    if not isinstance(definition, Definition):
        raise TypeError(f"{kind_cls!r} is not a declarative kind (no __fsm_definition__)")
    return check_definition(definition)


def emit(found: Iterable[KindWarning], stacklevel: int) -> None:
    """Issue ``found`` through `warnings` (what class creation does)."""
    for w in found:
        warnings.warn(w, stacklevel=stacklevel + 1)


__all__ = [
    "GuardedExitWarning",
    "KindWarning",
    "UntypedDataWarning",
    "check_definition",
    "emit",
    "validate_kind",
]

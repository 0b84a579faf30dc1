"""The invariants every fsm database must satisfy, checked by one function.

1. Every live action is terminal-or-resumable: its row decodes with the registered kinds
   (quarantined rows are reported separately, they are not violations by themselves).
2. No resource is held by a finished or missing action.
3. No effect was applied twice (given the outside world's ledger: key -> times applied).
4. The transition log of every action is a path: each step starts where the previous one
   ended (an id used again after its action ended starts a new path), and for declarative
   kinds each move is an edge of the kind's table (a transition or a rejection route), a
   park in place, a move chosen by the state's rejection handler, or an end reached from a
   state with a terminal edge.
5. Every end is kept with its history: an end in the log (a step to no state) has the kept
   outcome of the same id ending at that moment, and a kept outcome of an action with a log
   has its end in it (they are written by one statement: a crash cannot split them).
6. The inbox keeps its count and its order: every live row's ``inbox`` is the number of its
   pending events (``consumed_at IS NULL``); no event belongs to an action that is not live
   (an end takes its events with it); an event taken by a step carries that step's
   sequence, which is below the row's (the step's checkpoint moved the sequence on), and
   no two events were taken by one step. A send, a step's taking and a child's end each
   write the event and the count in one transaction, so no crash can split them.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from fsm.diagram.model import KindGraph
from fsm.errors import DecodeError, UnknownKind
from fsm.registry import Registry
from fsm.store import ActionFilter, LoggedStep, Store


def check_invariants(
    store: Store,
    kinds: Iterable[Any],
    *,
    effects: Mapping[str, int] | None = None,
    allow_quarantined: bool = False,
) -> list[str]:
    """Every violation found, as one readable line each; an empty list means all hold."""
    kinds = list(kinds)
    registry = Registry(kinds)
    graphs = {g.name: g for g in (k.graph() for k in kinds if hasattr(k, "graph"))}
    problems: list[str] = []
    problems += _rows_resumable(store, registry, allow_quarantined)
    problems += _resources_held_by_live_actions(store)
    if effects is not None:
        problems += [f"effect {key!r} applied {n} times" for key, n in effects.items() if n > 1]
    log = store.transitions()
    problems += _log_is_a_path(log, graphs)
    problems += _ends_are_kept(store, log)
    problems += _inbox_is_kept(store)
    return problems


def _inbox_is_kept(store: Store) -> list[str]:
    """Invariant 6 (see the module's doc), read with plain statements on the store's own
    connection (every row of ``fsm_event``: a test database, not a production one)."""

    def rows(sql: str) -> list[tuple[Any, ...]]:
        found = store.db.execute_sql(sql).fetchall()  # type: ignore[no-untyped-call]
        return [tuple(r) for r in found]

    miscounted = rows(
        "SELECT a.id, a.inbox, (SELECT count(*) FROM fsm_event e WHERE e.action_id = a.id "
        "AND e.consumed_at IS NULL) FROM fsm_action a ORDER BY a.id"
    )
    problems = [
        f"action {action_id}: its inbox count is {counted}, but {pending} event(s) are pending"
        for action_id, counted, pending in miscounted
        if int(counted) != int(pending)
    ]
    orphans = rows(
        "SELECT e.id, e.action_id, e.name FROM fsm_event e WHERE NOT EXISTS "
        "(SELECT 1 FROM fsm_action a WHERE a.id = e.action_id) ORDER BY e.id"
    )
    problems += [
        f"event {event_id} ({name}) belongs to {action_id!r}, which is not live"
        for event_id, action_id, name in orphans
    ]
    ahead = rows(
        "SELECT e.id, e.action_id, e.consumed_seq, a.seq FROM fsm_event e "
        "JOIN fsm_action a ON a.id = e.action_id "
        "WHERE e.consumed_seq IS NOT NULL AND e.consumed_seq >= a.seq ORDER BY e.id"
    )
    problems += [
        f"action {action_id}: event {event_id} was taken by step {taken}, but the row is at "
        f"step {seq} (the taking step's checkpoint did not move the sequence on)"
        for event_id, action_id, taken, seq in ahead
    ]
    twice = rows(
        "SELECT action_id, consumed_seq, count(*) FROM fsm_event "
        "WHERE consumed_seq IS NOT NULL GROUP BY action_id, consumed_seq "
        "HAVING count(*) > 1 ORDER BY action_id, consumed_seq"
    )
    problems += [
        f"action {action_id}: step {seq} took {n} events (a step takes at most one)"
        for action_id, seq, n in twice
    ]
    return problems


def _rows_resumable(store: Store, registry: Registry, allow_quarantined: bool) -> list[str]:
    problems = []
    for row in store.rows():
        if row.quarantine is not None:
            if not allow_quarantined:
                problems.append(f"action {row.id} is quarantined: {row.quarantine}")
            continue
        try:
            codec = registry.get(row.kind)
        except UnknownKind as exc:
            problems.append(f"action {row.id}: {exc}")
            continue
        payload = store.payload_of(row.id)
        try:
            codec.load(row.state, row.version, payload)
        except DecodeError as exc:
            problems.append(f"action {row.id} cannot be resumed: {exc}")
    return problems


def _resources_held_by_live_actions(store: Store) -> list[str]:
    live = {row.id for row in store.rows()}
    return [
        f"resource {name!r} is held by {holder!r}, which is finished or missing"
        for name, holder in store.all_resources().items()
        if holder not in live
    ]


def _ends_are_kept(store: Store, log: list[LoggedStep]) -> list[str]:
    ended = ActionFilter(statuses=("ended",))
    kept = {(a.id, a.ended_at) for page in store.walk_actions(ended) for a in page}
    logged = {(t.action_id, t.at) for t in log if t.to_state is None}
    with_log = {t.action_id for t in log}
    problems = [
        f"action {action_id}: its end at {at} is in the log, but no outcome is kept"
        for action_id, at in sorted(logged - kept)
    ]
    problems += [
        f"action {action_id}: its outcome (ended at {at}) is kept, but its end is not logged"
        for action_id, at in sorted(kept - logged, key=str)
        if action_id in with_log
    ]
    return problems


def _log_is_a_path(rows: Iterable[LoggedStep], graphs: Mapping[str, KindGraph]) -> list[str]:
    by_action: dict[str, list[LoggedStep]] = defaultdict(list)
    for row in rows:
        by_action[row.action_id].append(row)
    problems = []
    for action_id, steps in by_action.items():
        for before, after in itertools.pairwise(steps):
            if before.to_state is None:
                continue  # the id was used again by a new action (e.g. a payment retried)
            if after.from_state != before.to_state:
                problems.append(
                    f"action {action_id}: log jumps from {before.to_state!r} to "
                    f"{after.from_state!r}"
                )
        graph = graphs.get(steps[0].kind)
        if graph is not None:
            problems += _moves_follow_the_table(action_id, steps, graph)
    return problems


def _moves_follow_the_table(action_id: str, steps: list[LoggedStep], graph: KindGraph) -> list[str]:
    edges = {(e.source, e.target) for e in graph.edges}
    roles = {s.name: s.role for s in graph.states}
    handled = {s.name for s in graph.states if s.handler is not None}
    ends = {e.source for e in graph.edges if roles.get(e.target) in ("done", "failed")}
    problems = []
    for step in steps:
        if step.to_state is None:
            if step.outcome == "failed" or step.outcome == "stopped":
                continue  # retries exhausted or a rejection may fail from any state
            if step.from_state not in ends:
                problems.append(
                    f"action {action_id} ({graph.name}): ended from {step.from_state!r}, "
                    "which has no edge to a done state"
                )
        elif step.via in ("rejection", "retry") and step.from_state in handled:
            continue  # the state's rejection handler decides its target at run time
        elif step.via == "update":
            continue  # an operator's `Executor.update` may put the action anywhere
        elif step.to_state != step.from_state and (step.from_state, step.to_state) not in edges:
            problems.append(
                f"action {action_id} ({graph.name}): moved {step.from_state!r} -> "
                f"{step.to_state!r}, which is not in the table"
            )
    return problems

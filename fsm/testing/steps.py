"""Unit-testing one step: a step context without an executor, and one step run twice.

A kind's guards and effects (or a hand-written ``advance``) are plain functions of a
`fsm.StepContext`; testing them one at a time needs a context built the way the executor
builds one, which takes nine arguments that a test does not care about. `step_context`
builds it. `run_twice` is the idempotency check of a single step: the executor's
double-drive mode runs every step twice from the same checkpoint (as a re-run after a crash
before the commit would); this runs one step that way with no store, so a test can assert
the two outcomes agree and the second run had no effect of its own.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

import attrs

from fsm.codec import encode
from fsm.converter import CONVERTER
from fsm.events import Delivered, event_name
from fsm.protocol import Action, Inbox, MaybeAwaitable, Outcome, S, StepContext
from fsm.retry import RetryPolicy

LOG = logging.getLogger("fsm.testing")


def step_context(
    services: S,
    action_id: str = "a-1",
    *,
    seq: int = 0,
    attempts: int = 0,
    now: float = 0.0,
    retry: RetryPolicy | None = None,
    held: Iterable[str] | Callable[[], Iterable[str]] = (),
    holder_of: Callable[[str], str | None] | None = None,
    incarnation: str = "",
    events: Iterable[object] = (),
) -> StepContext[S]:
    """A context for step ``seq`` of action ``action_id``, as the executor would build it.

    ``held``: the resources the action holds (a callable is read when the step first asks).
    ``holder_of``: who holds a resource name (default: this action for ``held``, else
    nobody). ``retry``: the executor's default policy (default: ``RetryPolicy()``).
    ``events``: the pending events in the action's inbox, oldest first (attrs instances),
    as the step of a state with event rows reads them; after the step,
    ``ctx.outbox.consumed`` is the index (from 1) of the one it took, if any, and
    ``ctx.outbox.spawned`` the children it started.
    """
    load = held if callable(held) else (lambda: tuple(held))
    inbox = None
    pending = [_delivered(n, e) for n, e in enumerate(events, start=1)]
    if pending:
        inbox = Inbox(len(pending), lambda: pending)

    def holder(name: str) -> str | None:
        return action_id if name in set(load()) else None

    return StepContext(
        services,
        action_id,
        seq,
        attempts,
        now,
        retry if retry is not None else RetryPolicy(),
        logging.LoggerAdapter(LOG, {"action": action_id}),
        load,
        holder_of if holder_of is not None else holder,
        incarnation,
        None,
        inbox,
    )


def _delivered(n: int, event: object) -> Delivered:
    """An event as the inbox would hold it (encoded as `fsm.Executor.send` encodes it)."""
    cls = type(event)
    payload = encode(CONVERTER.unstructure(event, cls), f"event {event_name(cls)!r}").decode()
    return Delivered(n, event_name(cls), payload, f"test-{n}", 0.0)


async def outcome_of(result: MaybeAwaitable) -> Outcome:
    """What a step returned, awaited if it was a coroutine (an async ``advance``)."""
    return await result if inspect.isawaitable(result) else result


@attrs.frozen
class TwoRuns:
    """Both runs of one step: their outcomes and the contexts they ran with (for the
    resources each acquired and released, `StepContext.resource_changes`)."""

    first: Outcome
    second: Outcome
    first_ctx: StepContext[Any]
    second_ctx: StepContext[Any]


async def run_twice(
    action: Action[S],
    make_ctx: Callable[[], StepContext[S]],
    between: Callable[[], None] | None = None,
) -> TwoRuns:
    """Run ``action``'s step twice from the same state, each time with a fresh context from
    ``make_ctx`` (the same step: same ``seq``, so the same idempotency key). ``between`` is
    called after the first run, e.g. to snapshot the effects the first run had."""
    first_ctx = make_ctx()
    first = await outcome_of(action.advance(first_ctx))
    if between is not None:
        between()
    second_ctx = make_ctx()
    second = await outcome_of(action.advance(second_ctx))
    return TwoRuns(first, second, first_ctx, second_ctx)

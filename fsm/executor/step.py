"""Running one step: ``advance`` under its timeout, its result checked, its errors handled.

Everything a kind's code returns passes `check_outcome`, so a wrong return type is a
`KindError` (the step is broken) instead of a crash of the drive. An exception goes to the
kind's own handler on the state from *before* the step (`handle`); a handler that fails is
a bug of the kind too. Double-drive mode runs a step twice and compares (`drive_again`).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
from collections.abc import Awaitable
from typing import Any, TypeVar

import attrs

from fsm.codec import KindCodec
from fsm.errors import DoubleDriveMismatch, KindError, Rejected, StepTimeout
from fsm.failures import error_text
from fsm.protocol import Action, Done, Failed, MaybeAwaitable, Next, Outcome, Park, StepContext

_OUTCOMES = (Next, Park, Done, Failed)
"""The outcome types as a tuple: ``isinstance`` is quicker with one than with a union."""
_CHECKPOINTS = (Next, Park)
T = TypeVar("T")


@attrs.frozen
class Handled:
    """A step's exception turned into an outcome by the action's own handler."""

    via: str
    outcome: Outcome
    attempts: int
    ctx: StepContext[Any]
    error: BaseException
    routed: bool
    """True when the outcome follows a route (a rejection, a spent budget), not a backoff."""


def blocks(action: Action[Any]) -> bool:
    """A hand-written action that says ``blocking = True``: its calls go to ``ctx.threads``.

    Read from the class and compared with ``is True``, so a data field named ``blocking`` (or
    the slot descriptor of one) never sends an action to a thread by accident.
    """
    return getattr(type(action), "blocking", False) is True


def advance(
    action: Action[Any], ctx: StepContext[Any], timeout: float | None
) -> Outcome | Awaitable[Outcome]:
    """One call of ``advance``: its outcome, checked, when the call is synchronous (the hot
    path: no coroutine, no event-loop machinery), else an awaitable of it that applies the
    step's timeout (``timeout``: the executor's, unless the action says otherwise).

    A blocking action's ``advance`` runs on the thread pool, under the same timeout: past it
    the step is a `StepTimeout` and the thread's late result is dropped (`fsm.blocking`).
    """
    if blocks(action):
        return _settle(action, ctx.threads.run(action.advance, ctx), ctx, timeout)
    result = action.advance(ctx)
    # An outcome is checked first: asking the ABC machinery whether it is awaitable is slow.
    if not isinstance(result, _OUTCOMES) and inspect.isawaitable(result):
        return _settle(action, result, ctx, timeout)
    check_outcome(action, "advance", result, ctx.action_id)
    return result


async def _settle(
    action: Action[Any], awaitable: Awaitable[object], ctx: StepContext[Any], default: float | None
) -> Outcome:
    """Await an asynchronous (or threaded) ``advance`` under its timeout; its outcome, checked."""
    own = action.step_timeout()
    result = await within(awaitable, own if own is not None else default)
    check_outcome(action, "advance", result, ctx.action_id)
    return result  # type: ignore[return-value]  # checked just above


async def outcome_of(step: Outcome | Awaitable[Outcome]) -> Outcome:
    """`advance`'s result as an outcome, awaited if it is not one yet."""
    return step if isinstance(step, _OUTCOMES) else await step


async def within(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await a step; past ``timeout`` it is cancelled and `StepTimeout` raised (transient).

    A blocking call awaited on a thread cannot be cancelled: the await is, and the thread's
    result, whenever it comes, goes to a cancelled future that drops it, so it never reaches
    a checkpoint.
    """
    if timeout is None:
        return await awaitable
    scope = asyncio.timeout(timeout)
    try:
        async with scope:
            return await awaitable
    except TimeoutError:
        if scope.expired():
            raise StepTimeout(
                f"step ran past its {timeout:g}s timeout and was cancelled (a blocking call "
                "on a thread runs on; its result is dropped)"
            ) from None
        raise


def check_outcome(owner: object, what: str, outcome: object, action_id: str) -> None:
    """Raise `KindError` unless ``outcome`` is an outcome the executor can write.

    ``what`` names the code that returned it: a method of ``owner`` (``advance``), or a
    sentence (the handlers'); the message is built only when there is something to say.
    """
    if type(outcome) is Next and outcome.state.id == action_id:
        return  # the hot path: a new checkpoint of the same action
    if not isinstance(outcome, _OUTCOMES):
        raise KindError(
            f"{_who(owner, what)} returned {outcome!r}; expected Next, Park, Done or Failed"
        )
    if isinstance(outcome, Park) and outcome.wake_after is not None:
        after = outcome.wake_after
        if not (isinstance(after, int | float) and 0 <= after < math.inf):
            raise KindError(
                f"{_who(owner, what)} parked with wake_after={after!r}; expected seconds >= 0 "
                "(finite), or None to wait for a notify"
            )
    if isinstance(outcome, _CHECKPOINTS) and outcome.state.id != action_id:
        raise KindError(
            f"{_who(owner, what)} changed the action id from {action_id!r} to "
            f"{outcome.state.id!r}; ids must be stable"
        )


def _who(owner: object, what: str) -> str:
    """The name of the code that returned an outcome, for an error message."""
    return f"{type(owner).__name__}.{what}" if what.isidentifier() else what


def encode(codec: KindCodec, outcome: Outcome) -> tuple[str, str] | None:
    """The checkpoint a `Next` or `Park` writes, encoded inside the step's error handling."""
    if isinstance(outcome, _CHECKPOINTS):
        state, payload = codec.dump(outcome.state)
        return state, payload.decode()
    return None


async def handle(
    exc: Exception,
    before: Action[Any],
    ctx: StepContext[Any],
    state: str,
    adapter: logging.LoggerAdapter[logging.Logger],
) -> Handled | Exception:
    """Route a step's exception to on_rejection or on_retry, on the pre-step state.

    ``before`` is the action as loaded from the checkpoint (in ``state``) the step ran from.
    A handler that raises, or returns something that is not an outcome, is a bug of the
    kind: returned as the exception, for the caller to park the action as broken.
    """
    attempts = ctx.attempts
    try:
        if isinstance(exc, Rejected):
            adapter.warning("rejected: %s", exc)
            via = "rejection"
            if blocks(before):
                result: MaybeAwaitable = await ctx.threads.run(before.on_rejection, ctx, exc)
            else:
                result = before.on_rejection(ctx, exc)
        else:
            attempts += 1
            ctx.attempts = attempts
            adapter.warning("transient error (attempt %d): %s", attempts, error_text(exc))
            via = "retry"
            if blocks(before):
                result = await ctx.threads.run(before.on_retry, ctx, attempts, exc)
            else:
                result = before.on_retry(ctx, attempts, exc)
        outcome = await result if inspect.isawaitable(result) else result
        what = f"the {via} handler of {type(before).__name__}"
        check_outcome(before, what, outcome, ctx.action_id)
    except Exception as handler_exc:
        adapter.warning("%s handler failed, checkpoint left as it was: %s", via, handler_exc)
        return handler_exc
    routed = via == "rejection" or not (isinstance(outcome, Park) and outcome.state.state == state)
    return Handled(via, outcome, attempts, ctx, exc, routed)


async def drive_again(
    codec: KindCodec,
    first: Outcome,
    again: Action[Any],
    ctx: StepContext[Any],
    timeout: float | None,
) -> Outcome:
    """Double-drive mode: run the step again from the same state; the results must agree.

    ``again`` is the action loaded anew from the checkpoint the first run started from. As
    in bark's checker, a first run that parks is exempt (the second run is then a legitimate
    later re-drive), and the second result is the one used. A transient error in the second
    run is just that, a transient error of the step; a rejection after a first run that went
    on means the step is not idempotent.
    """
    try:
        second = await outcome_of(advance(again, ctx, timeout))
    except Rejected as exc:
        if not isinstance(first, Park):
            raise DoubleDriveMismatch(
                f"action {ctx.action_id}: step {ctx.seq} gave {_describe(codec, first)} "
                f"once and was rejected the second time ({exc}); it is not idempotent"
            ) from exc
        raise
    if not isinstance(first, Park) and _describe(codec, first) != _describe(codec, second):
        raise DoubleDriveMismatch(
            f"action {ctx.action_id}: step {ctx.seq} gave {_describe(codec, first)} once "
            f"and {_describe(codec, second)} the second time; it is not idempotent"
        )
    return second


def _describe(codec: KindCodec, outcome: Outcome) -> str:
    """An outcome as text two runs can be compared by: its kind, checkpoint or end."""
    if isinstance(outcome, _CHECKPOINTS):
        state, payload = codec.dump(outcome.state)
        return f"{type(outcome).__name__}({state}, {payload.decode()})"
    if isinstance(outcome, Failed):
        return f"Failed({outcome.state}, {error_text(outcome.error)})"
    return f"Done({outcome.state})"

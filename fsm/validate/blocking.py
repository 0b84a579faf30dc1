"""Checks of what a kind says about blocking callbacks (``blocking = True``, `fsm.blocking`).

A non-bool is an error, as everywhere. So is a say that can have no effect: ``blocking=True``
on a state (or a kind) with no synchronous callback to send to the thread pool. It is an
error rather than a `fsm.KindWarning` because nothing can make it intended: the usual cause
is an ``async def`` that calls a blocking library, which ``blocking=True`` does not help (an
async callback always runs on the event loop, and so freezes it), and an import-time error
points at that before it stalls a worker. The fix is cheap and always one of two: drop the
flag, or make the callback a plain ``def``.
"""

from __future__ import annotations

from typing import Any

from fsm.definition import Definition
from fsm.state import State, callable_name, is_async

FIX_ASYNC = (
    "drop `blocking=True` (async callbacks run on the event loop and are not sent to "
    "threads), or make the callback that blocks a plain `def`"
)


def check_blocking_flags(d: Definition) -> None:
    """``blocking`` is True, False (or None on a state: the kind's say)."""
    if not isinstance(d.blocking, bool):
        raise d.problem(None, f"blocking is {d.blocking!r}", "use True or False")
    for s in d.states:
        if s.blocking is not None and not isinstance(s.blocking, bool):
            raise d.problem(
                s, f"blocking is {s.blocking!r}", "use True, False, or leave it out (the kind's)"
            )


def check_blocking_has_effect(d: Definition) -> None:
    """A state's explicit ``blocking=True``, or the kind's, sends something to a thread."""
    for s in d.states:
        if s.blocking is True and not _sync_callbacks(d, s):
            callbacks = [callable_name(fn) for fn in _callbacks(d, s)]
            what = (
                f"its callbacks ({', '.join(callbacks)}) are all async"
                if callbacks
                else "it has no guard, effect or rejection handler"
            )
            raise d.problem(s, f"`blocking=True` has no effect: {what}", FIX_ASYNC)
    if d.blocking is True and not any(_sync_callbacks(d, s) for s in d.states):
        raise d.problem(
            None,
            "`blocking = True` has no effect: no state of the kind has a synchronous guard, "
            "effect or rejection handler",
            FIX_ASYNC,
        )


def _callbacks(d: Definition, s: State) -> list[Any]:
    found: list[Any] = [fn for t in d.exits(s) for fn in (t.guard, t.effect) if fn is not None]
    found += [r.handler for r in d.rejections if r.source is s and r.handler is not None]
    return found


def _sync_callbacks(d: Definition, s: State) -> list[Any]:
    return [fn for fn in _callbacks(d, s) if not is_async(fn)]

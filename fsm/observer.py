"""The executor's observer seam: what metrics and tracing are told about each step.

An `Observer` given to `fsm.Executor` (``observer=``) hears of every action an executor starts
and of every step it runs: `Observer.step` when the step begins (it returns a `StepWatch`,
the step's own handle, e.g. a span), `StepWatch.ended` once the step's write is durable or
has failed. `fsm.telemetry.otel.OpenTelemetry` is one observer; anything with these two
methods is another (a test's recorder, a statsd client).

Why a seam and not OpenTelemetry calls in the drive loop: a step costs tens of microseconds,
and an executor without an observer must not pay for one. The executor chooses how to drive
once per drive (`fsm.executor.observed`): without an observer the drive loop is the plain
one, with no check at all per step.

Observers are called on the event loop's thread, inside the drive's task (so the context
current in `Observer.step` is the caller's: a span started there is the child of the
caller's span, and a span made current there is the parent of what the step's code does).
They must be quick and must not raise: an exception from an observer ends the drive like a
crash would (the lease is released and the action is due again), never silently.
"""

from __future__ import annotations

from typing import Protocol

import attrs


@attrs.define(slots=True)
class StepStart:
    """What is known when a step begins: which action, where it stands, which try this is.

    Read-only by convention, not frozen: a frozen attrs class costs about a microsecond more
    to build, twice per step (as `fsm.executor.plan.Plan`)."""

    action_id: str
    kind: str
    state: str
    """The state the step runs from."""
    incarnation: str
    seq: int
    """The step's sequence number: with the id and incarnation, its idempotency key."""
    attempt: int
    """1 for a first try; 1 + the consecutive transient errors before it otherwise."""
    key: str
    """The step's idempotency key (`fsm.ids.idempotency_key`)."""


@attrs.define(slots=True)
class StepEnd:
    """How a step ended (read-only by convention, as `StepStart`).

    ``outcome`` is what was written (``next``, ``park``, ``done``, ``failed``, ``broken``, as
    in the transition log), or why nothing was: ``lease_lost`` (another driver took the
    action), ``error`` (the write failed; the step runs again after a backoff), ``cancelled``
    (the drive was cancelled, or raised, before its write).
    """

    outcome: str
    via: str | None
    """``step``; ``retry`` or ``rejection`` when a handler turned the step's error into the
    outcome (None when the step did not get that far)."""
    to_state: str
    """The state the action stands in after the step (its end state for done and failed;
    the state it ran from when nothing was written)."""
    duration: float | None
    """Seconds the step's code ran (``advance`` and the handlers), as logged."""
    commit: float | None
    """Seconds from handing the write to the store's committer until it was durable; None
    when nothing was written."""
    error: str | None
    """The step's error text (a transient error, a rejection, a failure), if any."""

    @property
    def written(self) -> bool:
        """True when the step's write is durable."""
        return self.commit is not None


class StepWatch(Protocol):
    """One step's handle, returned by `Observer.step`; told once how the step ended."""

    def ended(self, end: StepEnd) -> None: ...


class Observer(Protocol):
    """What an executor tells about its actions (see the module's docstring)."""

    def started(self, action_id: str, kind: str, state: str, incarnation: str) -> None:
        """`fsm.Executor.start` made a new incarnation of ``action_id`` (in its caller's
        context: where the request that started it came from)."""
        ...

    def step(self, start: StepStart) -> StepWatch:
        """A step begins; the returned watch is told how it ended, always, exactly once."""
        ...

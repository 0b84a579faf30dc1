"""The generic interpreter: one step of a declarative kind, over its compiled table.

`fsm.compiled.Compiled` turns a kind's table into plain tuples once; the hot path here
(`Instance.advance`) is a dict lookup and a loop over a state's edges; it never builds a
python-statemachine object, never inspects a signature, and only goes through a coroutine
when the state has an async callback, or a blocking one (``State(blocking=True)``: its
synchronous callbacks are awaited on ``ctx.threads``, see `fsm.blocking`).

Checkpoint envelope. A row's payload is ``{"data": <the data, via fsm.CONVERTER>,
"parks": <int>}`` (`fsm.codec.DeclarativeCodec`). ``parks`` counts consecutive parks in the
current wait state, for a backoff wake policy; it is 0 everywhere else and reset by every
transition. Upcasters see and return only the ``data`` dict.

Wrong return types. Right after a callback returns, the step checks what it got: an effect
must return the kind's data type, a guard a bool, a rejection handler an outcome (and, when
it declared its targets with ``rejected(handler=..., to=...)``, one that lands on a declared
state). Anything else raises `fsm.KindError` (a `TypeError`) naming the kind, the state and
the callback, which the executor treats as a bug in the kind: the action is parked as broken
with that reason instead of failing later with a cattrs error far from its cause. Each check
is one identity or isinstance test.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Generic

from fsm.errors import DefinitionError, KindError, Rejected
from fsm.protocol import (
    Action,
    Cancellation,
    Done,
    Failed,
    MaybeAwaitable,
    Next,
    Outcome,
    Park,
    S,
    StepContext,
    park_with_backoff,
)
from fsm.retry import RetryPolicy
from fsm.state import D, callable_name

if TYPE_CHECKING:
    from fsm.compiled import Compiled, CompiledState


class Instance(Action[S], Generic[D, S]):
    """A live action of a declarative kind: its state name, its data, its park count.

    Every kind gets its own subclass (``OrderKindAction``) carrying the compiled table, so
    ``type(action).__name__`` is meaningful in logs and the registry finds the kind through
    ``__fsm_kind__``. Instances are immutable by convention: each step returns new ones.
    """

    __slots__ = ("_id", "_state", "data", "deadline", "parks")
    _kind: ClassVar[Compiled]
    __fsm_kind__: ClassVar[type]

    def __init__(self, state: str, data: D, parks: int = 0, deadline: float | None = None) -> None:
        self._state = state
        self.data = data
        self.parks = parks
        self.deadline = deadline
        """Unix time a wait state's timeout fires (``State.wait(timeout=...)``), set by the
        first step in the state; None elsewhere."""
        self._id = self._kind.action_id(data)

    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> str:
        return self._state

    def __repr__(self) -> str:
        deadline = "" if self.deadline is None else f", deadline={self.deadline}"
        return (
            f"{type(self).__name__}({self._state!r}, {self.data!r}, parks={self.parks}{deadline})"
        )

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Instance)
            and (self._state, self.data, self.parks, self.deadline)
            == (other._state, other.data, other.parks, other.deadline)
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and data may be mutable

    # -- one step --------------------------------------------------------------------------

    def advance(self, ctx: StepContext[S]) -> MaybeAwaitable:
        """Take the first transition whose guard holds; park in a wait state if none does."""
        st = self._kind.states[self._state]
        if st.slow:
            return self._advance_slow(ctx, st)
        if st.has_async:
            return self._advance_async(ctx, st)
        data = self.data
        for guard, _, effect, _, target, end in st.edges:
            if guard is not None:
                holds = guard(ctx, data)
                if holds is False:
                    continue
                if holds is not True:
                    raise wrong_guard_result(st, guard, holds)
            if effect is not None:
                data = effect(ctx, data)
                if not isinstance(data, st.data_type):
                    raise wrong_effect_result(st, effect, data)
            return end if end is not None else Next(type(self)(target, data))
        return self._no_exit(ctx, st)

    async def _advance_async(self, ctx: StepContext[S], st: CompiledState) -> Outcome:
        data = self.data
        hop = ctx.threads.run if st.blocking else None  # see fsm.blocking
        for guard, guard_async, effect, effect_async, target, end in st.edges:
            if guard is not None:
                if guard_async:
                    holds = await guard(ctx, data)
                else:
                    holds = guard(ctx, data) if hop is None else await hop(guard, ctx, data)
                if holds is False:
                    continue
                if holds is not True:
                    raise wrong_guard_result(st, guard, holds)
            if effect is not None:
                if effect_async:
                    data = await effect(ctx, data)
                else:
                    data = effect(ctx, data) if hop is None else await hop(effect, ctx, data)
                if not isinstance(data, st.data_type):
                    raise wrong_effect_result(st, effect, data)
            return end if end is not None else Next(type(self)(target, data))
        return self._no_exit(ctx, st)

    async def _advance_slow(self, ctx: StepContext[S], st: CompiledState) -> Outcome:
        """A state with event rows or a deadline: its events first, then its plain rows,
        then its deadline (see `fsm.State.to` and `fsm.State.wait`)."""
        data = self.data
        hop = ctx.threads.run if st.blocking else None
        if st.events and ctx.has_events:
            for delivered in ctx.events(st.event_names):
                event = self._kind.decode_event(delivered)
                if isinstance(event, str):  # unreadable: set aside with its reason
                    ctx.drop_event(delivered.id, event)
                    continue
                for on, guard, guard_async, effect, effect_async, target, end in st.events:
                    if not isinstance(event, on):
                        continue
                    if guard is not None:
                        holds = await _call(hop, guard, guard_async, ctx, data, event)
                        if holds is False:
                            continue
                        if holds is not True:
                            raise wrong_guard_result(st, guard, holds)
                    if effect is not None:
                        data = await _call(hop, effect, effect_async, ctx, data, event)
                        if not isinstance(data, st.data_type):
                            raise wrong_effect_result(st, effect, data)
                    ctx.consume_event(delivered.id)
                    return self._moved(st, target, end, data)
        for guard, guard_async, effect, effect_async, target, end in st.edges:
            if guard is not None:
                holds = await _call(hop, guard, guard_async, ctx, data)
                if holds is False:
                    continue
                if holds is not True:
                    raise wrong_guard_result(st, guard, holds)
            if effect is not None:
                data = await _call(hop, effect, effect_async, ctx, data)
                if not isinstance(data, st.data_type):
                    raise wrong_effect_result(st, effect, data)
            return self._moved(st, target, end, data)
        if st.deadline is None:
            return self._no_exit(ctx, st)
        seconds, target, end = st.deadline
        deadline = self.deadline
        if deadline is None:  # the first step in the state: the deadline starts now
            deadline = ctx.now + _seconds(st, seconds, data)
        left = deadline - ctx.now
        if left <= 0:
            return self._moved(st, target, end, data)
        parked = self._no_exit(ctx, st)
        assert isinstance(parked, Park)
        again = parked.state
        assert isinstance(again, Instance)
        if again.deadline != deadline:
            again = type(self)(self._state, self.data, again.parks, deadline)
        wake = parked.wake_after
        return Park(again, wake_after=left if wake is None else min(wake, left))

    def _moved(self, st: CompiledState, target: str, end: Outcome | None, data: Any) -> Outcome:
        """The outcome of a row (or a deadline) taken in a slow state: an end, or the next
        checkpoint; staying in the same state keeps its deadline."""
        if end is not None:
            return end
        if target == self._state:
            return Next(type(self)(target, data, 0, self.deadline))
        return Next(type(self)(target, data))

    def _no_exit(self, ctx: StepContext[S], st: CompiledState) -> Outcome:
        if st.role == "wait":
            if st.wake_backoff is not None:
                parks = self.parks + 1
                again = type(self)(self._state, self.data, parks)
                return Park(again, wake_after=st.wake_backoff.delay(parks))
            return Park(self, wake_after=st.wake_after)
        if st.role == "done":
            return Done(st.name)
        if st.role == "failed":
            return Failed(f"{self._kind.name}: action is in failed state {st.name!r}", st.name)
        ctx.log.error("%s", st.stuck)
        return Park(self, error=DefinitionError(st.stuck))

    # -- errors ----------------------------------------------------------------------------

    def step_timeout(self) -> float | None:
        """The state's timeout, else the kind's (None: the executor's ``step_timeout``)."""
        return self._kind.states[self._state].timeout

    def policy(self, default: RetryPolicy) -> RetryPolicy:
        """The state's retry policy, else the kind's, else the executor's ``default``."""
        st = self._kind.states[self._state]
        return st.retry or self._kind.retry or default

    def on_retry(self, ctx: StepContext[S], attempts: int, error: BaseException) -> MaybeAwaitable:
        """Transient error: back off per the state's or kind's policy; route when spent."""
        st = self._kind.states[self._state]
        policy = self.policy(ctx.retry)
        if policy.exhausted(attempts):
            if st.route is None and st.handler is None and not st.park:
                return Failed(error)
            return self._follow(ctx, st, error)
        return park_with_backoff(self, attempts, policy, error)

    def on_rejection(self, ctx: StepContext[S], error: Rejected) -> MaybeAwaitable:
        """The remote side refused: follow the state's rejection route, else fail."""
        st = self._kind.states[self._state]
        if st.route is None and st.handler is None and not st.park:
            return Failed(error)
        return self._follow(ctx, st, error)

    def event_names(self) -> tuple[str, ...]:
        return self._kind.states[self._state].event_names

    def on_cancel(self, cancel: Cancellation) -> Next | Done | Failed | None:
        """An operator's cancel: the state's cancel route, with the data as it stands.

        A route to a step or wait state is a `Next` into it (the compensation runs as its
        steps); to a terminal state, that state's end; no cancel row: None (refused).
        """
        route = self._kind.states[self._state].cancel
        if route is None:
            return None
        target, end = route
        if end is None:
            return Next(type(self)(target, self.data))
        assert isinstance(end, Done | Failed)
        return end

    def _follow(
        self, ctx: StepContext[S], st: CompiledState, error: BaseException
    ) -> MaybeAwaitable:
        if st.park:
            return Park(self, error=error)
        if st.handler is not None:
            if st.handler_blocks:
                return self._checked_later(st, ctx.threads.run(st.handler, ctx, self.data, error))
            result = st.handler(ctx, self.data, error)
            if inspect.isawaitable(result):
                return self._checked_later(st, result)
            return self._checked(st, result)
        assert st.route is not None
        target, end = st.route
        if end is None:
            return Next(type(self)(target, self.data))
        return end if isinstance(end, Done) else Failed(error, target)

    async def _checked_later(self, st: CompiledState, result: Any) -> Outcome:
        return self._checked(st, await result)

    def _checked(self, st: CompiledState, outcome: object) -> Outcome:
        """A rejection handler's outcome, if it is one this action may take (see module doc)."""
        if isinstance(outcome, Done | Failed):
            return outcome
        if not isinstance(outcome, Next | Park):
            raise wrong_handler_result(st, outcome, "expected Next, Park, Done or Failed")
        action = outcome.state
        if type(action) is not type(self):
            raise wrong_handler_result(
                st, outcome, f"an action of {type(action).__name__}, not {type(self).__name__}"
            )
        if not isinstance(action.data, st.data_type):
            raise wrong_handler_result(
                st,
                outcome,
                f"its data is a {type(action.data).__name__}, not a {st.data_type.__name__}",
            )
        target = action.state
        if st.targets is not None and target != st.name and target not in st.targets:
            raise undeclared_target(st, target)
        return outcome


async def _call(hop: Any, fn: Any, is_async_fn: bool, *args: Any) -> Any:
    """A callback of the slow path: awaited, on the thread pool (blocking), or called."""
    if is_async_fn:
        return await fn(*args)
    if hop is not None:
        return await hop(fn, *args)
    return fn(*args)


def _seconds(st: CompiledState, seconds: Any, data: Any) -> float:
    """A deadline's length: the number, or what the function of the data returned."""
    value = seconds(data) if callable(seconds) else seconds
    if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
        raise KindError(
            f"{st.where}: timeout {callable_name(seconds)} returned {value!r}, expected a "
            "number of seconds. Fix: return a float"
        )
    return float(value)


def wrong_guard_result(st: CompiledState, guard: Any, holds: object) -> KindError:
    """A guard returned something other than a bool (a coroutine: a sync def awaiting)."""
    fix = "return True or False"
    if inspect.iscoroutine(holds):
        holds.close()  # never awaited: say so here, not in a RuntimeWarning at exit
        fix = f"make {callable_name(guard)} an `async def` so fsm awaits it"
    return KindError(
        f"{st.where}: guard {callable_name(guard)} returned {type(holds).__name__}, "
        f"expected bool. Fix: {fix}"
    )


def wrong_effect_result(st: CompiledState, effect: Any, data: object) -> KindError:
    """An effect returned something other than the kind's data (None, a dict, an outcome)."""
    fix = "return the new data, e.g. attrs.evolve(data, ...)"
    if inspect.iscoroutine(data):
        data.close()
        fix = f"make {callable_name(effect)} an `async def` so fsm awaits it"
    return KindError(
        f"{st.where}: effect {callable_name(effect)} returned {type(data).__name__}, "
        f"expected {st.data_type.__name__}. Fix: {fix}"
    )


def wrong_handler_result(st: CompiledState, outcome: object, expected: str) -> KindError:
    name = callable_name(st.handler)
    return KindError(
        f"{st.where}: rejection handler {name} returned {outcome!r} ({expected}). Fix: "
        "return MyKind.goto(data, state), fsm.Park(MyKind.create(data, state), ...), "
        "fsm.Done() or fsm.Failed(error)"
    )


def undeclared_target(st: CompiledState, target: str) -> KindError:
    name = callable_name(st.handler)
    declared = ", ".join(sorted(st.targets or ())) or "nothing"
    return KindError(
        f"{st.where}: rejection handler {name} moved the action to {target!r}, which it "
        f"does not declare (it declares {declared}). Fix: add {target} to its row's "
        f"`rejected(handler={name}, to=...)`, or move to a declared state"
    )

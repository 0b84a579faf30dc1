"""The generic interpreter: a kind's table compiled once into plain tuples, and one step of it.

`compile_kind` turns a checked `Definition` into a `Compiled` kind: a dict from state name to
a `CompiledState` whose ``edges`` are tuples ``(guard, guard_is_async, effect,
effect_is_async, target_name, target_outcome)``. The hot path (`Instance.advance`) is a dict
lookup and a loop over that tuple; it never builds a python-statemachine object, never
inspects a signature, and only goes through a coroutine when the state has an async
callback.

Checkpoint envelope. A row's payload is ``{"data": <the data, via fsm.codec.CONVERTER>,
"parks": <int>}``. ``parks`` counts consecutive parks in the current wait state, for a
backoff wake policy; it is 0 everywhere else and reset by every transition. Upcasters see
and return only the ``data`` dict.

Wrong return types. Right after a callback returns, the step checks what it got: an effect
must return the kind's data type, a guard a bool, a rejection handler an outcome (and, when
it declared its targets with `fsm.handled`, one that lands on a declared state). Anything else
raises `fsm.KindError` (a `TypeError`) naming the kind, the state and the callback, which
the executor treats as a bug in the kind: the action is parked as broken with that reason
instead of failing later with a cattrs error far from its cause. Each check is one identity
or isinstance test.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Generic

import attrs
import cattrs
import orjson

from fsm.codec import CONVERTER, encode, may_hold_float
from fsm.definition import Definition
from fsm.errors import DecodeError, DefinitionError, KindError, Rejected
from fsm.protocol import (
    Action,
    Done,
    Failed,
    MaybeAwaitable,
    Next,
    Outcome,
    Park,
    StepContext,
    park_with_backoff,
)
from fsm.retry import RetryPolicy
from fsm.state import D, Handled, RejectionHandler, S, State, Upcaster, callable_name

Edge = tuple[Any, bool, Any, bool, str, Outcome | None]
"""(guard, guard is async, effect, effect is async, target name, terminal outcome or None)."""


def is_async(fn: object) -> bool:
    """True when calling ``fn`` returns a coroutine (async def, or an object with one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the bound __call__, not callable()
    )


@attrs.frozen(slots=True)
class CompiledState:
    """One state as the interpreter needs it; every field is plain data or a callable."""

    name: str
    role: str
    edges: tuple[Edge, ...]
    has_async: bool
    wake_after: float | None
    wake_backoff: RetryPolicy | None
    retry: RetryPolicy | None
    timeout: float | None
    route: tuple[str, Outcome | None] | None
    handler: RejectionHandler[Any, Any] | None
    targets: frozenset[str] | None
    """The states ``handler`` declared with `fsm.handled`; None for an undeclared handler."""
    data_type: type
    where: str
    """``kind 'order' (OrderKind), state 'start'``: how errors name this state."""
    stuck: str


class Compiled:
    """A kind compiled for the interpreter; built once when the kind class is created."""

    def __init__(self, d: Definition, kind: type) -> None:
        self.name = d.name
        self.version: int = d.version
        self.kind = kind
        self.data_type: type = d.data_type
        assert d.action_id is not None  # checked by fsm.validate
        self.action_id: Callable[[Any], str] = d.action_id
        self.retry = d.retry
        self.initial = next(s.name for s in d.states if s.initial)
        self.upcasters: Mapping[int, Upcaster] = dict(d.upcasters)
        routes = dict(d.rejections)
        self.states: dict[str, CompiledState] = {
            s.name: _compile_state(d, s, routes.get(s)) for s in d.states
        }
        self.instance_type: type[Instance[Any, Any]] = type(
            f"{kind.__name__}Action",
            (Instance,),
            {
                "__slots__": (),
                "__module__": kind.__module__,
                "__qualname__": f"{kind.__qualname__}Action",
                "namespace": d.name,
                "version": d.version,
                "__fsm_kind__": kind,
                "_kind": self,
            },
        )
        self.codec = DeclarativeCodec(self)


def _terminal_outcome(d: Definition, target: State) -> Outcome | None:
    if target.role == "done":
        return Done(target.name)
    if target.role == "failed":
        return Failed(f"{d.label()} ended in failed state {target.name!r}", target.name)
    return None


def _compile_state(
    d: Definition, s: State, route: State | Handled[Any, Any] | RejectionHandler[Any, Any] | None
) -> CompiledState:
    edges = tuple(
        (
            t.guard,
            is_async(t.guard),
            t.effect,
            is_async(t.effect),
            t.target.name,
            _terminal_outcome(d, t.target),
        )
        for t in d.exits(s)
    )
    handler = route if route is not None and not isinstance(route, State) else None
    targets = None
    if isinstance(handler, Handled):
        targets = frozenset(t.name for t in handler.to)
        handler = handler.handler
    return CompiledState(
        name=s.name,
        role=s.role,
        edges=edges,
        has_async=any(e[1] or e[3] for e in edges) or is_async(handler),
        wake_after=s.wake.after if s.wake else None,
        wake_backoff=s.wake.backoff if s.wake else None,
        retry=s.retry,
        timeout=s.timeout if s.timeout is not None else d.timeout,
        route=(route.name, _terminal_outcome(d, route)) if isinstance(route, State) else None,
        handler=handler,
        targets=targets,
        data_type=d.data_type,
        where=f"{d.label()}, state {s.name!r}",
        stuck=(
            f"{d.label()}, state {s.name!r}: no guard holds "
            f"({', '.join(getattr(e[0], '__name__', repr(e[0])) for e in edges)}), so the "
            "action cannot move. Fix: make the guards exhaustive or add a last unguarded "
            "transition (or make the state a wait state); then notify the action"
        ),
    )


class Instance(Action[S], Generic[D, S]):
    """A live action of a declarative kind: its state name, its data, its park count.

    Every kind gets its own subclass (``OrderKindAction``) carrying the compiled table, so
    ``type(action).__name__`` is meaningful in logs and the registry finds the kind through
    ``__fsm_kind__``. Instances are immutable by convention: each step returns new ones.
    """

    __slots__ = ("_id", "_state", "data", "parks")
    _kind: ClassVar[Compiled]
    __fsm_kind__: ClassVar[type]

    def __init__(self, state: str, data: D, parks: int = 0) -> None:
        self._state = state
        self.data = data
        self.parks = parks
        self._id = self._kind.action_id(data)

    @property
    def id(self) -> str:
        return self._id

    @property
    def state(self) -> str:
        return self._state

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._state!r}, {self.data!r}, parks={self.parks})"

    def __eq__(self, other: object) -> bool:
        return (
            type(other) is type(self)
            and isinstance(other, Instance)
            and (self._state, self.data, self.parks) == (other._state, other.data, other.parks)
        )

    __hash__ = None  # type: ignore[assignment]  # equal by value, and data may be mutable

    # -- one step --------------------------------------------------------------------------

    def advance(self, ctx: StepContext[S]) -> MaybeAwaitable:
        """Take the first transition whose guard holds; park in a wait state if none does."""
        st = self._kind.states[self._state]
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
        for guard, guard_async, effect, effect_async, target, end in st.edges:
            if guard is not None:
                holds = (await guard(ctx, data)) if guard_async else guard(ctx, data)
                if holds is False:
                    continue
                if holds is not True:
                    raise wrong_guard_result(st, guard, holds)
            if effect is not None:
                data = (await effect(ctx, data)) if effect_async else effect(ctx, data)
                if not isinstance(data, st.data_type):
                    raise wrong_effect_result(st, effect, data)
            return end if end is not None else Next(type(self)(target, data))
        return self._no_exit(ctx, st)

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
            if st.route is None and st.handler is None:
                return Failed(error)
            return self._follow(ctx, st, error)
        return park_with_backoff(self, attempts, policy, error)

    def on_rejection(self, ctx: StepContext[S], error: Rejected) -> MaybeAwaitable:
        """The remote side refused: follow the state's rejection route, else fail."""
        st = self._kind.states[self._state]
        if st.route is None and st.handler is None:
            return Failed(error)
        return self._follow(ctx, st, error)

    def _follow(
        self, ctx: StepContext[S], st: CompiledState, error: BaseException
    ) -> MaybeAwaitable:
        if st.handler is not None:
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
        "return MyKind.goto(state, data), fsm.Park(MyKind.create(data, state), ...), "
        "fsm.Done() or fsm.Failed(error)"
    )


def undeclared_target(st: CompiledState, target: str) -> KindError:
    name = callable_name(st.handler)
    declared = ", ".join(sorted(st.targets or ())) or "nothing"
    return KindError(
        f"{st.where}: rejection handler {name} moved the action to {target!r}, which it "
        f"does not declare (it declares {declared}). Fix: add {target} to "
        f"handled({name}, to=...) in the kind's `rejections`, or move to a declared state"
    )


class DeclarativeCodec:
    """`fsm.codec.KindCodec` of a declarative kind: the envelope (see module doc) as JSON."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.cls = compiled.kind
        self.name: str = compiled.name
        self.version: int = compiled.version
        self._unstructure: Callable[[Any], Any] | None = None
        self._floats = True
        self._structure: Callable[[Any, Any], Any] | None = None

    def dump(self, action: Any) -> tuple[str, bytes]:
        c = self.compiled
        if type(action) is not c.instance_type or not isinstance(action.data, c.data_type):
            got = type(action).__name__
            if isinstance(action, Instance):
                got = f"{got} holding {type(action.data).__name__}"
            raise KindError(
                f"kind {c.name!r}: a step returned {got} as the next checkpoint, not "
                f"{c.instance_type.__name__} holding {c.data_type.__name__}"
            )
        if self._unstructure is None:  # resolved late: the data type may use forward refs
            self._unstructure = CONVERTER.get_unstructure_hook(c.data_type)
            self._floats = may_hold_float(c.data_type)
        body = {"data": self._unstructure(action.data), "parks": action.parks}
        return action.state, encode(body, f"kind {c.name!r}", check_floats=self._floats)

    def load(self, state: str, version: int, payload: bytes | str) -> Instance[Any, Any]:
        c = self.compiled
        what = f"kind {c.name!r} v{version}, state {state!r}"
        if version > c.version:
            raise DecodeError(f"{what}: row is newer than the code (v{c.version}); upgrade it")
        if state not in c.states:
            raise DecodeError(f"{what}: unknown state; the kind's states are {list(c.states)}")
        try:
            envelope = orjson.loads(payload)
        except orjson.JSONDecodeError as exc:
            raise DecodeError(f"{what}: payload is not valid JSON ({exc})") from None
        if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
            raise DecodeError(f"{what}: payload is not an envelope {{'data': {{...}}, 'parks'}}")
        parks = envelope.get("parks", 0)
        if not isinstance(parks, int):
            raise DecodeError(f"{what}: 'parks' is {parks!r}, not an integer")
        data = upcast(c, version, envelope["data"], what)
        if self._structure is None:
            self._structure = CONVERTER.get_structure_hook(c.data_type)
        try:
            value = self._structure(data, c.data_type)
        except Exception as exc:  # cattrs raises many types; each means "unreadable"
            raise DecodeError(f"{what}: data does not structure: {_describe(exc)}") from None
        try:
            return c.instance_type(state, value, parks)
        except Exception as exc:  # the id function failed on this data
            raise DecodeError(f"{what}: action_id failed: {type(exc).__name__}: {exc}") from None


def upcast(c: Compiled, version: int, data: dict[str, Any], what: str) -> dict[str, Any]:
    """Run the upcasters from ``version`` up to the kind's version, in order."""
    for v in range(version, c.version):
        fn = c.upcasters.get(v)
        if fn is None:
            raise DecodeError(
                f"{what}: no upcaster from v{v} to v{v + 1} (the oldest this code reads is "
                f"v{min(c.upcasters, default=c.version)}); add upcasters[{v}]"
            )
        try:
            data = fn(data)
        except Exception as exc:
            raise DecodeError(
                f"{what}: upcaster v{v} failed: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise DecodeError(f"{what}: upcaster v{v} returned {type(data).__name__}, not a dict")
    return data


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc)) or str(exc)
    return f"{type(exc).__name__}: {exc}"

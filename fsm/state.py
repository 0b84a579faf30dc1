"""The vocabulary of a declarative kind: states, wake policies, transitions, rejection and
cancel rows.

These objects only *describe* a kind. `fsm.kind.Kind` collects them when the class is
created, `fsm.validate` checks them and `fsm.compiled` compiles them into plain tuples, so
nothing here is on the hot path and nothing here knows about storage.

The callables are typed against the kind's data type ``D`` and services type ``S``: in
``class OrderKind(Kind[Order, Shop])`` the table is declared as
``Sequence[Transition[Order, Shop] | Rejection[Order, Shop] | CancelRoute]``, so a type
checker infers ``D`` and ``S`` of every ``a.to(b, guard=..., effect=...)`` and
``a.rejected(handler=...)`` from that context and flags a callback that takes or returns
another data type, or expects other services.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, Literal, TypeAlias, TypeVar, overload

import attrs

from fsm.errors import DefinitionError
from fsm.protocol import MaybeAwaitable, S, StepContext
from fsm.retry import RetryPolicy

D = TypeVar("D")
E = TypeVar("E")
"""An event type: an attrs class a transition row accepts (``on=``)."""

Role = Literal["step", "wait", "done", "failed"]
"""What a state does: runs steps, waits for a wake-up, or ends the action (done, failed)."""
"""The kind's data: the attrs class stored in the checkpoint."""

TERMINAL_ROLES: frozenset[str] = frozenset({"done", "failed"})

Guard: TypeAlias = Callable[[StepContext[S], D], bool | Awaitable[bool]]
"""``guard(ctx, data) -> bool`` (or an async def): may this transition be taken now?"""
Effect: TypeAlias = Callable[[StepContext[S], D], D | Awaitable[D]]
"""``effect(ctx, data) -> new data`` (or an async def): the side effects of the transition."""
EventGuard: TypeAlias = Callable[[StepContext[S], D, E], bool | Awaitable[bool]]
"""``guard(ctx, data, event) -> bool`` (or an async def) of a row with ``on=EventType``."""
EventEffect: TypeAlias = Callable[[StepContext[S], D, E], D | Awaitable[D]]
"""``effect(ctx, data, event) -> new data`` (or an async def) of a row with ``on=EventType``:
it runs in the step that consumes the event, in the transaction of its checkpoint."""
Timeout: TypeAlias = float | Callable[[Any], float]
"""A wait state's deadline: seconds after the state is entered, or a function of the data."""
RejectionHandler: TypeAlias = Callable[[StepContext[S], D, BaseException], MaybeAwaitable]
"""``handler(ctx, data, error) -> Outcome``: decides what a rejection (or a spent retry
budget) leads to; build a move to another state with ``MyKind.goto(data, state)``."""


@attrs.frozen
class Wake:
    """When a parked wait state is driven again without an external notify.

    ``after``: a fixed delay in seconds. ``backoff``: a growing delay, ``backoff.delay(n)``
    after the n-th consecutive park in this state (the count is kept in the checkpoint
    envelope, see `fsm.interpreter`). Neither: only `Executor.notify` (or ``resume_all``)
    wakes it.
    """

    after: float | None = None
    backoff: RetryPolicy | None = None

    def describe(self) -> str:
        if self.after is not None:
            return f"every {self.after:g}s"
        if self.backoff is not None:
            return "with backoff"
        return "on notify"


@attrs.frozen
class Deadline:
    """A wait state's deadline (``State.wait(timeout=..., on_timeout=...)``).

    ``seconds``: a number, or a function of the data giving one, evaluated when the action
    enters the state; ``to``: the state the action moves to once the deadline has passed and
    no event row or guard of the state was taken.
    """

    seconds: Timeout
    to: State

    def describe(self) -> str:
        if callable(self.seconds):
            return f"after {callable_name(self.seconds)}"
        return f"after {_duration(self.seconds)}"


def _duration(seconds: float) -> str:
    """``30s``, ``15m``, ``3d``: a deadline as diagrams label it."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


class State:
    """One state of a kind; its name is the class attribute it is assigned to.

    Build them with ``State()`` (an ordinary step state), ``State(initial=True)``,
    ``State.wait(...)``, ``State.done()`` and ``State.failed()``. ``retry`` overrides the
    kind's retry policy for transient errors raised in this state; ``step_timeout``
    (seconds) overrides the kind's step timeout for its steps (an async step running longer
    is cancelled and retried); ``blocking=True`` runs its synchronous guards, effects and
    rejection handler on the executor's thread pool (`fsm.blocking`), ``False`` on the event
    loop, ``None`` (the default) as the kind's ``blocking`` says; ``doc`` is shown in diagrams.
    """

    __slots__ = (
        "blocking",
        "deadline",
        "doc",
        "initial",
        "name",
        "retry",
        "role",
        "step_timeout",
        "wake",
    )

    def __init__(
        self,
        *,
        initial: bool = False,
        retry: RetryPolicy | None = None,
        doc: str | None = None,
        role: Role = "step",
        wake: Wake | None = None,
        step_timeout: float | None = None,
        blocking: bool | None = None,
        deadline: Deadline | None = None,
    ) -> None:
        if step_timeout is not None and not step_timeout > 0:
            raise DefinitionError(f"State: `step_timeout` must be > 0 seconds, got {step_timeout}")
        self.name = ""
        self.initial = initial
        self.retry = retry
        self.step_timeout = step_timeout
        self.deadline = deadline
        self.blocking = blocking  # checked by fsm.validate, where the message can name the state
        self.doc = doc
        self.role: Role = role
        self.wake = wake

    def __set_name__(self, owner: type, name: str) -> None:
        if not self.name:
            self.name = name

    @classmethod
    def wait(
        cls,
        *,
        after: float | None = None,
        backoff: RetryPolicy | None = None,
        timeout: Timeout | None = None,
        on_timeout: State | None = None,
        initial: bool = False,
        retry: RetryPolicy | None = None,
        doc: str | None = None,
        step_timeout: float | None = None,
        blocking: bool | None = None,
    ) -> State:
        """A state that parks until one of its guards holds or an event it accepts arrives
        (see `Wake` for ``after`` and ``backoff``).

        ``timeout`` with ``on_timeout``: a deadline, in seconds from entering the state (or
        a function of the data giving them, called on entry). It is stored with the
        checkpoint and as the row's wake-up, so it fires after a restart too; once it has
        passed and no event row or guard of the state is taken, the action moves to
        ``on_timeout``. A transition back into the same state keeps the deadline (the
        action never left); any other entry starts a new one.
        """
        if (timeout is None) != (on_timeout is None):
            raise DefinitionError(
                "State.wait: give `timeout` and `on_timeout` together (the deadline and the "
                "state it leads to); a step's time limit is `step_timeout`"
            )
        number = isinstance(timeout, int | float) and 0 < timeout < float("inf")
        if not (timeout is None or callable(timeout) or number):
            raise DefinitionError(
                f"State.wait: `timeout` must be a number of seconds > 0 or a function of "
                f"the data, got {timeout!r}"
            )
        if after is not None and backoff is not None:
            raise DefinitionError("State.wait: give `after` or `backoff`, not both")
        if after is not None and after < 0:
            raise DefinitionError(f"State.wait: `after` must be >= 0 seconds, got {after}")
        wake = Wake(after, backoff)
        deadline = None
        if timeout is not None and on_timeout is not None:
            deadline = Deadline(timeout, on_timeout)
        return cls(
            initial=initial,
            retry=retry,
            doc=doc,
            role="wait",
            wake=wake,
            step_timeout=step_timeout,
            blocking=blocking,
            deadline=deadline,
        )

    @classmethod
    def done(cls, *, doc: str | None = None) -> State:
        """Terminal success: reaching it ends the action with `fsm.Done`."""
        return cls(doc=doc, role="done")

    @classmethod
    def failed(cls, *, doc: str | None = None) -> State:
        """Terminal failure: reaching it ends the action with `fsm.Failed`."""
        return cls(doc=doc, role="failed")

    @property
    def terminal(self) -> bool:
        return self.role in TERMINAL_ROLES

    @overload
    def to(
        self,
        target: State,
        *,
        on: None = None,
        guard: Guard[S, D] | None = None,
        effect: Effect[S, D] | None = None,
    ) -> Transition[D, S]: ...

    @overload
    def to(
        self,
        target: State,
        *,
        on: type[E],
        guard: EventGuard[S, D, E] | None = None,
        effect: EventEffect[S, D, E] | None = None,
    ) -> Transition[D, S]: ...

    def to(
        self,
        target: State,
        *,
        on: type[Any] | None = None,
        guard: Any = None,
        effect: Any = None,
    ) -> Transition[D, S]:
        """The transition ``self -> target``, taken when ``guard`` holds, running ``effect``.

        With ``on=EventType`` the row is taken by an event (`fsm.Executor.send`): a step
        here offers the action's pending events, oldest first, to the state's event rows in
        table order; the first row whose type the event is an instance of and whose
        ``guard(ctx, data, event)`` holds consumes it, in the same transaction as the
        checkpoint its ``effect(ctx, data, event)`` returns. The plain rows run only when no
        event was taken.
        """
        return Transition(self, target, guard, effect, on)

    def rejected(
        self,
        to: State | Sequence[State] | None = None,
        *,
        handler: RejectionHandler[S, D] | None = None,
        park: bool = False,
    ) -> Rejection[D, S]:
        """The row saying what a rejection here (or a spent retry budget) leads to::

            charging.rejected(to=releasing)                  # move on to a compensating state
            prepare.rejected(handler=refused, to=(retry, cancelled))  # the handler decides
            holding.rejected(park=True)                      # stay parked here, with the error

        With only ``to`` (one state) the action moves there (a terminal target ends it). With
        a ``handler(ctx, data, error) -> Outcome``, ``to`` lists every state its `Next` or
        `Park` may land on: validation counts them as edges (so a compensating state reached
        only through the handler is reachable), diagrams draw them as dashed rejection edges
        labelled with the handler, and at run time a move anywhere else (other than this
        state, where it may always park) raises `fsm.KindError`. ``to=()`` declares a handler
        that only parks here or ends the action; leaving ``to`` out hides its targets from
        validation and diagrams. ``park=True`` is the stock handler: park in this state with
        the error and no wake-up, until a notify (for phases where failing, and so releasing
        what the action holds, is not safe).
        """
        targets = None if to is None else (to,) if isinstance(to, State) else tuple(to)
        return Rejection(self, targets, handler, park)

    def cancelled(self, to: State) -> CancelRoute:
        """The row saying where an operator's cancel of an action in this state leads::

            start.cancelled(to=cancelled)        # nothing done yet: end in a failed state
            charging.cancelled(to=releasing)     # money may have moved: compensate first

        Like a rejection route, and for the same reason: cancelling is a decision to undo,
        and undoing is the kind's own work. A cancel (`fsm.Controls.cancel`, ``fsm actions
        cancel``) writes the action's data, unchanged, into ``to`` as its new checkpoint and
        makes it due, so a worker runs the compensation as ordinary, retried, idempotent
        steps; a terminal ``to`` ends the action at once. Who cancelled and why become the
        action's *cause*, carried to its end. A state without a cancel row cannot be
        cancelled (the control refuses; ``stop`` removes an action without compensation).
        The targets count as edges for reachability, and diagrams draw them as cancel edges.
        """
        return CancelRoute(self, to)

    def __repr__(self) -> str:
        flag = " initial" if self.initial else ""
        return f"<State {self.name or '?'} ({self.role}{flag})>"


class Transition(Generic[D, S]):
    """One row of the table: ``source -> target`` with an optional guard and effect, taken by
    an event of type ``on`` when it is set (then the callbacks also receive the event)."""

    __slots__ = ("effect", "guard", "on", "source", "target")

    def __init__(
        self,
        source: State,
        target: State,
        guard: Any = None,
        effect: Any = None,
        on: type[Any] | None = None,
    ) -> None:
        self.source = source
        self.target = target
        self.guard = guard
        self.effect = effect
        self.on = on

    def __repr__(self) -> str:
        parts = [f"{self.source.name} -> {self.target.name}"]
        if self.on is not None:
            parts.append(f"on={getattr(self.on, '__name__', repr(self.on))}")
        if self.guard is not None:
            parts.append(f"guard={callable_name(self.guard)}")
        if self.effect is not None:
            parts.append(f"effect={callable_name(self.effect)}")
        return f"<Transition {' '.join(parts)}>"


@attrs.frozen(repr=False, eq=False)
class Rejection(Generic[D, S]):
    """A row of the table saying where a rejection (or a spent retry budget) in ``source`` leads.

    Made by `State.rejected`; see there. ``to`` is None only for a handler that did not
    declare its targets; ``park`` is the stock "park here" route.
    """

    source: State
    to: tuple[State, ...] | None
    handler: RejectionHandler[S, D] | None = None
    park: bool = False

    def __repr__(self) -> str:
        parts = [f"{self.source.name or '?'} rejected"]
        if self.park:
            parts.append("park=True")
        if self.handler is not None:
            parts.append(f"handler={callable_name(self.handler)}")
        if self.to is not None:
            parts.append(f"to=({', '.join(s.name or '?' for s in self.to)})")
        return f"<Rejection {' '.join(parts)}>"


@attrs.frozen(repr=False, eq=False)
class CancelRoute:
    """A row of the table saying where an operator's cancel in ``source`` leads (``to``).

    Made by `State.cancelled`; see there. It names states only, no callback: a cancel is
    decided where no services exist (a command line), and the compensation it leads to runs
    as the target state's ordinary steps.
    """

    source: State
    to: State

    def __repr__(self) -> str:
        target = self.to.name if isinstance(self.to, State) else repr(self.to)
        return f"<CancelRoute {self.source.name or '?'} cancelled to={target or '?'}>"


def callable_name(fn: object) -> str:
    """The label of a callback in messages and diagrams: its ``__name__`` or its repr."""
    return str(getattr(fn, "__name__", None) or repr(fn))


def is_async(fn: object) -> bool:
    """True when calling ``fn`` returns a coroutine (async def, or an object with one)."""
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - the bound __call__, not callable()
    )

"""Declarative kinds: a state machine written as a class, checked and compiled at import.

::

    @attrs.frozen
    class Order:
        order_id: str
        paid: bool = False

    async def charge(ctx: StepContext[Shop], order: Order) -> Order:
        await ctx.services.charge(order.order_id, key=ctx.idempotency_key)
        return attrs.evolve(order, paid=True)

    class OrderKind(Kind[Order, Shop]):
        name = "order"

        new = State(initial=True)
        paid = State.done()

        transitions = [new.to(paid, effect=charge)]

        @staticmethod
        def action_id(order: Order) -> str:
            return f"order-{order.order_id}"

    executor.start(OrderKind.create(Order("42")))

Creating the class collects the declaration (`fsm.definition`), runs every check
(`fsm.validate`, raising `fsm.DefinitionError` at import) and compiles the table
(`fsm.compiled`; `fsm.interpreter` runs it). ``OrderKind.__fsm_codec__`` is what the
executor's registry stores rows with; ``OrderKind.graph()`` is what diagrams are drawn from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, cast

from fsm.codec import DeclarativeCodec, KindCodec
from fsm.compiled import Compiled
from fsm.definition import Definition, collect
from fsm.diagram.model import Edge, KindGraph, StateNode
from fsm.interpreter import Instance
from fsm.protocol import Next, S, Upcaster
from fsm.retry import RetryPolicy
from fsm.state import CancelRoute, D, Rejection, State, Transition, callable_name
from fsm.validate import check_definition, emit


class Kind(Generic[D, S]):
    """Base class of a declarative kind over data ``D`` (an attrs class) and services ``S``.

    Declare in the class body: ``name``; the states (`State` attributes, exactly one
    initial); ``transitions``, the ordered table of ``a.to(b, ...)`` rows and, where a
    rejection has somewhere to go, ``a.rejected(...)`` rows (see `State.rejected`), and
    where an operator's cancel has, ``a.cancelled(to=...)`` rows (see `State.cancelled`);
    ``action_id(data)``, a staticmethod; and optionally ``retry`` (the kind's `RetryPolicy`;
    default: the executor's), ``timeout`` (seconds an async step may run; default: the
    executor's ``step_timeout``), ``blocking`` (True: the synchronous callbacks of its states
    block, so they run on the executor's thread pool; a state's own ``blocking`` wins; see
    `fsm.blocking`), ``version``, ``upcasters``
    (``{n: fn(data_dict_vn) -> data_dict_vn+1}``), ``services``, a no-argument callable
    that builds ``S`` for ``fsm worker`` when no ``--services`` is given, ``events`` (the
    event types the kind's senders may send: every one must be taken by some row, and every
    row's ``on=`` type listed; default: not declared, so not checked) and ``unaccepted``
    (what `fsm.Executor.send` does with an event the action's current state takes no row
    for: ``"queue"``, the default, ``"reject"`` or ``"drop"``). A kind is never
    instantiated: its actions are made with `create`.
    """

    name: ClassVar[str]
    version: ClassVar[int] = 1
    retry: ClassVar[RetryPolicy | None] = None
    timeout: ClassVar[float | None] = None
    blocking: ClassVar[bool] = False
    upcasters: ClassVar[Mapping[int, Upcaster]]
    services: ClassVar[Callable[[], Any] | None] = None
    events: ClassVar[Sequence[type] | None] = None
    unaccepted: ClassVar[str] = "queue"
    transitions: Sequence[Transition[D, S] | Rejection[D, S] | CancelRoute]

    __fsm_definition__: ClassVar[Definition]
    __fsm_compiled__: ClassVar[Compiled]
    __fsm_codec__: ClassVar[KindCodec]

    @staticmethod
    def action_id(data: D) -> str:
        """The action's id, derived from its data; must be the same in every state."""
        raise NotImplementedError

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        definition = collect(cls, Kind)
        emit(check_definition(definition), stacklevel=2)
        compiled = Compiled(definition, cls)
        cls.__fsm_definition__ = definition
        cls.__fsm_compiled__ = compiled
        cls.__fsm_codec__ = DeclarativeCodec(compiled)

    def __new__(cls, *args: Any, **kwargs: Any) -> Kind[D, S]:
        raise TypeError(f"{cls.__qualname__} is a kind; make actions with {cls.__name__}.create")

    @classmethod
    def create(cls, data: D, state: State | None = None) -> Instance[D, S]:
        """A new action of this kind with ``data``, in the initial state (or ``state``)."""
        compiled = cls.__fsm_compiled__
        name = compiled.initial if state is None else cls._state_name(state)
        return cast(Instance[D, S], compiled.instance_type(name, data))

    @classmethod
    def goto(cls, data: D, state: State) -> Next:
        """`Next` into ``state`` with ``data``: what a rejection handler returns to move on."""
        return Next(cls.create(data, state))

    @classmethod
    def graph(cls) -> KindGraph:
        """The kind as a diagram IR: states in declaration order, edges in table order (event
        rows as ``event`` edges), then the wait states' deadlines in state order, then the
        targets of the rejection rows, then those of the cancel rows, in table order.
        """
        d = cls.__fsm_definition__
        handlers = d.hidden_handlers()  # undeclared handlers: their targets cannot be drawn
        states = tuple(
            StateNode(s.name, s.role, s.initial, _doc(s), handlers.get(s.name)) for s in d.states
        )
        edges = [
            Edge(
                t.source.name,
                t.target.name,
                callable_name(t.guard) if t.guard is not None else None,
                callable_name(t.effect) if t.effect is not None else None,
                style="transition" if t.on is None else "event",
                event=None if t.on is None else t.on.__name__,
            )
            for t in d.transitions
        ]
        edges += [
            Edge(src.name, dst.name, style="timeout", deadline=after)
            for src, dst, after in d.deadline_edges()
        ]
        edges += [
            Edge(src.name, dst.name, style="rejection", handler=handler)
            for src, dst, handler in d.rejection_edges()
        ]
        edges += [Edge(src.name, dst.name, style="cancel") for src, dst in d.cancel_edges()]
        return KindGraph(d.name, d.version, states, tuple(edges))

    @classmethod
    def _state_name(cls, state: State) -> str:
        if state not in cls.__fsm_definition__.states:
            raise ValueError(f"{state!r} is not a state of kind {cls.name!r}")
        return state.name


def _doc(s: State) -> str | None:
    if s.doc is not None or s.wake is None:
        return s.doc
    return f"wakes {s.wake.describe()}"

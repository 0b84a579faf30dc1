"""One interpreter step, in memory: the outcome for every state role, guards, callbacks, errors."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import attrs
import pytest

import fsm
from fsm import Done, Failed, Kind, Next, Park, RetryPolicy, State, StepContext
from fsm.errors import DefinitionError
from fsm.testing.steps import step_context
from fsm.validate import GuardedExitWarning

log = logging.getLogger("test")


@attrs.frozen
class Data:
    key: str
    n: int = 0
    trail: tuple[str, ...] = ()


class Svc:
    def __init__(self) -> None:
        self.flag = False
        self.calls: list[str] = []


DEFAULT_RETRY = RetryPolicy()


def ctx(services: Any = None, attempts: int = 0, retry: RetryPolicy = DEFAULT_RETRY) -> Any:
    return step_context(services, attempts=attempts, retry=retry)


def run(result: Any) -> Any:
    """The outcome of a sync step, or of an async one run to completion."""
    if asyncio.iscoroutine(result):
        return asyncio.run(result)
    return result


def note(label: str) -> Any:
    def effect(c: StepContext[Svc], d: Data) -> Data:
        c.services.calls.append(label)
        return attrs.evolve(d, n=d.n + 1, trail=(*d.trail, label))

    effect.__name__ = label
    return effect


def flag_set(c: StepContext[Svc], d: Data) -> bool:
    return c.services.flag


def always(c: StepContext[Svc], d: Data) -> bool:
    return True


def never(c: StepContext[Svc], d: Data) -> bool:
    return False


with pytest.warns(GuardedExitWarning, match="state 'stuck'"):  # the point of `stuck`

    class Roles(Kind[Data, Svc]):
        name = "roles"

        a = State(initial=True)
        b = State()
        notified = State.wait()
        polled = State.wait(after=30.0)
        backed_off = State.wait(backoff=RetryPolicy(base=2.0, cap=100.0))
        stuck = State()
        ok = State.done()
        bad = State.failed()

        transitions = (
            a.to(b, guard=never, effect=note("never")),
            a.to(b, guard=always, effect=note("first")),
            a.to(ok, effect=note("unused last resort")),
            b.to(notified, guard=flag_set),
            b.to(bad),
            notified.to(polled, guard=flag_set),
            polled.to(backed_off, guard=flag_set),
            backed_off.to(stuck, guard=flag_set),
            stuck.to(ok, guard=flag_set),
        )

        @staticmethod
        def action_id(d: Data) -> str:
            return d.key


def test_step_state_takes_first_holding_guard_in_table_order() -> None:
    svc = Svc()
    out = run(Roles.create(Data("k")).advance(ctx(svc)))
    assert isinstance(out, Next)
    assert out.state.state == "b"
    assert out.state.data == Data("k", 1, ("first",))
    assert svc.calls == ["first"]  # the effect of the transition with the false guard never ran


def test_transition_into_done_and_failed_states() -> None:
    svc = Svc()
    assert run(Roles.create(Data("k"), Roles.stuck).advance(ctx(Svc()))) != Done("ok")
    svc.flag = True
    # the terminal outcome names the terminal state it reached
    assert run(Roles.create(Data("k"), Roles.stuck).advance(ctx(svc))) == Done("ok")
    out = run(Roles.create(Data("k"), Roles.b).advance(ctx(Svc())))
    assert isinstance(out, Failed)
    assert "failed state 'bad'" in str(out.error)


def test_wait_state_without_wake_parks_until_notified() -> None:
    action = Roles.create(Data("k"), Roles.notified)
    out = run(action.advance(ctx(Svc())))
    assert out == Park(action, wake_after=None)
    svc = Svc()
    svc.flag = True
    out = run(action.advance(ctx(svc)))
    assert isinstance(out, Next) and out.state.state == "polled"


def test_wait_state_with_fixed_delay() -> None:
    action = Roles.create(Data("k"), Roles.polled)
    out = run(action.advance(ctx(Svc())))
    assert isinstance(out, Park)
    assert out.state is action
    assert out.wake_after == 30.0
    assert out.error is None


def test_wait_state_with_backoff_counts_consecutive_parks() -> None:
    action = Roles.create(Data("k"), Roles.backed_off)
    delays = []
    for _ in range(3):
        out = run(action.advance(ctx(Svc())))
        assert isinstance(out, Park)
        delays.append(out.wake_after)
        action = out.state
    assert delays == [2.0, 8.0, 18.0]
    assert action.parks == 3
    svc = Svc()
    svc.flag = True
    out = run(action.advance(ctx(svc)))
    assert isinstance(out, Next)
    assert out.state.parks == 0  # leaving the state resets the count


def test_step_state_with_no_holding_guard_parks_with_definition_error_and_no_wake() -> None:
    action = Roles.create(Data("k"), Roles.stuck)
    out = run(action.advance(ctx(Svc())))
    assert isinstance(out, Park)
    assert out.wake_after is None
    assert out.state is action
    assert isinstance(out.error, DefinitionError)
    message = str(out.error)
    assert "kind 'roles'" in message and "state 'stuck'" in message and "Fix:" in message


async def async_guard(c: StepContext[Svc], d: Data) -> bool:
    await asyncio.sleep(0)
    return d.n > 0


async def async_effect(c: StepContext[Svc], d: Data) -> Data:
    await asyncio.sleep(0)
    return attrs.evolve(d, trail=(*d.trail, "async"))


class Mixed(Kind[Data, Svc]):
    name = "mixed"

    a = State(initial=True)
    b = State()
    end = State.done()

    transitions = (
        a.to(b, guard=async_guard, effect=note("sync-after-async-guard")),
        a.to(b, effect=async_effect),
        b.to(end),
    )

    @staticmethod
    def action_id(d: Data) -> str:
        return d.key


def test_async_guard_false_falls_through_to_async_effect() -> None:
    result = Mixed.create(Data("k", n=0)).advance(ctx(Svc()))
    assert asyncio.iscoroutine(result)
    out = asyncio.run(result)
    assert isinstance(out, Next)
    assert out.state.data.trail == ("async",)


def test_async_guard_true_runs_sync_effect() -> None:
    svc = Svc()
    out = run(Mixed.create(Data("k", n=1)).advance(ctx(svc)))
    assert isinstance(out, Next)
    assert out.state.data.trail == ("sync-after-async-guard",)
    assert svc.calls == ["sync-after-async-guard"]


def test_states_without_async_callbacks_step_synchronously() -> None:
    result = Mixed.create(Data("k"), Mixed.b).advance(ctx(Svc()))
    assert result == Done("end")


# -- retries and rejections --------------------------------------------------------------------


def compensate(c: StepContext[Svc], d: Data, error: BaseException) -> fsm.Outcome:
    if isinstance(error, fsm.Rejected) and error.code == "retry-later":
        return Failed(f"handled: {error}")
    return Routes.goto(attrs.evolve(d, trail=(*d.trail, f"handled {error}")), Routes.undo)


class Routes(Kind[Data, Svc]):
    name = "routes"
    retry = RetryPolicy(base=1.0, cap=None, max_attempts=5)

    a = State(initial=True, retry=RetryPolicy(base=10.0, max_attempts=2))
    b = State()
    c = State()
    d = State()
    undo = State()
    end = State.done()
    gave_up = State.failed()

    transitions = (
        a.to(b),
        b.to(c),
        c.to(d),
        d.to(end),
        undo.to(gave_up),
        a.rejected(to=undo),
        b.rejected(to=gave_up),
        c.rejected(handler=compensate),
    )

    @staticmethod
    def action_id(d: Data) -> str:
        return d.key


def test_retry_uses_state_policy_then_follows_route_when_exhausted() -> None:
    action = Routes.create(Data("k"))
    out = run(action.on_retry(ctx(attempts=1), 1, TimeoutError("slow")))
    assert out == Park(action, wake_after=10.0)
    out = run(action.on_retry(ctx(attempts=2), 2, TimeoutError("slow")))
    assert isinstance(out, Next) and out.state.state == "undo"
    assert out.state.data == action.data


def test_retry_uses_kind_policy_and_fails_when_exhausted_without_route() -> None:
    action = Routes.create(Data("k"), Routes.d)
    out = run(action.on_retry(ctx(attempts=4), 4, TimeoutError("slow")))
    assert out == Park(action, wake_after=16.0)
    error = TimeoutError("slow")
    assert run(action.on_retry(ctx(attempts=5), 5, error)) == Failed(error)


def test_retry_falls_back_to_the_executor_policy() -> None:
    action = Roles.create(Data("k"))
    out = run(action.on_retry(ctx(attempts=3, retry=RetryPolicy(base=0.5)), 3, OSError()))
    assert out == Park(action, wake_after=4.5)


def test_rejection_routes_to_compensating_state() -> None:
    action = Routes.create(Data("k"))
    out = run(action.on_rejection(ctx(), fsm.Rejected("no")))
    assert isinstance(out, Next)
    assert out.state.state == "undo"


def test_rejection_route_to_failed_state_fails_with_the_rejection() -> None:
    error = fsm.Rejected("no")
    out = run(Routes.create(Data("k"), Routes.b).on_rejection(ctx(), error))
    assert out == Failed(error, "gave_up")


def test_rejection_handler_decides() -> None:
    action = Routes.create(Data("k"), Routes.c)
    out = run(action.on_rejection(ctx(), fsm.Rejected("nope")))
    assert isinstance(out, Next)
    assert out.state.state == "undo"
    assert out.state.data.trail == ("handled nope",)
    out = run(action.on_rejection(ctx(), fsm.Rejected("later", code="retry-later")))
    assert out == Failed("handled: later")


def test_rejection_without_route_fails() -> None:
    error = fsm.Rejected("no")
    assert run(Routes.create(Data("k"), Routes.d).on_rejection(ctx(), error)) == Failed(error)


def test_create_rejects_foreign_state() -> None:
    with pytest.raises(ValueError, match="not a state of kind 'routes'"):
        Routes.create(Data("k"), Roles.a)


def test_kind_is_not_instantiable() -> None:
    with pytest.raises(TypeError, match=r"Routes\.create"):
        Routes()


# -- wrong return types ------------------------------------------------------------------------


@attrs.frozen
class Other:
    key: str


def returns(value: Any, name: str, is_async: bool = False) -> Any:
    """An effect (or guard) named ``name`` returning ``value`` whatever it is given."""

    def sync(c: StepContext[Svc], d: Data) -> Any:
        return value

    async def coro(c: StepContext[Svc], d: Data) -> Any:
        return value

    fn = coro if is_async else sync
    fn.__name__ = name
    return fn


def one_edge(guard: Any = None, effect: Any = None) -> type[Kind[Data, Svc]]:
    class Checked(Kind[Data, Svc]):
        name = "checked"
        start = State.wait(initial=True)  # a guarded exit is no GuardedExitWarning here
        end = State.done()
        transitions = (start.to(end, guard=guard, effect=effect),)

        @staticmethod
        def action_id(d: Data) -> str:
            return d.key

    return Checked


WRONG_DATA = [
    ({"key": "k"}, "dict"),
    (None, "NoneType"),
    (Other("k"), "Other"),
    (Next(Roles.create(Data("k"))), "Next"),
]


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize(("value", "type_name"), WRONG_DATA)
def test_effect_returning_the_wrong_type_names_kind_state_and_effect(
    value: Any, type_name: str, is_async: bool
) -> None:
    kind = one_edge(effect=returns(value, "charge_card", is_async))
    with pytest.raises(TypeError) as err:
        run(kind.create(Data("k")).advance(ctx(Svc())))
    assert str(err.value) == (
        f"kind 'checked' (Checked), state 'start': effect charge_card returned {type_name}, "
        "expected Data. Fix: return the new data, e.g. attrs.evolve(data, ...)"
    )


@attrs.frozen
class MoreData(Data):
    extra: int = 0


def test_effect_may_return_a_subclass_of_the_data_type() -> None:
    kind = one_edge(effect=returns(MoreData("k"), "upgrade"))
    assert isinstance(kind.create(Data("k")).advance(ctx(Svc())), Done)


def test_sync_effect_returning_a_coroutine_is_told_to_be_async() -> None:
    async def later(c: StepContext[Svc], d: Data) -> Data:
        return d

    def forgets_await(c: StepContext[Svc], d: Data) -> Any:
        return later(c, d)

    kind = one_edge(effect=forgets_await)
    with pytest.raises(TypeError, match=r"returned coroutine, expected Data\. Fix: make "):
        kind.create(Data("k")).advance(ctx(Svc()))


WRONG_BOOL = [(None, "NoneType"), (1, "int"), ("yes", "str"), (Data("k"), "Data")]


@pytest.mark.parametrize("is_async", [False, True])
@pytest.mark.parametrize(("value", "type_name"), WRONG_BOOL)
def test_guard_returning_a_non_bool_names_the_guard(
    value: Any, type_name: str, is_async: bool
) -> None:
    kind = one_edge(guard=returns(value, "in_stock", is_async))
    with pytest.raises(TypeError) as err:
        run(kind.create(Data("k")).advance(ctx(Svc())))
    assert str(err.value) == (
        f"kind 'checked' (Checked), state 'start': guard in_stock returned {type_name}, "
        "expected bool. Fix: return True or False"
    )


def test_sync_guard_returning_a_coroutine_is_told_to_be_async() -> None:
    async def check(c: StepContext[Svc], d: Data) -> bool:
        return False

    def forgets_await(c: StepContext[Svc], d: Data) -> Any:
        return check(c, d)

    kind = one_edge(guard=forgets_await)
    with pytest.raises(TypeError) as err:
        kind.create(Data("k")).advance(ctx(Svc()))
    assert "guard forgets_await returned coroutine, expected bool" in str(err.value)
    assert "Fix: make forgets_await an `async def`" in str(err.value)


# -- rejection handlers: outcomes and declared targets -----------------------------------------


def decide(c: StepContext[Svc], d: Data, error: BaseException) -> Any:
    """Returns whatever the services say: an outcome, or something wrong."""
    return c.services.answer(d)


async def decide_async(c: StepContext[Svc], d: Data, error: BaseException) -> Any:
    return c.services.answer(d)


class Declared(Kind[Data, Svc]):
    name = "declared"

    a = State(initial=True)
    b = State()
    retry_a = State()
    elsewhere = State()
    end = State.done()
    cancelled = State.failed()

    transitions = (
        a.to(b),
        b.to(end),
        retry_a.to(a),
        elsewhere.to(end),
        a.rejected(handler=decide, to=(retry_a, cancelled)),
        b.rejected(handler=decide_async, to=elsewhere),
        retry_a.rejected(handler=decide),  # undeclared: may go anywhere
    )

    @staticmethod
    def action_id(d: Data) -> str:
        return d.key


class Answer:
    def __init__(self, answer: Any) -> None:
        self.answer = answer


def reject(state: State, answer: Any) -> Any:
    action = Declared.create(Data("k"), state)
    return run(action.on_rejection(ctx(Answer(answer)), fsm.Rejected("no")))


def test_declared_handler_moves_to_a_declared_target() -> None:
    out = reject(Declared.a, lambda d: Declared.goto(d, Declared.retry_a))
    assert isinstance(out, Next) and out.state.state == "retry_a"


def test_declared_handler_may_park_in_its_own_state_or_end() -> None:
    here = Park(Declared.create(Data("k"), Declared.a), wake_after=5.0)
    assert reject(Declared.a, lambda d: here) is here
    assert reject(Declared.a, lambda d: Failed("no")) == Failed("no")


@pytest.mark.parametrize(
    ("state", "handler", "declared"),
    [(Declared.a, "decide", "cancelled, retry_a"), (Declared.b, "decide_async", "elsewhere")],
)
def test_declared_handler_moving_elsewhere_is_a_type_error(
    state: State, handler: str, declared: str
) -> None:
    with pytest.raises(TypeError) as err:
        reject(state, lambda d: Park(Declared.create(d, Declared.end)))
    assert str(err.value) == (
        f"kind 'declared' (Declared), state {state.name!r}: rejection handler {handler} moved "
        f"the action to 'end', which it does not declare (it declares {declared}). Fix: add "
        f"end to its row's `rejected(handler={handler}, to=...)`, or move to a declared state"
    )


def test_undeclared_handler_may_move_anywhere() -> None:
    out = reject(Declared.retry_a, lambda d: Declared.goto(d, Declared.elsewhere))
    assert isinstance(out, Next) and out.state.state == "elsewhere"


@pytest.mark.parametrize("state", [Declared.a, Declared.b, Declared.retry_a])
@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (lambda d: None, "returned None (expected Next, Park, Done or Failed)"),
        (lambda d: d, "returned Data(key='k', n=0, trail=()) (expected Next, Park"),
        (lambda d: Next(Roles.create(d)), "(an action of RolesAction, not DeclaredAction)"),
        (lambda d: Next(Declared.create(d).__class__("a", Other("k"))), "its data is a Other"),
    ],
)
def test_handler_returning_a_non_outcome_names_the_handler(
    state: State, answer: Any, expected: str
) -> None:
    with pytest.raises(TypeError) as err:
        reject(state, answer)
    message = str(err.value)
    assert message.startswith(f"kind 'declared' (Declared), state {state.name!r}: rejection ")
    assert expected in message
    assert "Fix: return MyKind.goto(data, state)" in message

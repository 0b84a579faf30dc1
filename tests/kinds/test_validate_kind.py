"""Definition-time checks: each mistake raises at class creation, naming kind, state and fix."""

from __future__ import annotations

import decimal
import enum
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest

import fsm
from fsm import DefinitionError, Kind, RetryPolicy, State, StepContext, validate_kind
from fsm.validate import GuardedExitWarning, UntypedDataWarning


@attrs.frozen
class Data:
    key: str


def ok(c: StepContext[None], d: Data) -> bool:
    return True


def step(c: StepContext[None], d: Data) -> Data:
    return d


def key_of(d: Data) -> str:
    return d.key


def problem(err: pytest.ExceptionInfo[DefinitionError], state: str | None, *fix: str) -> str:
    """Assert the message names the kind (and the state) and gives the fix; return it."""
    message = str(err.value)
    assert "kind 'bad' (Bad)" in message
    if state is not None:
        assert f"state {state!r}" in message
    assert "Fix:" in message
    for fragment in fix:
        assert fragment in message.split("Fix:", 1)[1]
    return message


def test_no_initial_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State()
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    assert "no initial state" in problem(err, None, "State(initial=True)")


def test_several_initial_states() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            b = State(initial=True)
            end = State.done()
            transitions = (a.to(end), b.to(end))
            action_id = staticmethod(key_of)

    assert "['a', 'b']" in problem(err, None, "exactly one")


def test_unknown_target() -> None:
    stray = State()
    stray.name = "stray"
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end), a.to(stray))
            action_id = staticmethod(key_of)

    assert "unknown target" in problem(err, "a", "attribute of this kind")


def test_unreachable_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            island = State()
            end = State.done()
            transitions = (a.to(end), island.to(end))
            action_id = staticmethod(key_of)

    assert "unreachable" in problem(err, "island", "add a transition", "or delete it")


def test_state_with_no_path_to_terminal() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            loop1 = State()
            loop2 = State()
            end = State.done()
            transitions = (
                a.to(end, guard=ok),
                a.to(loop1),
                loop1.to(loop2),
                loop2.to(loop1),
            )
            action_id = staticmethod(key_of)

    message = problem(err, "loop1", "reaches a terminal state")
    assert "no path" in message and "loop2" in message


def test_kind_without_terminal_state() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            b = State()
            transitions = (a.to(b), b.to(a))
            action_id = staticmethod(key_of)

    assert "no terminal state" in problem(err, None, "State.done()")


def test_step_state_without_exit_is_a_trap() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            trap = State()
            end = State.done()
            transitions = (a.to(end, guard=ok), a.to(trap))
            action_id = staticmethod(key_of)

    assert "no outgoing transition" in problem(err, "trap", "State.done()")


def test_terminal_state_with_outgoing_transition() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end), end.to(a))
            action_id = staticmethod(key_of)

    assert "terminal (done) state" in problem(err, "end", "remove the transition")


def test_unguarded_transition_shadows_later_ones() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            b = State()
            end = State.done()
            transitions = (a.to(b), a.to(end, guard=ok), b.to(end))
            action_id = staticmethod(key_of)

    message = problem(err, "a", "give the earlier transition a guard")
    assert "a -> end guard=ok" in message and "can never run" in message


def test_wait_state_with_no_way_out() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            waiting = State.wait(after=5)
            end = State.done()
            transitions = (a.to(end, guard=ok), a.to(waiting))
            action_id = staticmethod(key_of)

    assert "no way out" in problem(err, "waiting", "guarded transition")


def test_step_state_with_only_guarded_exits_warns() -> None:
    with pytest.warns(GuardedExitWarning) as record:

        class Guarded(Kind[Data, None]):
            name = "guarded"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, guard=ok),)
            action_id = staticmethod(key_of)

    message = str(record[0].message)
    assert "kind 'guarded'" in message and "state 'a'" in message and "Fix:" in message
    found = validate_kind(Guarded)
    assert [type(w) for w in found] == [GuardedExitWarning]


def test_a_clean_kind_has_no_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")

        class Clean(Kind[Data, None]):
            name = "clean"
            a = State(initial=True)
            waiting = State.wait()
            end = State.done()
            transitions = (a.to(waiting), waiting.to(end, guard=ok))
            action_id = staticmethod(key_of)

    assert validate_kind(Clean) == []


def test_rejection_route_from_unknown_state() -> None:
    stray = State()
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (
                a.to(end),
                stray.rejected(to=end),
            )
            action_id = staticmethod(key_of)

    assert "starts from unknown state" in problem(err, None, "write `state.rejected(...)`")


def test_rejection_route_to_unknown_state() -> None:
    stray = State()
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (
                a.to(end),
                a.rejected(to=stray),
            )
            action_id = staticmethod(key_of)

    assert "leads to unknown state" in problem(err, "a", "route to a State")


def test_rejection_route_counts_for_reachability() -> None:
    class Compensated(Kind[Data, None]):
        name = "compensated"
        a = State(initial=True)
        undo = State()
        end = State.done()
        failed = State.failed()
        transitions = (
            a.to(end),
            undo.to(failed),
            a.rejected(to=undo),
        )
        action_id = staticmethod(key_of)

    edges = [(e.source, e.target, e.style) for e in Compensated.graph().edges]
    assert ("a", "undo", "rejection") in edges


def wrong_arity(d: Data) -> Data:
    return d


@pytest.mark.parametrize("slot", ["guard", "effect"])
def test_callback_with_wrong_signature(slot: str) -> None:
    callbacks: dict[str, Any] = {slot: wrong_arity}
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, **callbacks),)
            action_id = staticmethod(key_of)

    message = problem(err, "a", "(ctx, data)")
    assert f"{slot} of" in message and "wrong_arity(d: 'Data')" in message


def test_callback_given_as_string() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, effect="step"),)  # type: ignore[arg-type]
            action_id = staticmethod(key_of)

    assert "not a callable" in problem(err, "a", "pass a function")


def test_rejection_handler_with_wrong_signature() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (
                a.to(end),
                a.rejected(handler=step),
            )
            action_id = staticmethod(key_of)

    assert "rejection handler" in problem(err, "a", "(ctx, data, error)")


def test_missing_id_function() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)

    assert "no action id function" in problem(err, None, "def action_id")


def test_id_function_written_as_method() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)

            def action_id(self, d: Data) -> str:  # type: ignore[override]
                return d.key

    assert "action_id" in problem(err, None, "@staticmethod")


def test_state_named_like_a_kind_attribute() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            graph = State.done()  # type: ignore[assignment]
            transitions = (a.to(graph),)
            action_id = staticmethod(key_of)

    assert "taken by the kind itself" in problem(err, "graph", "rename the state")


def test_missing_name() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    message = str(err.value)
    assert "kind class Bad" in message and "no name" in message and "Fix: set `name" in message


def test_data_type_must_be_attrs() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[dict[str, str], None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: "x")

    assert "not an attrs class" in problem(err, None, "Kind[MyData, MyServices]")


@pytest.mark.parametrize("bad_version", [0, -1, "2", 1.5, True])
def test_version_below_one_or_not_int(bad_version: Any) -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            version = bad_version
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    assert f"version is {bad_version!r}" in problem(err, None, "integer version >= 1")


def up(p: dict[str, Any]) -> dict[str, Any]:
    return p


def test_upcaster_gap() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            version = 4
            upcasters = {1: up, 3: up}  # noqa: RUF012
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    assert "nothing turns v2 into v3" in problem(err, None, "upcasters[2]")


def test_upcaster_for_current_or_future_version() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            version = 2
            upcasters = {2: up}  # noqa: RUF012
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    assert "[2]" in problem(err, None, "from 1 to 1")


def test_bad_retry_policy() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True, retry=3)  # type: ignore[arg-type]
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    assert "retry is 3" in problem(err, "a", "RetryPolicy")


def test_wait_with_delay_and_backoff() -> None:
    with pytest.raises(DefinitionError, match="not both"):
        State.wait(after=1, backoff=RetryPolicy())


def test_importing_a_module_with_a_bad_kind_raises(tmp_path: Path) -> None:
    module = tmp_path / "badkinds.py"
    module.write_text(
        textwrap.dedent(
            """
            import attrs
            from fsm import Kind, State

            @attrs.frozen
            class D:
                k: str

            class Broken(Kind[D, None]):
                name = "broken"
                a = State(initial=True)
                b = State()
                end = State.done()
                transitions = (a.to(end),)

                @staticmethod
                def action_id(d: D) -> str:
                    return d.k
            """
        )
    )
    proc = subprocess.run(
        [sys.executable, "-c", "import badkinds"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 1
    assert "fsm.errors.DefinitionError: kind 'broken' (Broken), state 'b'" in proc.stderr


# -- the table must be ordered ----------------------------------------------------------------


def _unordered(kind: str, a: State, b: State, end: State) -> Any:
    rows = [a.to(b), b.to(end)]
    return {
        "set": set(rows),
        "frozenset": frozenset(rows),
        "dict": dict.fromkeys(rows),
        "generator": (row for row in rows),
    }[kind]


@pytest.mark.parametrize("container", ["set", "frozenset", "dict", "generator"])
def test_transitions_must_be_a_list_or_tuple(container: str) -> None:
    """A set's order (hence which transition wins) changes with hash seeds, run to run."""
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            b = State()
            end = State.done()
            transitions = _unordered(container, a, b, end)
            action_id = staticmethod(key_of)

    message = problem(err, None, "a tuple or a list")
    assert f"`transitions` is a {container}, not an ordered sequence" in message


def test_transitions_as_a_list_or_tuple_are_accepted() -> None:
    for table in (list, tuple):

        class Fine(Kind[Data, None]):
            name = "fine"
            a = State(initial=True)
            end = State.done()
            transitions = table([a.to(end)])
            action_id = staticmethod(key_of)

        assert [repr(t) for t in Fine.__fsm_definition__.transitions] == ["<Transition a -> end>"]


# -- data must be storable --------------------------------------------------------------------


@attrs.frozen
class Line:
    sku: str
    amount: decimal.Decimal


@attrs.frozen
class Payout:
    key: str
    lines: list[Line]


def test_data_field_the_converter_cannot_store_is_refused_with_its_path() -> None:
    @attrs.frozen
    class Order:
        key: str
        amount: decimal.Decimal | None = None

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Order, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

    assert str(err.value) == (
        "kind 'bad' (Bad): data field 'Order.amount' has type Decimal, which fsm cannot store "
        "as JSON. Fix: use int or str, or register structure and unstructure hooks for "
        "Decimal on fsm.CONVERTER before the kind is defined"
    )


def test_unstorable_type_nested_in_a_collection_of_attrs_classes() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Payout, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

    assert "data field 'Payout.lines.amount' has type Decimal" in problem(err, None, "hooks")


class Cents:
    """A plain class: storable only once both hooks are on fsm.CONVERTER (this test does it)."""

    def __init__(self, n: int) -> None:
        self.n = n


@attrs.frozen
class Price:
    key: str
    cents: Cents


def test_type_with_hooks_registered_before_the_kind_passes() -> None:
    def kind() -> type:
        class Priced(Kind[Price, None]):
            name = "priced"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

        return Priced

    with pytest.raises(DefinitionError, match=r"'Price\.cents' has type Cents"):
        kind()
    fsm.CONVERTER.register_unstructure_hook(Cents, lambda c: c.n)
    with pytest.raises(DefinitionError, match=r"'Price\.cents' has type Cents"):
        kind()  # one direction is not enough: structuring would still fail
    fsm.CONVERTER.register_structure_hook(Cents, lambda v, _: Cents(v))
    priced = kind()
    _, payload = priced.__fsm_codec__.dump(priced.create(Price("p", Cents(5))))
    assert priced.__fsm_codec__.load("a", 1, payload).data.cents.n == 5


class Colour(enum.Enum):
    RED = 1


@attrs.frozen
class Palette:
    key: str
    counts: dict[Colour, int]


def test_dict_keyed_by_a_plain_enum_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Palette, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

    message = problem(err, None, "key the dict by str or int")
    assert "'Palette.counts' has type dict[Colour, int]" in message
    assert "Colour keys would not read back" in message


@attrs.frozen
class Ahead:
    key: str
    later: NotYetDefined  # type: ignore[name-defined]  # noqa: F821


def test_unresolvable_forward_reference_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Ahead, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

    message = problem(err, None, "define (or import)")
    assert "data field 'Ahead.later'" not in message
    assert "data type Ahead, whose annotations cannot be resolved (NameError" in message
    assert "NotYetDefined" in message


def test_any_field_is_accepted_with_a_warning() -> None:
    @attrs.frozen
    class Loose:
        key: str
        extra: Any = None

    with pytest.warns(UntypedDataWarning, match=r"'Loose\.extra' has type Any") as caught:

        class Fine(Kind[Loose, None]):
            name = "fine"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end),)
            action_id = staticmethod(lambda d: d.key)

    assert "kind 'fine' (Fine)" in str(caught[0].message)
    assert [str(w) for w in validate_kind(Fine)] == [str(caught[0].message)]


# -- rejection handlers declare their targets -------------------------------------------------


def refused(ctx: StepContext[None], d: Data, error: BaseException) -> fsm.Outcome:
    return fsm.Failed(error)


def test_handler_targets_count_for_reachability() -> None:
    class Declared(Kind[Data, None]):
        name = "declared"
        a = State(initial=True)
        retry_a = State()
        end = State.done()
        cancelled = State.failed()
        transitions = (
            a.to(end),
            retry_a.to(a),
            a.rejected(handler=refused, to=(retry_a, cancelled)),
        )
        action_id = staticmethod(key_of)

    edges = [(e.source, e.target, e.style, e.handler) for e in Declared.graph().edges]
    assert edges[-2:] == [
        ("a", "retry_a", "rejection", "refused"),
        ("a", "cancelled", "rejection", "refused"),
    ]
    assert Declared.graph().state("a").handler is None  # its targets are drawn instead


def test_state_reached_only_through_an_undeclared_handler_says_how_to_declare_it() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            retry_a = State()
            end = State.done()
            transitions = (
                a.to(end),
                retry_a.to(a),
                a.rejected(handler=refused),
            )
            action_id = staticmethod(key_of)

    message = problem(err, "retry_a", "targets with `rejected(handler=refused, to=")
    assert "unreachable" in message


def test_handler_declaring_a_foreign_state_is_refused() -> None:
    stray = State()
    stray.name = "stray"
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (
                a.to(end),
                a.rejected(handler=refused, to=stray),
            )
            action_id = staticmethod(key_of)

    assert "declares unknown target <State stray" in problem(err, "a", "`rejected(..., to=...)`")


def test_declared_handler_with_wrong_signature() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            end = State.done()
            transitions = (
                a.to(end),
                a.rejected(handler=step, to=end),
            )
            action_id = staticmethod(key_of)

    assert "rejection handler step" in problem(err, "a", "(ctx, data, error)")

"""Definition-time checks of events and deadlines: each mistake raises at class creation,
naming the kind, the state and the fix; the definitions that are right pass."""

from __future__ import annotations

import decimal
import types
import warnings
from typing import Any

import attrs
import pytest

from fsm import DefinitionError, Kind, State, StepContext
from fsm.events import ChildEnded
from fsm.state import Deadline
from fsm.validate import GuardedExitWarning, UntypedDataWarning


@attrs.frozen
class Data:
    key: str


@attrs.frozen
class Approved:
    by: str


@attrs.frozen
class Refused:
    why: str


@attrs.frozen
class Sub(Approved):
    note: str = ""


def key_of(d: Data) -> str:
    return d.key


def big(ctx: StepContext[None], d: Data, e: Approved) -> bool:
    return e.by == "boss"


def record(ctx: StepContext[None], d: Data, e: Approved) -> Data:
    return d


def ok(ctx: StepContext[None], d: Data) -> bool:
    return True


def problem(err: pytest.ExceptionInfo[DefinitionError], state: str | None, *fix: str) -> str:
    """Assert the message names the kind (and the state) and gives the fix; return it."""
    message = str(err.value)
    assert message.startswith("kind 'bad' (Bad)")
    if state is not None:
        assert f"kind 'bad' (Bad), state {state!r}: " in message
    else:
        assert ", state " not in message.split(":", 1)[0]
    assert "Fix:" in message
    for fragment in fix:
        assert fragment in message.split("Fix:", 1)[1]
    return message


# -- on= ----------------------------------------------------------------------------------


def test_on_a_state_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=end),)  # type: ignore[call-overload]
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "on=Approved", "attrs class")
    assert "state 'end'" in message and "takes the event type" in message


def test_on_an_instance_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved("x")),)  # type: ignore[call-overload]
            action_id = staticmethod(key_of)

    assert "an instance of Approved, not the class" in problem(err, "waiting", "pass Approved")


def test_on_a_plain_class_is_refused() -> None:
    class NotAttrs:
        pass

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=NotAttrs),)
            action_id = staticmethod(key_of)

    assert "NotAttrs, which is not an attrs class" in problem(
        err, "waiting", "@attrs.frozen", "fsm.CONVERTER"
    )


def test_an_event_type_the_converter_cannot_store_is_refused() -> None:
    @attrs.frozen
    class Paid:
        amount: decimal.Decimal

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Paid),)
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "register structure and unstructure hooks for Decimal")
    assert "event type Paid: event field 'Paid.amount' has type Decimal" in message


def test_an_untyped_event_field_warns() -> None:
    @attrs.frozen
    class Loose:
        body: Any

    with pytest.warns(UntypedDataWarning) as caught:

        class Loosely(Kind[Data, None]):
            name = "loosely"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Loose),)
            action_id = staticmethod(key_of)

    [w] = [w for w in caught if issubclass(w.category, UntypedDataWarning)]
    assert "kind 'loosely' (Loosely): event type Loose: event field 'Loose.body'" in str(w.message)
    assert "Fix: give the field a concrete type" in str(w.message)


def test_two_event_types_sharing_a_name_are_refused() -> None:
    @attrs.frozen
    class Other:
        __fsm_event__ = "Approved"
        by: str

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved), waiting.to(end, on=Other))
            action_id = staticmethod(key_of)

    message = problem(err, None, "__fsm_event__ = 'Approved.v2'")
    assert "Approved and" in message and "Other are both named 'Approved'" in message


def test_an_event_name_in_fsms_namespace_is_refused() -> None:
    @attrs.frozen
    class Sneaky:
        __fsm_event__ = "fsm.Cancel"

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Sneaky),)
            action_id = staticmethod(key_of)

    assert "named 'fsm.Cancel'" in problem(err, None, "another `__fsm_event__`")


def test_an_event_row_from_a_terminal_state_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            again = State.failed()
            transitions = (waiting.to(end, on=Approved), end.to(again, on=Refused))
            action_id = staticmethod(key_of)

    message = problem(err, "end", "remove the row")
    assert "terminal (done) state has the event row <Transition end -> again on=Refused>" in message


# -- callbacks ----------------------------------------------------------------------------


def test_an_event_rows_guard_takes_the_event() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved, guard=ok),)  # type: ignore[arg-type]
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "(ctx, data, event)")
    assert "guard of <Transition waiting -> end on=Approved guard=ok> ok(" in message
    assert "cannot be called with 3 argument(s)" in message


def test_an_event_rows_effect_takes_the_event() -> None:
    def two(ctx: StepContext[None], d: Data) -> Data:
        return d

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved, effect=two),)  # type: ignore[arg-type]
            action_id = staticmethod(key_of)

    assert "effect of <Transition waiting -> end on=Approved effect=two> two(" in problem(
        err, "waiting", "(ctx, data, event)"
    )


def test_a_plain_rows_guard_still_takes_two() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, guard=big),)  # type: ignore[arg-type]
            action_id = staticmethod(key_of)

    assert "cannot be called with 2 argument(s)" in problem(err, "waiting", "(ctx, data)")


# -- deadlines ----------------------------------------------------------------------------


def test_a_deadline_on_a_step_state_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            end = State.done()
            a = State(initial=True, deadline=Deadline(60.0, end))
            transitions = (a.to(end),)
            action_id = staticmethod(key_of)

    message = problem(err, "a", "State.wait(timeout=..., on_timeout=end)")
    assert "a step state has a deadline (after 1m), but only a wait state" in message


def test_a_deadline_to_a_state_of_another_kind_is_refused() -> None:
    elsewhere = State.done()
    elsewhere.name = "elsewhere"
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True, timeout=60.0, on_timeout=elsewhere)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert "not a state of this kind" in problem(err, "waiting", "as `on_timeout`")


def test_a_deadline_back_to_its_own_state_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            waiting.deadline = Deadline(60.0, waiting)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert "fire at every step" in problem(err, "waiting", "lead `on_timeout` to another state")


def test_a_deadline_function_takes_the_data() -> None:
    def two(data: Data, extra: int) -> float:
        return 1.0

    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            end = State.done()
            expired = State.failed()
            waiting = State.wait(initial=True, timeout=two, on_timeout=expired)
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "(data) -> float")
    assert "the deadline's timeout two(data: 'Data', extra: 'int')" in message


@pytest.mark.parametrize("seconds", [0, -1.0, True, float("nan"), "3d"])
def test_a_hand_built_deadline_with_no_seconds_is_refused(seconds: Any) -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            end = State.done()
            waiting = State.wait(initial=True)
            waiting.deadline = Deadline(seconds, end)
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert f"the deadline's timeout is {seconds!r}" in problem(err, "waiting", "seconds > 0")


def test_a_deadline_that_is_not_one_is_refused() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            end = State.done()
            waiting = State.wait(initial=True)
            waiting.deadline = 60.0  # type: ignore[assignment]
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert "deadline is 60.0" in problem(err, "waiting", "State.wait(timeout=")


def test_an_unguarded_plain_row_hides_the_deadline() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            end = State.done()
            expired = State.failed()
            waiting = State.wait(initial=True, timeout=86400.0 * 3, on_timeout=expired)
            transitions = (waiting.to(end),)
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "give that row a guard, or remove the deadline")
    assert "the deadline (after 3d) can never fire" in message


# -- graph checks -------------------------------------------------------------------------


def test_a_wait_state_left_only_by_events_or_its_deadline_is_no_trap() -> None:
    class Fine(Kind[Data, None]):
        name = "fine"
        end = State.done()
        expired = State.failed()
        waiting = State.wait(initial=True)
        lingering = State.wait(timeout=lambda d: 5.0, on_timeout=expired)
        transitions = (
            waiting.to(lingering, on=Approved),
            waiting.to(end, on=Refused),
        )
        action_id = staticmethod(key_of)

    d = Fine.__fsm_definition__
    assert [(a.name, b.name, after) for a, b, after in d.deadline_edges()] == [
        ("lingering", "expired", "after <lambda>")
    ]
    assert d.event_types() == (Approved, Refused)


def test_a_state_reached_only_by_a_deadline_is_reachable() -> None:
    class Fine(Kind[Data, None]):
        name = "fine"
        end = State.done()
        expired = State.failed()
        reminding = State()
        waiting = State.wait(initial=True, timeout=60.0, on_timeout=reminding)
        transitions = (waiting.to(end, on=Approved), reminding.to(expired))
        action_id = staticmethod(key_of)

    assert Fine.__fsm_compiled__.states["waiting"].deadline == (60.0, "reminding", None)


def test_a_wait_state_with_no_row_and_no_deadline_has_no_way_out() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            a = State(initial=True)
            waiting = State.wait()
            end = State.done()
            transitions = (a.to(waiting, guard=ok), a.to(end))
            action_id = staticmethod(key_of)

    problem(err, "waiting", "on=Approved", "on_timeout=")


def test_an_event_row_in_an_unreachable_state_is_flagged() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            orphan = State.wait()
            end = State.done()
            transitions = (waiting.to(end, on=Approved), orphan.to(end, on=Refused))
            action_id = staticmethod(key_of)

    assert "unreachable" in problem(err, "orphan", "delete it")


def test_a_step_state_left_only_by_events_warns() -> None:
    with pytest.warns(GuardedExitWarning) as caught:

        class Eager(Kind[Data, None]):
            name = "eager"
            a = State(initial=True)
            end = State.done()
            transitions = (a.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    [w] = caught
    assert "kind 'eager' (Eager), state 'a': every exit is guarded (on Approved)" in str(w.message)


def test_an_unguarded_event_row_hides_later_rows_of_its_type() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            waiting = State.wait(initial=True)
            end = State.done()
            other = State.failed()
            transitions = (
                waiting.to(end, on=Approved),
                waiting.to(other, on=Refused),
                waiting.to(other, on=Sub, guard=big),
            )
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "give the earlier row a guard")
    assert "unguarded <Transition waiting -> end on=Approved> takes every Approved event" in message
    assert "<Transition waiting -> other on=Sub guard=big> can never run" in message


def test_guarded_event_rows_and_a_plain_row_hide_nothing() -> None:
    class Fine(Kind[Data, None]):
        name = "fine"
        waiting = State.wait(initial=True)
        end = State.done()
        other = State.failed()
        transitions = (
            waiting.to(end, on=Approved, guard=big, effect=record),
            waiting.to(other, on=Approved),
            waiting.to(other, guard=ok),
        )
        action_id = staticmethod(key_of)

    assert len(Fine.__fsm_compiled__.states["waiting"].events) == 2

    class AlsoFine(Kind[Data, None]):  # events are offered before the plain rows run
        name = "also_fine"
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end), a.to(end, on=Approved))
        action_id = staticmethod(key_of)


# -- the kind's events and unaccepted -----------------------------------------------------


def test_declared_events_are_collected() -> None:
    class Fine(Kind[Data, None]):
        name = "fine"
        events = (Approved, Refused)
        unaccepted = "reject"
        waiting = State.wait(initial=True)
        end = State.done()
        other = State.failed()
        transitions = (
            waiting.to(end, on=Approved),
            waiting.to(other, on=Refused),
            waiting.to(other, on=ChildEnded),  # fsm's own: its senders do not send it
        )
        action_id = staticmethod(key_of)

    assert Fine.__fsm_definition__.events == (Approved, Refused)
    assert Fine.__fsm_definition__.unaccepted == "reject"
    assert Fine.__fsm_compiled__.unaccepted == "reject"


def test_unaccepted_defaults_to_queue() -> None:
    class Fine(Kind[Data, None]):
        name = "fine"
        waiting = State.wait(initial=True)
        end = State.done()
        transitions = (waiting.to(end, on=Approved),)
        action_id = staticmethod(key_of)

    assert Fine.__fsm_definition__.events is None
    assert Fine.__fsm_compiled__.unaccepted == "queue"


def test_an_event_no_state_can_consume_is_flagged() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            events = (Approved, Refused)
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    message = problem(err, None, "waiting.to(next, on=Refused)", "remove it from `events`")
    assert "`events` lists Refused, but no row takes it" in message


def test_a_row_taking_an_unlisted_event_is_flagged() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            events = (Approved,)
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved), waiting.to(end, on=Refused, guard=None))
            action_id = staticmethod(key_of)

    message = problem(err, "waiting", "add Refused to `events`")
    assert "takes Refused, which `events` does not list" in message


def test_events_must_be_a_tuple_of_attrs_classes() -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            events = Approved  # type: ignore[assignment]
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert "not a tuple of event types" in problem(err, None, "events = (Approved, ...)")
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):  # type: ignore[no-redef]
            name = "bad"
            events = (Approved, "Refused")  # type: ignore[assignment]
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert "`events` lists 'Refused', not an event type" in problem(err, None, "attrs classes")


@pytest.mark.parametrize("value", ["Queue", "ignore", None])
def test_unaccepted_is_one_of_three(value: Any) -> None:
    with pytest.raises(DefinitionError) as err:

        class Bad(Kind[Data, None]):
            name = "bad"
            unaccepted = value
            waiting = State.wait(initial=True)
            end = State.done()
            transitions = (waiting.to(end, on=Approved),)
            action_id = staticmethod(key_of)

    assert f"unaccepted is {value!r}" in problem(err, None, "'queue'", "'reject'", "'drop'")


@pytest.mark.parametrize("attr", ["events", "unaccepted"])
def test_a_state_may_not_take_the_kinds_new_names(attr: str) -> None:
    end = State.done()
    body = {
        "name": "bad",
        attr: State(initial=True),
        "end": end,
        "action_id": staticmethod(key_of),
    }
    body["transitions"] = (body[attr].to(end),)
    with pytest.raises(DefinitionError) as err, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        types.new_class("Bad", (Kind[Data, None],), exec_body=lambda ns: ns.update(body))
    assert "taken by the kind itself" in problem(err, attr, f"`{attr}_state`")

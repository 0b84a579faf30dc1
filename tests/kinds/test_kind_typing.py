"""A type checker sees the kind's data and services types in every guard and effect."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from mypy import api as mypy_api

# Each `# expect:` comment is part of the error mypy must report on that line, and the only ones.
SNIPPET = textwrap.dedent(
    """
    import attrs
    import fsm
    from fsm import Kind, State, StepContext


    @attrs.frozen
    class Order:
        order_id: str


    @attrs.frozen
    class Invoice:
        number: int


    class Shop:
        pass


    def reserve(ctx: StepContext[Shop], order: Order) -> Order:
        return order


    async def charge(ctx: StepContext[Shop], order: Order) -> Order:
        return order


    def paid(ctx: StepContext[Shop], order: Order) -> bool:
        return True


    def bill(ctx: StepContext[Shop], invoice: Invoice) -> Invoice:
        return invoice


    def wrong_services(ctx: StepContext[int], order: Order) -> Order:
        return order


    class Good(Kind[Order, Shop]):
        name = "good"
        a = State(initial=True)
        b = State()
        end = State.done()
        transitions = (
            a.to(b, effect=reserve),
            b.to(end, guard=paid, effect=charge),
            b.to(end),
        )

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    class WrongData(Kind[Order, Shop]):
        name = "wrong_data"
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end, effect=bill),)  # expect: [[StepContext[Shop], Invoice]

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    class WrongServices(Kind[Order, Shop]):
        name = "wrong_services"
        a = State(initial=True)
        end = State.done()
        transitions = [a.to(end, effect=wrong_services)]  # expect: [[StepContext[int], Order]

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    class WrongId(Kind[Order, Shop]):
        name = "wrong_id"
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end),)

        @staticmethod
        def action_id(invoice: Invoice) -> str:  # expect: Argument 1 of "action_id" is incompatible
            return str(invoice.number)


    def refused(ctx: StepContext[Shop], order: Order, error: BaseException) -> fsm.Outcome:
        return fsm.Failed(error)


    def refused_invoice(ctx: StepContext[Shop], bill: Invoice, error: BaseException) -> fsm.Outcome:
        return fsm.Failed(error)


    class Declared(Kind[Order, Shop]):
        name = "declared"
        a = State(initial=True)
        b = State()
        end = State.done()
        transitions = (
            a.to(b),
            b.to(end),
            a.rejected(handler=refused, to=(b, end)),
            b.rejected(handler=refused, to=end),
            a.cancelled(to=end),  # a cancel row types with the rest of the table
        )

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    class WrongHandler(Kind[Order, Shop]):
        name = "wrong_handler"
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end), a.rejected(handler=refused_invoice))  # expect: "handler"

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    @attrs.frozen
    class Approved:
        by: str


    @attrs.frozen
    class Declined:
        why: str


    def approve(ctx: StepContext[Shop], order: Order, event: Approved) -> Order:
        return order


    def trusted(ctx: StepContext[Shop], order: Order, event: Approved) -> bool:
        return event.by != "mallory"


    class Events(Kind[Order, Shop]):
        name = "events"
        waiting = State.wait(initial=True, timeout=60.0, on_timeout=State.failed())
        end = State.done()
        transitions = (
            waiting.to(end, on=Approved, guard=trusted, effect=approve),
            waiting.to(end, on=Declined, effect=approve),  # expect: "effect" to "to" of "State"
            waiting.to(end, on=Approved, effect=reserve),  # expect: "effect" to "to" of "State"
        )

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id


    action = Good.create(Order("1"))
    reveal_type(action.data)  # expect: Revealed type is "kinds_snippet.Order"
    Good.create(Invoice(1))  # expect: to "create" of "Kind" has incompatible type "Invoice"
    """
)


@pytest.mark.slow
def test_mypy_flags_callbacks_that_do_not_match_the_kind(tmp_path: Path) -> None:
    snippet = tmp_path / "kinds_snippet.py"
    snippet.write_text(SNIPPET)
    stdout, stderr, status = mypy_api.run(
        [
            "--strict",
            "--follow-imports=silent",
            "--no-incremental",
            "--cache-dir=/dev/null",
            "--hide-error-context",
            "--no-error-summary",
            str(snippet),
        ]
    )
    assert status == 1, stderr
    expected = {
        n: line.split("# expect: ", 1)[1]
        for n, line in enumerate(SNIPPET.splitlines(), start=1)
        if "# expect: " in line
    }
    found: dict[int, str] = {}
    for line in stdout.splitlines():
        _, number, message = line.split(":", 2)
        if " note: " not in message or "Revealed type" in message:
            found.setdefault(int(number), message)
    assert sorted(found) == sorted(expected), stdout
    for n, fragment in expected.items():
        assert fragment in found[n], (n, found[n])

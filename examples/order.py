"""A shop order as a declarative fsm kind, driven against a fake shop on a SQLite file.

The order reserves stock, charges a card, then waits for the warehouse to confirm the
shipment. A charge can fail transiently (retried with backoff, up to a budget) or be
rejected by the card network (`fsm.Rejected`): both end in the ``releasing`` state, which
refunds whatever was charged and gives the stock back before the order fails. An operator's
cancel (``fsm actions cancel``) takes the same way out of ``charging`` and
``awaiting_shipment``, and ends an order still in ``start`` at once.

Run it: ``python examples/order.py [DB_PATH]`` (simulated time: the waits take none), or
with ``--start-only`` to leave the orders to ``fsm worker`` (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

import attrs

import fsm
from fsm import Kind, RetryPolicy, State, StepContext

# -- the outside world ---------------------------------------------------------------------------


class FakeShop:
    """Stock, a card network and a warehouse, with a ledger of every effect they applied.

    Every write is keyed by the step's idempotency key, so a step re-run after a crash does
    not reserve or charge twice. Cards behave by name: ``flaky-*`` time out twice, then pay;
    ``broken-*`` always time out; ``declined-*`` are refused; anything else pays. The
    warehouse confirms a shipment the second time it is asked.
    """

    def __init__(self, stock: dict[str, int]) -> None:
        self.stock = dict(stock)
        self.ledger: list[tuple[str, str, int]] = []
        self.reservations: dict[str, tuple[str, int]] = {}
        self.charges: dict[str, int] = {}
        self._timeouts: dict[str, int] = {}
        self._asked: dict[str, int] = {}

    def reserve(self, key: str, sku: str, qty: int) -> str:
        if key in self.reservations:
            return key
        if self.stock.get(sku, 0) < qty:
            raise fsm.Rejected(f"only {self.stock.get(sku, 0)} of {sku} left", code="stock")
        self.stock[sku] -= qty
        self.reservations[key] = (sku, qty)
        self.ledger.append(("reserve", sku, qty))
        return key

    def release(self, reservation: str) -> None:
        if reservation in self.reservations:
            sku, qty = self.reservations.pop(reservation)
            self.stock[sku] += qty
            self.ledger.append(("release", sku, qty))

    async def charge(self, key: str, card: str, amount: int) -> str:
        await asyncio.sleep(0)  # a network call
        if key in self.charges:
            return key
        if card.startswith("declined"):
            raise fsm.Rejected(f"card {card} declined", code="declined")
        if card.startswith("broken") or (
            card.startswith("flaky") and self._timeouts.get(card, 0) < 2
        ):
            self._timeouts[card] = self._timeouts.get(card, 0) + 1
            raise TimeoutError(f"card network timed out for {card}")
        self.charges[key] = amount
        self.ledger.append(("charge", card, amount))
        return key

    def refund(self, charge: str) -> None:
        amount = self.charges.pop(charge, None)
        if amount is not None:
            self.ledger.append(("refund", charge, amount))

    def shipped(self, order_id: str) -> bool:
        self._asked[order_id] = self._asked.get(order_id, 0) + 1
        return self._asked[order_id] >= 2


# -- the kind ------------------------------------------------------------------------------------


@attrs.frozen
class Order:
    """The checkpoint of an order (v2: amounts in cents; v1 stored ``price`` in euros)."""

    order_id: str
    sku: str
    qty: int
    card: str
    amount: int
    reservation: str | None = None
    charge: str | None = None


def reserve_stock(ctx: StepContext[FakeShop], order: Order) -> Order:
    # One open order per card: a second order on the same card gets fsm.ResourceConflict
    # (a transient error, so it retries) until this one is done; done releases it.
    ctx.acquire(f"card:{order.card}")
    reservation = ctx.services.reserve(ctx.idempotency_key, order.sku, order.qty)
    return attrs.evolve(order, reservation=reservation)


async def charge_card(ctx: StepContext[FakeShop], order: Order) -> Order:
    charge = await ctx.services.charge(ctx.idempotency_key, order.card, order.amount)
    return attrs.evolve(order, charge=charge)


def shipment_confirmed(ctx: StepContext[FakeShop], order: Order) -> bool:
    return ctx.services.shipped(order.order_id)


def refund_and_release(ctx: StepContext[FakeShop], order: Order) -> Order:
    if order.charge is not None:
        ctx.services.refund(order.charge)
    if order.reservation is not None:
        ctx.services.release(order.reservation)
    return attrs.evolve(order, charge=None, reservation=None)


def price_to_cents(data: dict[str, object]) -> dict[str, object]:
    """v1 -> v2: ``price`` (float euros) became ``amount`` (int cents)."""
    out = dict(data)
    price = out.pop("price")
    assert isinstance(price, int | float)
    out["amount"] = round(price * 100)
    return out


class OrderKind(Kind[Order, FakeShop]):
    name = "order"
    version = 2
    upcasters = {1: price_to_cents}  # noqa: RUF012 - read once, at class creation
    retry = RetryPolicy(base=1.0, cap=60.0, jitter=True)

    start = State(initial=True, doc="reserve the stock")
    charging = State(retry=RetryPolicy(base=2.0, max_attempts=4), doc="charge the card")
    awaiting_shipment = State.wait(after=3600.0, doc="poll the warehouse hourly")
    releasing = State(doc="refund and give the stock back")
    shipped = State.done()
    cancelled = State.failed()

    transitions = (
        start.to(charging, effect=reserve_stock),
        charging.to(awaiting_shipment, effect=charge_card),
        awaiting_shipment.to(shipped, guard=shipment_confirmed),
        releasing.to(cancelled, effect=refund_and_release),
        # A refused reservation changed nothing: just fail. A refused (or hopeless) charge
        # leaves a reservation behind: compensate. Retries spent in `charging` take the same
        # route.
        start.rejected(to=cancelled),
        charging.rejected(to=releasing),
        # An operator's cancel: before anything is reserved there is nothing to undo; after,
        # the same compensation as a refused charge.
        start.cancelled(to=cancelled),
        charging.cancelled(to=releasing),
        awaiting_shipment.cancelled(to=releasing),
    )

    @staticmethod
    def action_id(order: Order) -> str:
        return f"order-{order.order_id}"


# -- the demo ------------------------------------------------------------------------------------


class SimulatedTime:
    """The executor's clock and sleep: sleeping just moves the clock forward."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds


ORDERS = (
    Order("1001", "mug", 2, "visa-1", 2400),
    Order("1002", "mug", 1, "flaky-2", 1200),
    Order("1003", "tee", 1, "declined-3", 1900),
    Order("1004", "tee", 1, "broken-4", 1900),
    Order("1005", "cap", 1, "visa-5", 900),
)


async def run(db_path: Path) -> FakeShop:
    shop = FakeShop({"mug": 5, "tee": 5, "cap": 0})
    time = SimulatedTime()
    store = fsm.Store.sqlite(db_path)
    executor = fsm.Executor(store, shop, kinds=[OrderKind], clock=time.clock, sleep=time.sleep)
    for order in ORDERS:
        await executor.start(OrderKind.create(order))
    for order in ORDERS:
        action_id = OrderKind.action_id(order)
        result = await executor.drive(action_id, fsm.DriveMode.UNTIL_DONE)
        error = f"  ({result.error})" if result.error else ""
        print(f"{action_id}: {result.status.value} after {result.steps} step(s){error}")
    store.close()
    return shop


def worker_services(store: fsm.Store) -> FakeShop:
    """The services of ``fsm worker --module examples/order.py --services
    examples/order.py:worker_services``: one shop for every step the worker drives."""
    return FakeShop({"mug": 5, "tee": 5, "cap": 0})


async def start_orders(db_path: Path) -> None:
    """Start the orders and drive none of them: ``--start-only`` leaves them to a worker."""
    store = fsm.Store.sqlite(db_path)
    executor: fsm.Executor[FakeShop] = fsm.Executor(store, kinds=[OrderKind])
    for order in ORDERS:
        await executor.start(OrderKind.create(order))
    store.close()


def main() -> None:
    args = [a for a in sys.argv[1:] if a != "--start-only"]
    path = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="fsm-order-")) / "orders.db"
    if "--start-only" in sys.argv[1:]:
        asyncio.run(start_orders(path))
        print(f"started {len(ORDERS)} orders in {path}; run `fsm worker` to drive them")
        return
    shop = asyncio.run(run(path))
    charged = sum(n for op, _, n in shop.ledger if op == "charge")
    refunded = sum(n for op, _, n in shop.ledger if op == "refund")
    print(f"ledger: {len(shop.ledger)} entries, charged {charged}, refunded {refunded}")
    print(f"stock left: {shop.stock}; reservations of shipped orders: {len(shop.reservations)}")
    print(f"database: {path}")


if __name__ == "__main__":
    main()

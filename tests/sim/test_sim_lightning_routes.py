"""The simulated Lightning network and the server's node: BOLT12 offers (an invoice per
fetch), payments with no route, payments in parts, and a payee that holds a payment.

A payment is atomic here as in Lightning: pending until the payee releases the preimage for
every part, or failed when every part is failed back; the server's status of a send never
says "partly paid", and its ledger pays the payee out once, in full, or not at all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from wallet_rig import Rig

import fsm
from fsm_bark.lightning_send_ops import pay_lightning_invoice
from fsm_bark.model import Offer, bolt12_signature, payment_hash_of
from fsm_bark.services.ark_server import INVALID_ARGUMENT, NOT_FOUND
from fsm_bark.services.lightning_node import PaymentState
from fsm_bark.sim import Faults, World, make_world
from fsm_bark.sim.db import load
from fsm_bark.sim.lightning_payments import NO_ROUTE, Route, split
from fsm_bark.sim.server_sends import HTLC_EXPIRED


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = make_world(tmp_path / "world", seed=3)
    yield w
    w.close()


def fetch(world: World, offer: Offer, amount: int | None = None):  # type: ignore[no-untyped-def]
    return asyncio.run(world.rpc.fetch_bolt12_invoice(offer, amount))


def states(world: World, payment_hash: str) -> list[tuple[str, int]]:
    return [(p.state, p.attempts) for p in world.lightning.parts(payment_hash)]


def polls(world: World, payment_hash: str, n: int) -> list[PaymentState]:
    return [world.lightning.route(payment_hash).state for _ in range(n)]


# -- offers --------------------------------------------------------------------------------


def test_every_fetch_of_an_offer_is_a_new_invoice_signed_for_it(world: World) -> None:
    offer = world.lightning.create_offer(7_000, "coffee every day", "cafe")
    assert world.lightning.create_offer(7_000, "coffee every day", "cafe") == offer
    first, second = fetch(world, offer), fetch(world, offer)
    assert first.payment_hash != second.payment_hash
    for invoice in (first, second):
        assert (invoice.amount, invoice.offer_id, invoice.description) == (
            7_000,
            offer.offer_id,
            "coffee every day",
        )
        assert invoice.signature == bolt12_signature(
            offer.node_id, offer.offer_id, invoice.payment_hash, 7_000
        )
        assert invoice.encoded.startswith("lnisim1")
    assert offer.encoded.startswith("lnosim1")


def test_an_offer_without_an_amount_takes_the_payers(world: World) -> None:
    offer = world.lightning.create_offer(0, "tips", "jar")
    assert fetch(world, offer, 1_234).amount == 1_234
    with pytest.raises(fsm.Rejected) as refused:
        fetch(world, offer)
    assert refused.value.code == INVALID_ARGUMENT


def test_the_node_refuses_a_wrong_amount_and_an_unknown_offer(world: World) -> None:
    offer = world.lightning.create_offer(5_000, "book", "shop")
    with pytest.raises(fsm.Rejected, match="asks 5000") as wrong:
        fetch(world, offer, 4_000)
    assert wrong.value.code == INVALID_ARGUMENT
    stranger = Offer("f" * 64, offer.node_id, 5_000, offer.network)
    with pytest.raises(fsm.Rejected) as unknown:
        fetch(world, stranger)
    assert unknown.value.code == NOT_FOUND


def test_an_expired_offer_gets_no_invoice(world: World) -> None:
    offer = world.lightning.create_offer(5_000, "sale", "sale", expires_at=world.clock.now() + 60)
    assert fetch(world, offer).amount == 5_000
    world.advance_time(61)
    with pytest.raises(fsm.Rejected, match="expired") as late:
        fetch(world, offer)
    assert late.value.code == INVALID_ARGUMENT


# -- routes ----------------------------------------------------------------------------------


def invoice(world: World, route: Route, key: str = "inv") -> str:
    inv = world.lightning.create_invoice(9_000, "", key, route=route)
    return inv.payment_hash


def test_no_route_fails_when_the_payment_starts_with_the_reason(world: World) -> None:
    h = invoice(world, Route(no_route=True))
    started = world.lightning.start_payment(h, 9_000)
    assert (started.state, started.error) == (PaymentState.FAILED, NO_ROUTE)
    assert world.lightning.parts(h) == []  # nothing was sent
    assert world.lightning.route(h).error == NO_ROUTE


def test_a_part_lost_on_its_route_is_retried_and_the_payment_settles_whole(world: World) -> None:
    h = invoice(world, Route(parts=3, lost_parts=1))
    assert world.lightning.start_payment(h, 9_000).state is PaymentState.PENDING
    assert [p.amount for p in world.lightning.parts(h)] == split(9_000, 3) == [3_000] * 3
    assert world.lightning.route(h).state is PaymentState.PENDING  # the lost part retries
    assert states(world, h) == [("retrying", 2), ("arrived", 1), ("arrived", 1)]
    paid = world.lightning.route(h)
    assert paid.state is PaymentState.SUCCEEDED and paid.preimage is not None
    assert payment_hash_of(paid.preimage) == h
    assert states(world, h) == [("settled", 2), ("settled", 1), ("settled", 1)]


def test_the_payee_fails_back_the_parts_that_arrived(world: World) -> None:
    h = invoice(world, Route(fail=True, pending_polls=2, parts=3, lost_parts=1))
    world.lightning.start_payment(h, 9_000)
    assert polls(world, h, 2) == [PaymentState.PENDING, PaymentState.PENDING]
    failed = world.lightning.route(h)
    assert failed.state is PaymentState.FAILED and failed.preimage is None
    assert failed.error == "the payee failed the payment back (2 of 3 parts arrived)"
    assert {s for s, _ in states(world, h)} == {"failed"}  # no part settled alone


@pytest.mark.parametrize("settle", [True, False])
def test_a_held_payment_waits_for_the_payee(world: World, settle: bool) -> None:
    h = invoice(world, Route(parts=2, hold=True))
    world.lightning.start_payment(h, 9_000)
    assert set(polls(world, h, 50)) == {PaymentState.PENDING}
    assert states(world, h) == [("arrived", 1), ("arrived", 1)]
    world.lightning.resolve(h, settle=settle)
    done = world.lightning.route(h)
    assert done.state is (PaymentState.SUCCEEDED if settle else PaymentState.FAILED)
    assert world.lightning.route(h) == done  # decided once


def test_random_routes_are_drawn_from_the_seed(tmp_path: Path) -> None:
    faults = Faults(ln_no_route=0.3, ln_max_parts=4, ln_fail=0.2, ln_max_pending_polls=3)

    def routes(folder: str) -> list[Route]:
        w = make_world(tmp_path / folder, seed=11, faults=faults)
        try:
            for i in range(30):
                w.lightning.create_invoice(1_000, "", f"r{i}")
            return [load(r[0], Route) for r in w.db.all("SELECT route FROM ln_invoice")]
        finally:
            w.close()

    a, b = routes("a"), routes("b")
    assert a == b
    assert any(r.no_route for r in a) and any(r.parts > 1 for r in a)
    assert any(r.lost_parts for r in a) and all(r.parts <= 4 for r in a)


# -- the server's node -------------------------------------------------------------------------


def test_the_server_abandons_a_payment_whose_htlc_expired(world: World) -> None:
    """Past the HTLC's expiry the server fails the send and fails the parts back: a payee
    that releases the preimage afterwards is too late, and nothing is paid out."""
    rig = Rig(world.folder.parent, world=world)
    try:
        rig.world.fund_vtxos(rig.wallet, [50_000])
        inv = world.lightning.create_invoice(9_000, "", "held", route=Route(parts=2, hold=True))
        r = asyncio.run(pay_lightning_invoice(rig.executor, inv))
        assert r.state == "payment_initiated"
        world.mine(world.server.info().htlc_send_expiry_delta + 1)
        status = asyncio.run(world.rpc.check_lightning_payment(inv.payment_hash))
        assert (status.state, status.error) == (PaymentState.FAILED, HTLC_EXPIRED)
        world.lightning.resolve(inv.payment_hash, settle=True)
        assert world.lightning.route(inv.payment_hash).state is PaymentState.FAILED
        assert {s for s, _ in states(world, inv.payment_hash)} == {"failed"}
        assert not [e for e in world.ledger.entries() if e.rpc == "settle_lightning_payment"]
    finally:
        rig.close()

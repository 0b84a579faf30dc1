"""The lightning send kind against the Lightning network's harder cases: BOLT12 offers,
payments with no route, payments in parts, and payments that stay pending a long time.

From the wallet's side a payment is atomic: either the preimage comes back and the whole
payment is settled, or it fails and the wallet revokes its HTLC and gets its funds back,
with the reason on the movement. Each scenario runs through the kind and ends with the
world's invariants checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import after_call
from wallet_rig import Rig, kill_then_resume

import fsm
from fsm_bark.lightning_offer import InvalidOfferInvoice
from fsm_bark.lightning_send import NEAR_EXPIRY, lightning_send_id
from fsm_bark.lightning_send_ops import (
    lightning_send_finished,
    pay_lightning_invoice,
    pay_lightning_offer,
)
from fsm_bark.model import Invoice, MovementStatus, Offer, VtxoState
from fsm_bark.services import WalletConfig
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.sim import Fault, Faults
from fsm_bark.sim.lightning_payments import NO_ROUTE
from fsm_bark.sim.server_sends import HTLC_EXPIRED

AMOUNT = 10_000
FEE = 20  # the sim server: 10 base + 1000 ppm
FUNDS = 50_000
HTLC_DELTA = 60  # the sim server's htlc_send_expiry_delta
THRESHOLD = WalletConfig().vtxo_refresh_expiry_threshold
UNTIL_DONE = fsm.DriveMode.UNTIL_DONE


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    rig.world.fund_vtxos(rig.wallet, [FUNDS])
    yield rig
    rig.close()


def spendable(w: Rig) -> int:
    return sum(v.amount for v, _ in w.wallet.vtxos(VtxoState.SPENDABLE))


def invoice(w: Rig, key: str = "inv", **outcome: object) -> Invoice:
    inv = w.world.lightning.create_invoice(AMOUNT, "coffee", key)
    w.world.lightning.set_outcome(inv.payment_hash, **{"fail": False, **outcome})  # type: ignore[arg-type]
    return inv


def pay(w: Rig, inv: Invoice, *, wait: bool = True) -> fsm.DriveResult:
    return asyncio.run(pay_lightning_invoice(w.executor, inv, wait=wait))


def pay_offer(w: Rig, offer: Offer, amount: int | None = None) -> tuple[Invoice, fsm.DriveResult]:
    return asyncio.run(pay_lightning_offer(w.executor, offer, amount, wait=True))


def drive(w: Rig, inv: Invoice, mode: fsm.DriveMode = UNTIL_DONE) -> fsm.DriveResult:
    return asyncio.run(w.executor.notify(lightning_send_id(inv.payment_hash), mode))


def take_due(w: Rig) -> list[fsm.DriveResult]:
    """What a worker does: drive the due actions (an event sent makes its action due)."""
    return list(asyncio.run(w.executor.run_due(UNTIL_DONE, keep_results=True)).results)


def movement(w: Rig, inv: Invoice):  # type: ignore[no-untyped-def]
    m = w.wallet.movement_of(lightning_send_id(inv.payment_hash))
    assert m is not None
    return m


def states(w: Rig, inv: Invoice) -> list[str | None]:
    return [t.to_state for t in w.store.transitions(lightning_send_id(inv.payment_hash))]


def assert_revoked(w: Rig, inv: Invoice, reason: str) -> None:
    """Failed, revoked, the funds back: the movement failed with the reason, nothing paid."""
    m = movement(w, inv)
    assert m.status is MovementStatus.FAILED and m.effective_balance == 0
    assert m.metadata["failure"] == reason
    assert spendable(w) == FUNDS
    assert w.wallet.paid_invoice(inv.payment_hash) is None
    assert w.store.all_resources() == {}
    assert w.problems() == []


def assert_paid(w: Rig, inv: Invoice) -> None:
    """Settled whole: the fact, the movement, the amount and fee gone once."""
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    m = movement(w, inv)
    assert m.status is MovementStatus.SUCCESSFUL and "failure" not in m.metadata
    assert spendable(w) == FUNDS - AMOUNT - FEE
    settles = [e for e in w.world.ledger.entries() if e.rpc == "settle_lightning_payment"]
    assert [e.effect_id for e in settles] == [f"ln_send_settle:{inv.payment_hash}"]
    assert w.store.all_resources() == {}
    assert w.problems() == []


# -- offers ------------------------------------------------------------------------------------


def test_paying_an_offer_twice_is_two_payments(w: Rig) -> None:
    offer = w.world.lightning.create_offer(AMOUNT, "coffee every day", "cafe")
    first, r1 = pay_offer(w, offer)
    second, r2 = pay_offer(w, offer)
    assert (r1.state, r2.state) == ("paid", "paid")
    assert first.payment_hash != second.payment_hash  # each fetch a new invoice
    for inv in (first, second):
        m = movement(w, inv)
        assert m.status is MovementStatus.SUCCESSFUL
        assert (m.metadata["sent_to"], m.metadata["invoice"]) == (offer.encoded, inv.encoded)
        assert w.wallet.paid_invoice(inv.payment_hash) is not None
    assert spendable(w) == FUNDS - 2 * (AMOUNT + FEE)
    assert w.problems() == []


def test_an_offer_without_an_amount_is_paid_the_payers(w: Rig) -> None:
    offer = w.world.lightning.create_offer(0, "tips", "jar")
    with pytest.raises(ValueError, match="positive amount"):
        pay_offer(w, offer)
    inv, result = pay_offer(w, offer, 2_500)
    assert (result.state, inv.amount, movement(w, inv).intended_balance) == ("paid", 2_500, -2_500)
    assert w.problems() == []


def test_a_rewritten_offer_invoice_is_caught_before_anything_exists(w: Rig) -> None:
    """The lying proxy rewrites the fetched invoice's hash: its signature no longer matches
    the offer's node, so nothing is started; fetching again pays a true invoice."""
    offer = w.world.lightning.create_offer(AMOUNT, "book", "shop")
    w.world.script_fault("fetch_bolt12_invoice", Fault.REWRITE)
    with pytest.raises(InvalidOfferInvoice, match="not signed"):
        pay_offer(w, offer)
    assert w.store.rows() == [] and w.wallet.movements() == []
    inv, result = pay_offer(w, offer)
    assert result.state == "paid"
    assert_paid(w, inv)


def test_a_lost_fetch_starts_nothing_and_the_next_fetch_pays(w: Rig) -> None:
    offer = w.world.lightning.create_offer(AMOUNT, "book", "shop")
    w.world.script_fault("fetch_bolt12_invoice", Fault.LOSE_RESPONSE)
    with pytest.raises(ServerUnavailable):
        pay_offer(w, offer)
    assert w.store.rows() == [] and w.wallet.movements() == []
    inv, result = pay_offer(w, offer)
    assert result.state == "paid"
    assert_paid(w, inv)


def test_a_failed_offer_payment_is_revoked_and_the_offer_paid_again(w: Rig) -> None:
    offer = w.world.lightning.create_offer(AMOUNT, "book", "shop")
    w.world.lightning.set_offer_outcome(offer.offer_id, fail=True, parts=2)
    failed, result = pay_offer(w, offer)
    assert result.state == "revoked"
    assert_revoked(w, failed, "the payee failed the payment back (2 of 2 parts arrived)")
    w.world.lightning.set_offer_outcome(offer.offer_id, fail=False)
    paid, again = pay_offer(w, offer)
    assert again.state == "paid" and paid.payment_hash != failed.payment_hash
    assert w.wallet.paid_invoice(paid.payment_hash) is not None
    assert w.problems() == []


# -- no route ----------------------------------------------------------------------------------


def test_an_unroutable_payment_fails_fast_and_is_revoked(w: Rig) -> None:
    inv = invoice(w, no_route=True, pending_polls=1_000)
    result = pay(w, inv)
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, "revoked")
    assert states(w, inv) == ["htlc_received", "payment_initiated", "revocable", None]
    assert w.world.lightning.parts(inv.payment_hash) == []  # the node sent nothing
    assert_revoked(w, inv, NO_ROUTE)


@pytest.mark.parametrize(
    ("rpc", "fault"),
    [
        ("initiate_lightning_payment", Fault.LOSE_RESPONSE),
        ("check_lightning_payment", Fault.LOSE_RESPONSE),
        ("request_lightning_pay_htlc_revocation", Fault.LOSE_RESPONSE),
        ("check_lightning_payment", Fault.RESTART),
    ],
)
def test_an_unroutable_payment_under_faults_is_revoked_once(w: Rig, rpc: str, fault: Fault) -> None:
    inv = invoice(w, no_route=True)
    w.world.script_fault(rpc, fault, times=2)
    assert pay(w, inv).state == "revoked"
    assert w.applied_by("request_lightning_pay_htlc_revocation") == 1
    assert_revoked(w, inv, NO_ROUTE)


# -- parts ---------------------------------------------------------------------------------


def test_a_payment_in_parts_with_a_lost_part_is_settled_whole(w: Rig) -> None:
    inv = invoice(w, parts=3, lost_parts=1, pending_polls=2)
    assert pay(w, inv).state == "paid"
    parts = w.world.lightning.parts(inv.payment_hash)
    assert [(p.state, p.attempts) for p in parts] == [
        ("settled", 2),
        ("settled", 1),
        ("settled", 1),
    ]
    assert sum(p.amount for p in parts) == AMOUNT
    assert_paid(w, inv)


def test_parts_failed_back_by_the_payee_are_revoked_whole(w: Rig) -> None:
    inv = invoice(w, fail=True, parts=3, lost_parts=1, pending_polls=3)
    assert pay(w, inv).state == "revoked"
    assert {p.state for p in w.world.lightning.parts(inv.payment_hash)} == {"failed"}
    assert_revoked(w, inv, "the payee failed the payment back (2 of 3 parts arrived)")


# -- long pending --------------------------------------------------------------------------


def hold(w: Rig) -> Invoice:
    """A payment in three parts the payee holds: the send polls, parked in
    payment_initiated, through lost answers and a server restart; time passes but no
    block."""
    inv = invoice(w, parts=3, lost_parts=1, hold=True)
    assert pay(w, inv, wait=False).state == "payment_initiated"
    w.world.script_fault("check_lightning_payment", Fault.LOSE_RESPONSE, times=3)
    w.world.script_fault("check_lightning_payment", Fault.RESTART)
    for _ in range(20):
        w.world.advance_time(60)
        r = drive(w, inv, fsm.DriveMode.UNTIL_PARK_OR_DONE)
        assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "payment_initiated")
    assert w.wallet.paid_invoice(inv.payment_hash) is None
    assert movement(w, inv).status is MovementStatus.PENDING
    assert w.problems() == []
    return inv


def test_long_pending_then_success_settles_on_the_mailbox_notice(w: Rig) -> None:
    """Released at last; the first answer the send reads is forged by the proxy (a preimage
    that does not hash to the payment): ignored, the notice waits, the next poll settles."""
    inv = hold(w)
    w.world.lightning.resolve(inv.payment_hash, settle=True)
    w.world.script_fault("check_lightning_payment", Fault.REWRITE)
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    [done] = take_due(w)
    assert (done.status, done.state) == (fsm.DriveStatus.DONE, "paid")
    assert w.world.gate.log()[-1] == ("check_lightning_payment", Fault.REWRITE)
    polled = [t.to_state for t in w.store.transitions(lightning_send_id(inv.payment_hash))]
    assert polled[-2:] == ["payment_initiated", None]  # the lie cost one poll
    assert_paid(w, inv)


def test_long_pending_then_failure_is_revoked(w: Rig) -> None:
    inv = hold(w)
    w.world.lightning.resolve(inv.payment_hash, settle=False)
    assert drive(w, inv).state == "revoked"
    assert_revoked(w, inv, "the payee failed the payment back (3 of 3 parts arrived)")


def near_expiry_stuck(w: Rig) -> Invoice:
    """Held past near expiry: the send wants to revoke, the server refuses (in flight), the
    send parks in revocation_stuck with no wake-up."""
    inv = hold(w)
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    r = drive(w, inv)
    assert (r.status, r.state) == (fsm.DriveStatus.PARKED, "revocation_stuck")
    assert w.wallet.vtxo_state(w.data(lightning_send_id(inv.payment_hash)).htlc_ids[0]) is (
        VtxoState.SPENDABLE
    )
    assert w.problems() == []
    return inv


def test_success_after_near_expiry_is_settled_not_revoked(w: Rig) -> None:
    """The payee releases the preimage while the send is stuck revoking: the server has
    paid, so the send settles (bark would go on asking for a revocation the server must
    refuse)."""
    inv = near_expiry_stuck(w)
    w.world.lightning.resolve(inv.payment_hash, settle=True)
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    [done] = take_due(w)
    assert (done.status, done.state) == (fsm.DriveStatus.DONE, "paid")
    assert states(w, inv)[-1] is None and "revoked" not in states(w, inv)
    assert_paid(w, inv)


def test_failure_after_near_expiry_is_revoked_with_its_reason(w: Rig) -> None:
    inv = near_expiry_stuck(w)
    assert w.data(lightning_send_id(inv.payment_hash)).refusal == NEAR_EXPIRY
    w.world.lightning.resolve(inv.payment_hash, settle=False)
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    [done] = take_due(w)
    assert (done.status, done.state) == (fsm.DriveStatus.DONE, "revoked")
    assert_revoked(w, inv, "the payee failed the payment back (3 of 3 parts arrived)")


def test_pending_past_the_htlc_expiry_is_revoked_and_never_paid(w: Rig) -> None:
    inv = near_expiry_stuck(w)
    w.world.mine(THRESHOLD)
    assert drive(w, inv).state == "revoked"
    w.world.lightning.resolve(inv.payment_hash, settle=True)  # too late: failed back
    status = asyncio.run(w.services.server.check_lightning_payment(inv.payment_hash))
    assert status.error == HTLC_EXPIRED
    assert_revoked(w, inv, HTLC_EXPIRED)


def test_a_faked_initiation_never_reaches_the_node_and_is_revoked_near_expiry(w: Rig) -> None:
    """The proxy answers the initiation without forwarding it: the server says pending for
    ever (cosigned, never paid); near expiry the send revokes, with that reason."""
    inv = invoice(w, parts=3)
    w.world.script_fault("initiate_lightning_payment", Fault.FAKE_SUCCESS)
    assert pay(w, inv, wait=False).state == "payment_initiated"
    assert w.world.lightning.parts(inv.payment_hash) == []  # the node never heard of it
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    assert drive(w, inv).state == "revoked"
    assert_revoked(w, inv, NEAR_EXPIRY)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["lightning_send_parts", "lightning_send_parts_fail"])
def test_sigkill_while_parts_are_in_flight_resumes_in_a_new_process(
    tmp_path: Path, kind: str
) -> None:
    kill_then_resume(tmp_path, "start", kind, kill=after_call("check_lightning_payment"))
    with Rig(tmp_path) as w:
        assert w.store.rows() == [] and w.store.all_resources() == {}
        [m] = w.wallet.movements()
        paid = kind == "lightning_send_parts"
        assert m.status is (MovementStatus.SUCCESSFUL if paid else MovementStatus.FAILED)
        assert (w.wallet.paid_invoice(m.metadata["payment_hash"]) is not None) is paid
        parts = w.world.lightning.parts(m.metadata["payment_hash"])
        assert len(parts) == 3 and {p.state for p in parts} == {"settled" if paid else "failed"}
        assert w.problems() == []


@pytest.mark.parametrize("seed", [4, 17])
def test_random_routes_and_faults_end_every_send_paid_or_revoked(tmp_path: Path, seed: int) -> None:
    """Invoices and offers paid over random routes (no route, parts, failures, long pending)
    through lost answers, drops, restarts and rewritten answers: every send ends, paid
    exactly when the payee's node settled it, revoked otherwise, and the invariants hold."""
    faults = Faults(
        lose_response=0.1,
        drop_request=0.05,
        restart=0.03,
        rewrite=0.05,
        ln_fail=0.3,
        ln_max_pending_polls=6,
        ln_no_route=0.2,
        ln_max_parts=4,
    )
    with Rig(tmp_path, seed=seed, faults=faults) as rig:
        rig.world.fund_vtxos(rig.wallet, [15_000] * 8)
        offer = rig.world.lightning.create_offer(3_000, "daily", "daily")
        hashes: list[str] = []

        async def pay_one(n: int) -> None:
            for _ in range(20):  # a fetch or start refused or lost: made again
                try:
                    if n % 2:
                        inv, _ = await pay_lightning_offer(rig.executor, offer)
                    else:
                        inv = rig.world.lightning.create_invoice(4_000, "", f"random.{n}")
                        await pay_lightning_invoice(rig.executor, inv)
                    hashes.append(inv.payment_hash)
                    return
                except (ValueError, fsm.Rejected, ServerUnavailable):
                    continue
            raise AssertionError("could not start")

        async def go() -> None:
            for n in range(8):
                await pay_one(n)
            for _ in range(80):
                await rig.executor.resume_all()
                if not rig.store.rows():
                    return
                rig.world.mine(1)
                rig.world.advance_time(30.0)

        asyncio.run(go())
        assert rig.store.rows() == [] and rig.store.all_resources() == {}
        assert len(set(hashes)) == 8
        for h in hashes:
            m = rig.wallet.movement_of(lightning_send_id(h))
            assert m is not None
            settled = rig.world.lightning.payments.state_of(h) == "settled"
            paid = rig.wallet.paid_invoice(h) is not None
            assert settled is paid is (m.status is MovementStatus.SUCCESSFUL), h
            if not paid:
                assert m.status is MovementStatus.FAILED and m.metadata.get("failure"), h
        outcomes = {rig.wallet.paid_invoice(h) is not None for h in hashes}
        assert outcomes == {True, False}
        assert rig.problems() == []

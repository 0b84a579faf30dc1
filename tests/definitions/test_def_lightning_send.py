"""The lightning send kind against the simulated world: reference 2.4, state by state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import after_call, after_commits
from wallet_rig import DoubleStepper, Rig, kill_then_resume

import fsm
from fsm_bark.exit import CLAIM_FEE, EXIT_TX_FEE, start_requested_exits
from fsm_bark.lightning_send import REVOCATION_ATTEMPTS, lightning_send_id
from fsm_bark.lightning_send_ops import lightning_send_finished, pay_lightning_invoice
from fsm_bark.lightning_send_start import AlreadyPaid, start_lightning_send
from fsm_bark.model import Invoice, MovementStatus, ServerHtlcSendPolicy, VtxoState
from fsm_bark.services import WalletConfig
from fsm_bark.sim import Fault

AMOUNT = 10_000
FEE = 20  # the sim server: 10 base + 1000 ppm
HTLC_DELTA = 60  # the sim server's htlc_send_expiry_delta
THRESHOLD = WalletConfig().vtxo_refresh_expiry_threshold
UNTIL_PARKED = fsm.DriveMode.UNTIL_PARK_OR_DONE


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def invoice(w: Rig, *, fail: bool = False, pending_polls: int = 0) -> Invoice:
    inv = w.world.lightning.create_invoice(AMOUNT, "coffee", f"inv-{fail}-{pending_polls}")
    w.world.lightning.set_outcome(inv.payment_hash, fail=fail, pending_polls=pending_polls)
    return inv


def fund(w: Rig) -> str:
    [v] = w.world.fund_vtxos(w.wallet, [50_000])
    return v.id


def pay(w: Rig, inv: Invoice, *, wait: bool = True, exit_ok: bool = False) -> fsm.DriveResult:
    return asyncio.run(
        pay_lightning_invoice(w.executor, inv, wait=wait, allow_exit_of_htlcs=exit_ok)
    )


def drive(w: Rig, inv: Invoice, mode: fsm.DriveMode = fsm.DriveMode.UNTIL_DONE) -> fsm.DriveResult:
    return asyncio.run(w.executor.notify(lightning_send_id(inv.payment_hash), mode))


def take_due(w: Rig, mode: fsm.DriveMode = UNTIL_PARKED) -> list[fsm.DriveResult]:
    """What a worker does: drive the due actions (an event sent makes its action due)."""
    return list(asyncio.run(w.executor.run_due(mode, keep_results=True)).results)


def path(w: Rig, inv: Invoice) -> list[tuple[str, str | None, str]]:
    return [
        (t.from_state, t.to_state, t.via)
        for t in w.store.transitions(lightning_send_id(inv.payment_hash))
    ]


def movement(w: Rig, inv: Invoice):  # type: ignore[no-untyped-def]
    m = w.wallet.movement_of(lightning_send_id(inv.payment_hash))
    assert m is not None
    return m


def htlc_of(w: Rig) -> str:
    [htlc] = [v for v, _ in w.wallet.vtxos() if isinstance(v.policy, ServerHtlcSendPolicy)]
    return htlc.id


def test_happy_path_pays_records_the_fact_and_keeps_the_change(w: Rig) -> None:
    input_id = fund(w)
    inv = invoice(w)
    result = pay(w, inv)
    assert result.status is fsm.DriveStatus.DONE, result
    assert [p[:2] for p in path(w, inv)] == [
        ("start", "htlc_received"),
        ("htlc_received", "payment_initiated"),
        ("payment_initiated", None),
    ]
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    assert w.wallet.vtxo_state(input_id) is VtxoState.SPENT
    assert w.wallet.vtxo_state(htlc_of(w)) is VtxoState.SPENT
    change = [v.amount for v, _ in w.wallet.vtxos(VtxoState.SPENDABLE)]
    assert sorted(change) == [19_990, 19_990]  # 39_980 change > 10_000: split in two
    m = movement(w, inv)
    assert m.status is MovementStatus.SUCCESSFUL
    assert (m.intended_balance, m.effective_balance, m.fee) == (-AMOUNT, -AMOUNT - FEE, FEE)
    assert "preimage" in m.metadata
    assert w.store.all_resources() == {}
    assert w.problems() == []
    with pytest.raises(AlreadyPaid):
        asyncio.run(start_lightning_send(w.services, inv))


def test_inputs_are_resources_of_the_first_checkpoint_and_the_htlc_is_held(w: Rig) -> None:
    input_id = fund(w)
    inv = invoice(w, pending_polls=100)
    action, resources = asyncio.run(start_lightning_send(w.services, inv))
    assert action.id == f"ln_pay.{inv.payment_hash}"
    assert resources == [f"vtxo.{input_id}"]
    assert w.wallet.movements() == []  # nothing written before the checkpoint
    asyncio.run(w.executor.start(action, resources=resources))
    result = asyncio.run(w.executor.drive(action.id))
    assert result.status is fsm.DriveStatus.PARKED and result.state == "payment_initiated"
    assert set(w.store.resources_of(action.id)) == {f"vtxo.{input_id}", f"vtxo.{htlc_of(w)}"}
    assert movement(w, inv).status is MovementStatus.PENDING


def test_failed_payment_is_revoked(w: Rig) -> None:
    fund(w)
    inv = invoice(w, fail=True)
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    assert path(w, inv)[-2:] == [
        ("payment_initiated", "revocable", "step"),
        ("revocable", None, "step"),
    ]
    m = movement(w, inv)
    assert m.status is MovementStatus.FAILED and m.effective_balance == 0
    revoked = [v for v, _ in w.wallet.vtxos(VtxoState.SPENDABLE) if v.amount == AMOUNT + FEE]
    assert len(revoked) == 1 and revoked[0].id in m.produced
    assert w.wallet.vtxo_state(htlc_of(w)) is VtxoState.SPENT
    assert w.wallet.paid_invoice(inv.payment_hash) is None
    assert w.problems() == []


def test_paying_again_after_a_revoked_attempt_uses_keys_of_its_own(w: Rig) -> None:
    """The second send of one payment hash is a new incarnation of ``ln_pay.<hash>``: the
    server must not see the first attempt's keys with a different request."""
    fund(w)
    inv = invoice(w, fail=True)
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    assert movement(w, inv).status is MovementStatus.FAILED
    w.world.lightning.set_outcome(inv.payment_hash, fail=False)
    again = pay(w, inv)
    assert again.status is fsm.DriveStatus.DONE and again.state == "paid"
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    # each attempt has its movement: the revoked one stays failed, the paid one succeeded
    assert [m.status for m in w.wallet.movements()] == [
        MovementStatus.FAILED,
        MovementStatus.SUCCESSFUL,
    ]
    assert movement(w, inv).status is MovementStatus.SUCCESSFUL
    assert w.problems() == []


def test_cosign_rejection_fails_the_movement_and_releases_the_inputs(w: Rig) -> None:
    input_id = fund(w)
    inv = invoice(w)
    w.world.script_fault("request_lightning_pay_htlc_cosign", Fault.REJECT_INVALID_ARGUMENT)
    result = pay(w, inv)
    assert result.status is fsm.DriveStatus.FAILED
    assert path(w, inv) == [
        ("start", "abandoning", "rejection"),
        ("abandoning", None, "step"),
    ]
    m = movement(w, inv)  # bark leaves it pending forever (defect 5)
    assert m.status is MovementStatus.FAILED and m.effective_balance == 0
    assert w.wallet.vtxo_state(input_id) is VtxoState.SPENDABLE
    assert w.store.all_resources() == {}
    assert w.problems() == []


def test_near_expiry_at_start_adopts_an_htlc_the_server_made(w: Rig) -> None:
    """Cosign applied, answer lost, then near expiry: bark would release spent inputs."""
    input_id = fund(w)
    inv = invoice(w)
    w.world.script_fault("request_lightning_pay_htlc_cosign", Fault.LOSE_RESPONSE)
    result = pay(w, inv, wait=False)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "start"
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    assert drive(w, inv).status is fsm.DriveStatus.DONE
    assert [p[:2] for p in path(w, inv)][1:] == [
        ("start", "abandoning"),
        ("abandoning", "htlc_received"),
        ("htlc_received", "revocable"),
        ("revocable", None),
    ]
    assert w.wallet.vtxo_state(input_id) is VtxoState.SPENT
    assert movement(w, inv).status is MovementStatus.FAILED
    cosigns = [e for e in w.world.ledger.entries() if e.rpc == "request_lightning_pay_htlc_cosign"]
    assert sum(e.applied for e in cosigns) == 1  # the adoption was a replay
    assert w.problems() == []


def test_near_expiry_at_start_without_an_htlc_gives_up(w: Rig) -> None:
    input_id = fund(w)
    inv = invoice(w)
    w.world.script_fault("request_lightning_pay_htlc_cosign", Fault.DROP_REQUEST)
    assert pay(w, inv, wait=False).state == "start"
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    assert drive(w, inv).status is fsm.DriveStatus.FAILED
    assert [p[1] for p in path(w, inv)][1:] == ["abandoning", None]
    assert w.wallet.vtxo_state(input_id) is VtxoState.SPENDABLE
    assert movement(w, inv).status is MovementStatus.FAILED
    assert w.problems() == []


def test_initiate_rejection_revokes(w: Rig) -> None:
    fund(w)
    inv = invoice(w)
    w.world.script_fault("initiate_lightning_payment", Fault.REJECT_INVALID_ARGUMENT)
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    assert ("htlc_received", "revocable", "rejection") in path(w, inv)
    assert movement(w, inv).status is MovementStatus.FAILED
    assert w.problems() == []


def test_pending_near_expiry_revokes_and_a_refused_revocation_gets_stuck(w: Rig) -> None:
    fund(w)
    inv = invoice(w, pending_polls=10_000)
    assert pay(w, inv, wait=False).state == "payment_initiated"
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)  # near expiry, not expired: still in flight
    result = drive(w, inv)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "revocation_stuck"
    assert isinstance(result.error, fsm.Rejected)  # parked with the error, no wake-up
    row = w.store.row(lightning_send_id(inv.payment_hash))
    assert row is not None and row.wake_at is None
    assert path(w, inv)[-3:] == [
        ("payment_initiated", "revocable", "step"),
        ("revocable", "revocation_stuck", "rejection"),
        ("revocation_stuck", "revocation_stuck", "rejection"),
    ]
    w.world.mine(THRESHOLD)  # past expiry: the server gives the HTLC back
    assert drive(w, inv).status is fsm.DriveStatus.DONE
    assert movement(w, inv).status is MovementStatus.FAILED
    assert w.problems() == []


def test_revocation_tolerates_a_few_transient_errors_before_it_is_stuck(w: Rig) -> None:
    fund(w)
    inv = invoice(w, fail=True)
    rpc = "request_lightning_pay_htlc_revocation"
    w.world.script_fault(rpc, Fault.DROP_REQUEST, times=REVOCATION_ATTEMPTS - 1)
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    assert "revocation_stuck" not in {p[1] for p in path(w, inv)}  # bark: stuck at the first

    other = Rig(w.world.folder.parent / "second", seed=2)
    try:
        fund(other)
        inv2 = invoice(other, fail=True)
        other.world.script_fault(rpc, Fault.DROP_REQUEST, times=REVOCATION_ATTEMPTS)
        assert pay(other, inv2).status is fsm.DriveStatus.DONE
        assert ("revocable", "revocation_stuck", "retry") in path(other, inv2)
        assert other.problems() == []
    finally:
        other.close()


@pytest.mark.parametrize("opted_in", [True, False])
def test_stuck_revocation_exits_only_when_opted_in_and_near_expiry(w: Rig, opted_in: bool) -> None:
    fund(w)
    inv = invoice(w, fail=True)
    w.world.script_fault("request_lightning_pay_htlc_revocation", Fault.REJECT_INVALID_ARGUMENT, 99)
    result = pay(w, inv, exit_ok=opted_in)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "revocation_stuck"
    w.world.mine(HTLC_DELTA - THRESHOLD + 1)
    result = drive(w, inv)
    htlc = htlc_of(w)
    if not opted_in:
        assert result.status is fsm.DriveStatus.PARKED and result.state == "revocation_stuck"
        assert w.wallet.vtxo_state(htlc) is VtxoState.SPENDABLE
        return
    assert result.status is fsm.DriveStatus.DONE
    assert path(w, inv)[-2:] == [
        ("revocation_stuck", "exiting", "step"),
        ("exiting", None, "step"),
    ]
    assert w.wallet.vtxo_state(htlc) is VtxoState.EXITED
    m = movement(w, inv)
    assert m.status is MovementStatus.FAILED and m.metadata["exited_vtxos"] == htlc
    assert w.store.all_resources() == {}
    assert w.problems() == []
    # the exit the send asked for, played out on chain: the HTLC comes back on chain
    assert w.wallet.exiting(htlc)
    htlc_vtxo = w.wallet.get_vtxo(htlc)
    assert htlc_vtxo is not None
    w.world.fund_onchain(EXIT_TX_FEE * (htlc_vtxo.depth + 1))  # one CPFP fee per exit tx
    [exit_action] = asyncio.run(start_requested_exits(w.executor))
    for _ in range(40):
        if asyncio.run(w.drive(exit_action)).status is fsm.DriveStatus.DONE:
            break
        w.world.mine(1)
    exited = w.wallet.get_vtxo(htlc)
    assert exited is not None
    assert w.world.onchain_wallet().balance() == exited.amount - CLAIM_FEE
    assert w.problems() == []


def test_mailbox_notification_settles_through_the_executor(w: Rig) -> None:
    fund(w)
    inv = invoice(w, pending_polls=1)
    assert pay(w, inv, wait=False).state == "payment_initiated"
    action_id = lightning_send_id(inv.payment_hash)
    claimed = w.store.claim(action_id, "another-driver", w.world.clock.now())
    assert not isinstance(claimed, str)  # another driver holds the lease now
    sent = asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    assert sent is not None and sent.status is fsm.SendStatus.SENT  # queued, not driven
    assert w.wallet.paid_invoice(inv.payment_hash) is None  # no settle behind its back
    again = asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    assert again is not None and again.status is fsm.SendStatus.DUPLICATE  # one notification
    assert [e.name for e in w.store.pending_events(action_id)] == ["PaymentFinished"]
    w.store.unclaim(action_id, claimed.epoch)
    [done] = take_due(w)  # a worker takes it: the send is due at once, not in 2 s
    assert (done.status, done.state) == (fsm.DriveStatus.DONE, "paid")
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    assert path(w, inv)[-1] == ("payment_initiated", None, "step")  # the end, from there
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash)) is None
    assert movement(w, inv).status is MovementStatus.SUCCESSFUL
    assert w.problems() == []


def test_mailbox_notification_of_a_failed_payment_revokes(w: Rig) -> None:
    fund(w)
    inv = invoice(w, fail=True, pending_polls=1)
    assert pay(w, inv, wait=False).state == "payment_initiated"
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    [result] = take_due(w, fsm.DriveMode.UNTIL_DONE)
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, "revoked")
    assert movement(w, inv).status is MovementStatus.FAILED
    assert w.problems() == []


def test_a_notification_the_server_does_not_confirm_yet_waits_for_the_poll(w: Rig) -> None:
    """The mailbox says finished while the server's status still reads pending: the event
    is not taken and stays in the inbox; the poll goes on and the send settles after it."""
    fund(w)
    inv = invoice(w, pending_polls=3)
    assert pay(w, inv, wait=False).state == "payment_initiated"  # the first pending poll
    action_id = lightning_send_id(inv.payment_hash)
    assert asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    [parked] = take_due(w)  # the second pending poll
    assert (parked.status, parked.state) == (fsm.DriveStatus.PARKED, "payment_initiated")
    assert [e.name for e in w.store.pending_events(action_id)] == ["PaymentFinished"]
    row = w.store.row(action_id)
    assert row is not None and row.wake_at == w.world.clock.now() + 2.0  # polling as before
    assert drive(w, inv).state == "paid"
    assert w.wallet.paid_invoice(inv.payment_hash) is not None
    assert w.problems() == []


def test_a_notification_before_the_payment_is_initiated_waits_for_it(w: Rig) -> None:
    """The kind queues what its state does not take: a "finished" that reaches the send
    before ``payment_initiated`` is checkpointed is taken there."""
    fund(w)
    inv = invoice(w, pending_polls=1)

    def stop(entry: fsm.LogEntry) -> None:
        if entry.to_state == "htlc_received":
            raise RuntimeError("stopped after the HTLC")  # as if the process died there

    w.after_commit = stop
    with pytest.raises(RuntimeError):
        pay(w, inv, wait=False)
    w.after_commit = None
    action_id = lightning_send_id(inv.payment_hash)
    assert w.store.row(action_id).state == "htlc_received"  # type: ignore[union-attr]
    sent = asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    assert sent is not None and sent.status is fsm.SendStatus.SENT
    [parked] = take_due(w)  # initiated; the first poll reads pending: the event waits
    assert (parked.state, [e.name for e in w.store.pending_events(action_id)]) == (
        "payment_initiated",
        ["PaymentFinished"],
    )
    assert drive(w, inv).state == "paid"
    assert w.problems() == []


def test_a_notification_for_an_ended_send_is_refused(w: Rig) -> None:
    fund(w)
    inv = invoice(w, fail=True)
    assert pay(w, inv).state == "revoked"
    ended = asyncio.run(lightning_send_finished(w.executor, inv.payment_hash))
    assert ended is not None and ended.status is fsm.SendStatus.FINISHED and not ended


def test_a_pending_payment_is_polled_every_two_seconds(w: Rig) -> None:
    fund(w)
    inv = invoice(w, pending_polls=3)
    t0 = w.world.clock.now()
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    polls = [p for p in path(w, inv) if p[0] == "payment_initiated"]
    assert len(polls) >= 2 and w.world.clock.now() - t0 == 2.0 * (len(polls) - 1)


@pytest.mark.parametrize(
    "rpc",
    [
        "request_lightning_pay_htlc_cosign",
        "initiate_lightning_payment",
        "request_lightning_pay_htlc_revocation",
    ],
)
def test_a_lost_response_is_replayed(w: Rig, rpc: str) -> None:
    fund(w)
    inv = invoice(w, fail=rpc.endswith("revocation"))
    w.world.script_fault(rpc, Fault.LOSE_RESPONSE)
    assert pay(w, inv).status is fsm.DriveStatus.DONE
    [entry] = [e for e in w.world.ledger.entries() if e.rpc == rpc]
    assert (entry.applied, entry.attempts) == (1, 2)
    assert w.problems() == []


@pytest.mark.parametrize("fail", [False, True])
def test_every_step_is_idempotent(w: Rig, fail: bool) -> None:
    input_id = fund(w)
    inv = invoice(w, fail=fail)
    started = asyncio.run(start_lightning_send(w.services, inv))
    states = asyncio.run(DoubleStepper(w, *started).until_end())
    if fail:
        assert states == ["start", "htlc_received", "payment_initiated", "revocable", "Done"]
    else:
        assert states == ["start", "htlc_received", "payment_initiated", "Done"]
    assert w.wallet.vtxo_state(input_id) is VtxoState.SPENT
    assert w.problems() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "rpc"),
    [
        ("lightning_send", "request_lightning_pay_htlc_cosign"),
        ("lightning_send", "initiate_lightning_payment"),
        ("lightning_send", None),  # killed right after the htlc_received step committed
        ("lightning_send_fail", "request_lightning_pay_htlc_revocation"),
    ],
)
def test_sigkill_mid_send_resumes_in_a_new_process(
    tmp_path: Path, kind: str, rpc: str | None
) -> None:
    def inputs_still_held(w: Rig) -> None:
        [row] = w.store.rows()
        assert row.id.startswith("ln_pay.")
        assert set(w.store.all_resources().values()) == {row.id}
        assert rpc is not None or row.state == "payment_initiated"

    kill = after_commits(2) if rpc is None else after_call(rpc)
    kill_then_resume(tmp_path, "start", kind, kill=kill, while_dead=inputs_still_held)
    with Rig(tmp_path) as w:
        assert w.store.rows() == [] and w.store.all_resources() == {}
        [m] = w.wallet.movements()
        paid = kind == "lightning_send"
        assert m.status is (MovementStatus.SUCCESSFUL if paid else MovementStatus.FAILED)
        assert (w.wallet.paid_invoice(m.metadata["payment_hash"]) is not None) is paid
        if rpc is not None:
            entry = next(e for e in w.world.ledger.entries() if e.rpc == rpc)
            assert (entry.applied, entry.attempts) == (1, 2)
        assert w.problems() == []

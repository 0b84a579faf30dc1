"""The lightning receive kind against the simulated world: every path of reference §2.5,
idempotency of each step, and resumption after a real SIGKILL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pytest
from processes import after_commits
from wallet_rig import DoubleStepper, Rig, kill_then_resume

import fsm
from fsm import LogEntry
from fsm.store import StoreHooks
from fsm_bark.events import ExitRequested
from fsm_bark.lightning_receive import LightningReceiveKind, lightning_receive_id
from fsm_bark.lightning_receive_ops import (
    ReceiveNotInState,
    ReceiveOutcome,
    cancel_receive,
    exit_receive,
    read_receive,
    receive_outcome,
)
from fsm_bark.lightning_receive_start import start_lightning_receive
from fsm_bark.model import (
    ArkAddress,
    HtlcRecvPolicy,
    MovementStatus,
    VtxoState,
    digest,
    payment_hash_of,
)
from fsm_bark.services import Services, WalletConfig
from fsm_bark.services.ark_records import ReceiveState
from fsm_bark.sim import Fault

T = TypeVar("T")
AMOUNT = 10_000
FEE = 20  # the sim's lightning_receive_fee


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def receive(w: Rig, name: str = "r", **kw: Any) -> fsm.Action[Services]:
    """Start a receive of AMOUNT whose preimage is derived from ``name``."""
    action, _ = run(start_lightning_receive(w.services, AMOUNT, preimage=digest(name), **kw))
    assert run(w.executor.start(action))
    return action


def pay(w: Rig, action: fsm.Action[Services]) -> None:
    found = read_receive(w.store, hash_of(action))
    assert found is not None
    run(w.services.lightning.pay_invoice(found[1].invoice, f"payer.{action.id}"))


def drive(
    w: Rig, action: fsm.Action[Services], mode: fsm.DriveMode = fsm.DriveMode.UNTIL_DONE
) -> fsm.DriveResult:
    return run(w.drive(action.id, mode))


class Interrupted(Exception):
    pass


def stop_at(state: str) -> Callable[[LogEntry], None]:
    """An ``after_commit`` that stops the drive right after a commit into ``state``."""

    def stop(entry: LogEntry) -> None:
        if entry.to_state == state:
            raise Interrupted(state)  # as if the process died right after the commit

    return stop


def take_due(w: Rig) -> list[fsm.DriveResult]:
    """What a worker does: drive the due actions (an event sent makes its action due)."""
    return list(run(w.executor.run_due(keep_results=True)).results)


def hash_of(action: fsm.Action[Services]) -> str:
    return action.id.removeprefix("ln_recv.")


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, seed=3)
    rig.world.fund_vtxos(rig.wallet, [50_000])
    yield rig
    rig.close()


# -- the happy paths ---------------------------------------------------------------------------


def test_paid_receive_settles_into_the_wallet(w: Rig) -> None:
    action = receive(w)
    assert action.id == lightning_receive_id(hash_of(action))
    first = drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert (first.status, first.state) == (fsm.DriveStatus.PARKED, "awaiting_payment")
    assert w.store.row(action.id).wake_at == w.world.clock.now() + 4.0  # type: ignore[union-attr]
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    wallet = w.services.wallet
    assert wallet.settled_receive(hash_of(action)) == AMOUNT - FEE
    [movement] = [m for m in wallet.movements() if m.action_id == action.id]
    assert movement.status is MovementStatus.SUCCESSFUL
    assert movement.effective_balance == AMOUNT - FEE and movement.intended_balance == AMOUNT
    [claimed] = movement.produced
    assert wallet.vtxo_state(claimed) is VtxoState.SPENDABLE
    assert w.applied_by("prepare_lightning_receive_claim") == 1
    assert w.applied_by("claim_lightning_receive") == 1
    assert receive_outcome(w.store, w.services, hash_of(action)) is ReceiveOutcome.SETTLED
    assert w.problems() == []


def test_the_invoice_and_the_movement_carry_what_bark_shows(w: Rig) -> None:
    """The description reaches the invoice; the movement names the HTLCs and the preimage."""
    action = receive(w, description="two coffees")
    found = read_receive(w.store, hash_of(action))
    assert found is not None and found[1].invoice.description == "two coffees"
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    [htlc] = [v for v, _ in w.services.wallet.vtxos() if isinstance(v.policy, HtlcRecvPolicy)]
    movement = w.services.wallet.movement_of(action.id)
    assert movement is not None and movement.metadata["htlc_vtxos"] == htlc.id
    assert payment_hash_of(movement.metadata["preimage"]) == hash_of(action)


def test_external_destination_is_delivered_to_its_mailbox(w: Rig) -> None:
    bob = ArkAddress(digest("bob key"), ["mbx-bob-1", "mbx-bob-2"])
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST)  # the first mailbox fails
    action = receive(w, claim_destination=bob)
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    assert [v.pubkey for v in w.world.server.mailbox("mbx-bob-2")] == [bob.pubkey]
    assert w.world.server.mailbox("mbx-bob-1") == []
    assert w.services.wallet.settled_receive(hash_of(action)) == AMOUNT
    [movement] = [m for m in w.services.wallet.movements() if m.action_id == action.id]
    assert movement.status is MovementStatus.SUCCESSFUL and movement.effective_balance == 0
    assert movement.metadata["sent_to"] == bob.pubkey
    assert w.problems() == []


def test_delivery_retries_until_a_mailbox_accepts(w: Rig) -> None:
    bob = ArkAddress(digest("bob key"), ["mbx-bob"])
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST, times=2)
    action = receive(w, claim_destination=bob)
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    assert len(w.world.server.mailbox("mbx-bob")) == 1


# -- unpaid, canceled, refused -----------------------------------------------------------------


def test_unpaid_invoice_expires_after_the_grace(w: Rig) -> None:
    action = receive(w)
    drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    w.world.advance_time(3600 + 30)  # expired, but inside the 60 s grace
    assert drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE).status is fsm.DriveStatus.PARKED
    w.world.advance_time(31)
    assert drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE).status is fsm.DriveStatus.DONE
    assert w.services.wallet.movement_of(action.id) is None
    assert receive_outcome(w.store, w.services, hash_of(action)) is ReceiveOutcome.GONE
    assert w.problems() == []


def test_cancel_goes_through_the_table(w: Rig) -> None:
    action = receive(w)
    drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    sent = run(cancel_receive(w.executor, hash_of(action)))
    assert sent.status is fsm.SendStatus.SENT and sent.key == f"cancel.{hash_of(action)}"
    status = run(w.services.server.check_lightning_receive(hash_of(action)))
    assert status.state is ReceiveState.CANCELED  # the server's cancel: done by the caller
    row = w.store.row(action.id)  # the action: told, not driven, and due now
    assert row is not None and row.state == "awaiting_payment"
    assert row.wake_at is not None and row.wake_at <= w.world.clock.now()
    assert [e.name for e in w.store.pending_events(action.id)] == ["ReceiveCanceled"]
    again = run(cancel_receive(w.executor, hash_of(action)))  # the server replays the key
    assert again.status is fsm.SendStatus.DUPLICATE
    assert w.applied_by("cancel_lightning_receive") == 1
    [result] = take_due(w)
    assert result.status is fsm.DriveStatus.FAILED and "canceled" in str(result.error)
    assert result.state == "canceled" and w.store.row(action.id) is None
    assert w.problems() == []


def test_a_cancel_sent_while_another_driver_holds_the_receive_waits_for_it(w: Rig) -> None:
    action = receive(w)
    drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    claimed = w.store.claim(action.id, "another-driver", w.world.clock.now())
    assert not isinstance(claimed, str)
    assert run(cancel_receive(w.executor, hash_of(action))).status is fsm.SendStatus.SENT
    assert w.store.row(action.id).state == "awaiting_payment"  # type: ignore[union-attr]
    w.store.unclaim(action.id, claimed.epoch)
    [result] = take_due(w)
    assert (result.status, result.state) == (fsm.DriveStatus.FAILED, "canceled")


def test_server_cancel_is_seen_by_the_poll(w: Rig) -> None:
    action = receive(w)
    run(w.services.server.cancel_lightning_receive(hash_of(action), "someone.cancel"))
    assert drive(w, action).status is fsm.DriveStatus.FAILED


def test_cancel_needs_an_unpaid_receive(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    with pytest.raises(ReceiveNotInState):
        run(cancel_receive(w.executor, hash_of(action)))


@pytest.mark.parametrize("fault", [Fault.REJECT_NOT_FOUND, Fault.REJECT_INVALID_ARGUMENT])
def test_server_rejection_while_awaiting_payment_fails(w: Rig, fault: Fault) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("prepare_lightning_receive_claim", fault)
    result = drive(w, action)
    assert result.status is fsm.DriveStatus.FAILED and isinstance(result.error, fsm.Rejected)
    assert w.services.wallet.movement_of(action.id) is None
    assert w.store.all_resources() == {}
    assert w.problems() == []


def test_grant_too_close_to_the_claim_deadline_is_rejected(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("prepare_lightning_receive_claim", Fault.LOSE_RESPONSE)
    parked = drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert parked.status is fsm.DriveStatus.PARKED  # granted, but the answer was lost
    w.world.mine(5)  # the granted expiry no longer leaves room for a unilateral claim
    result = drive(w, action)
    assert result.status is fsm.DriveStatus.FAILED and "grant rejected" in str(result.error)
    assert w.services.wallet.movement_of(action.id) is None
    w.world.mine(60)  # the server takes the unclaimed HTLCs back and refunds the payer
    assert w.problems() == []


def test_a_grant_taken_but_not_checkpointed_then_rejected_is_given_up(w: Rig) -> None:
    """The step that takes the grant stores its HTLC VTXOs and opens the movement, then its
    checkpoint is lost (a failed write here; a kill in the torture run that found this).
    Time moves on, the request is pinned again with a later expiry, and the server answers
    with the first grant (a replay): rejected. What the first attempt stored is given up
    (HTLCs spent, movement cancelled), or the wallet would show as spendable the HTLCs the
    server takes back when they expire."""
    action = receive(w)
    pay(w, action)
    lost: list[str] = []

    def lose_the_grants_write(point: str) -> None:
        taken = [v for v, _ in w.wallet.vtxos() if isinstance(v.policy, HtlcRecvPolicy)]
        if point == "resources.before" and taken and not lost:  # the grant's step holds them
            lost.append(point)
            raise OSError("the write is lost")

    w.store.hooks = fsm.store.StoreHooks(point=lose_the_grants_write)
    first = drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    w.store.hooks = fsm.store.StoreHooks()
    assert lost and first.state == "awaiting_payment"
    taken = [v.id for v, _ in w.wallet.vtxos() if isinstance(v.policy, HtlcRecvPolicy)]
    assert taken  # the first attempt's effects ran
    w.world.mine(3)  # the pinned request goes stale: pinned again, later
    result = drive(w, action)
    assert result.status is fsm.DriveStatus.FAILED
    assert "before the requested height" in str(result.error)
    assert {w.wallet.vtxo_state(i) for i in taken} == {VtxoState.SPENT}
    movement = w.services.wallet.movement_of(action.id)
    assert movement is not None and movement.status is MovementStatus.CANCELED
    w.world.mine(60)  # the server takes the unclaimed HTLCs back and refunds the payer
    assert w.problems() == []


def test_a_stale_unsent_grant_request_is_pinned_again(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("prepare_lightning_receive_claim", Fault.DROP_REQUEST)
    drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    w.world.mine(5)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    assert w.problems() == []


# -- faults after the payment ------------------------------------------------------------------


@pytest.mark.parametrize(
    "rpc",
    ["prepare_lightning_receive_claim", "claim_lightning_receive", "register_vtxo_transactions"],
)
def test_lost_responses_are_replayed_not_reapplied(w: Rig, rpc: str) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault(rpc, Fault.LOSE_RESPONSE, times=2)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    [entry] = [e for e in w.world.ledger.entries() if e.rpc == rpc]
    assert (entry.applied, entry.attempts) == (1, 3)
    assert w.problems() == []


def test_claim_budget_parks_pending_then_a_later_drive_finishes(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("claim_lightning_receive", Fault.DROP_REQUEST, times=6)
    result = drive(w, action)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "preimage_revealed"
    assert "retry budget exhausted" in str(result.error)
    row = w.store.row(action.id)
    assert row is not None and row.attempts == 5 and row.wake_at is None
    again = drive(w, action)  # the sixth attempt fails too: still over budget, still pending
    assert again.status is fsm.DriveStatus.PARKED and "budget" in str(again.error)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    assert w.problems() == []


def test_claim_budget_is_the_wallets_configuration(tmp_path: Path) -> None:
    """A wallet configured for 3 claim attempts makes 3, not the default 5."""
    with Rig(tmp_path, seed=3, config=WalletConfig(lightning_receive_claim_retries=3)) as w:
        w.world.fund_vtxos(w.wallet, [50_000])
        action = receive(w)
        pay(w, action)
        w.world.script_fault("claim_lightning_receive", Fault.DROP_REQUEST, times=4)
        result = drive(w, action)
        assert result.status is fsm.DriveStatus.PARKED and result.state == "preimage_revealed"
        assert "retry budget exhausted" in str(result.error)
        row = w.store.row(action.id)
        assert row is not None and row.attempts == 3 and row.wake_at is None
        assert drive(w, action).status is fsm.DriveStatus.PARKED  # the fourth fails too
        assert drive(w, action).status is fsm.DriveStatus.DONE
        assert w.problems() == []


def test_claim_rejection_keeps_the_receive_pending(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("claim_lightning_receive", Fault.REJECT_INVALID_ARGUMENT)
    result = drive(w, action)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "preimage_revealed"
    assert isinstance(result.error, Exception) and "rejected" in str(result.error)
    assert drive(w, action).status is fsm.DriveStatus.DONE


def test_htlcs_near_expiry_are_abandoned_before_the_reveal(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.after_commit = stop_at("htlcs_ready")
    with pytest.raises(Interrupted):
        drive(w, action)
    w.after_commit = None
    w.world.mine(45)  # within vtxo_refresh_expiry_threshold (12) of the HTLC expiry (+50)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    movement = w.services.wallet.movement_of(action.id)
    assert movement is not None and movement.status is MovementStatus.CANCELED
    assert movement.effective_balance == 0
    assert w.applied_by("claim_lightning_receive") == 0
    w.world.mine(10)
    assert w.problems() == []


def test_exit_after_the_reveal(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    w.world.script_fault("claim_lightning_receive", Fault.REJECT_NOT_FOUND)
    assert drive(w, action).state == "preimage_revealed"
    row = w.store.row(action.id)
    assert row is not None and row.wake_at is None  # parked with the error, no wake-up
    sent = run(exit_receive(w.executor, hash_of(action)))
    assert sent.status is fsm.SendStatus.SENT and sent.key == f"exit.{hash_of(action)}"
    assert w.services.wallet.settled_receive(hash_of(action)) is None  # nothing ran yet
    [result] = take_due(w)  # the event made the receive due
    assert (result.status, result.state) == (fsm.DriveStatus.DONE, "exited")
    assert_exited(w, action)
    assert w.applied_by("claim_lightning_receive") == 0  # taken before any claim


def test_an_exit_requested_before_exits_were_events_is_still_taken(w: Rig) -> None:
    """A checkpoint whose ``exit_requested`` the exit of before events set (through
    `Executor.update`) still exits: the request is not lost to the new table."""
    action = receive(w)
    pay(w, action)
    w.world.script_fault("claim_lightning_receive", Fault.REJECT_NOT_FOUND)
    assert drive(w, action).state == "preimage_revealed"

    def request_exit(stored: Any) -> Any:
        data = attrs.evolve(stored.data, exit_requested=True)
        return LightningReceiveKind.create(data, LightningReceiveKind.preimage_revealed)

    run(w.executor.update(action.id, request_exit))
    assert drive(w, action).state == "exited"
    assert_exited(w, action)


def test_an_exit_cut_short_before_its_end_is_written_is_taken_again(tmp_path: Path) -> None:
    """The exit's effects ran but its end was never written (a crash): the event is still
    in the inbox, the next drive takes it again, and nothing is done twice."""
    crash = {"armed": False}

    def point(name: str) -> None:
        if crash["armed"] and name == "finish.before":
            crash["armed"] = False
            raise Interrupted(name)

    with Rig(tmp_path, seed=3, hooks=StoreHooks(point=point)) as w:
        w.world.fund_vtxos(w.wallet, [50_000])
        action = receive(w)
        pay(w, action)
        w.world.script_fault("claim_lightning_receive", Fault.REJECT_NOT_FOUND)
        assert drive(w, action).state == "preimage_revealed"
        assert run(exit_receive(w.executor, hash_of(action)))
        crash["armed"] = True
        cut = drive(w, action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
        assert cut.status is not fsm.DriveStatus.DONE and "finish.before" in str(cut.error)
        assert w.store.row(action.id).state == "preimage_revealed"  # type: ignore[union-attr]
        assert w.services.wallet.settled_receive(hash_of(action)) == AMOUNT - FEE  # it ran
        assert [e.name for e in w.store.pending_events(action.id)] == ["ExitRequested"]
        assert drive(w, action).state == "exited"
        assert_exited(w, action)


def test_exit_needs_the_preimage_revealed(w: Rig) -> None:
    action = receive(w)
    with pytest.raises(ReceiveNotInState):
        run(exit_receive(w.executor, hash_of(action)))
    # past the operation's check (a race with it): the kind refuses what its state does not take
    late = run(w.executor.send(action.id, ExitRequested(hash_of(action)), key="exit.late"))
    assert late.status is fsm.SendStatus.REFUSED and "awaiting_payment" in str(late.detail)
    assert w.store.pending_events(action.id) == []


def assert_exited(w: Rig, action: fsm.Action[Services]) -> None:
    """The receive ended ``exited``: the HTLCs exiting, the movement failed with them."""
    assert w.store.row(action.id) is None and w.store.all_resources() == {}
    movement = w.services.wallet.movement_of(action.id)
    assert movement is not None and movement.status is MovementStatus.FAILED
    assert w.services.wallet.settled_receive(hash_of(action)) == AMOUNT - FEE
    exited = [v for v, s in w.services.wallet.vtxos() if s is VtxoState.EXITED]
    assert len(exited) == 1 and exited[0].amount == AMOUNT - FEE
    assert movement.metadata["exited_vtxos"] == exited[0].id  # recorded, as bark does
    assert w.problems() == []


def test_settled_on_the_server_walks_forward_instead_of_retrying(w: Rig) -> None:
    action = receive(w)
    pay(w, action)
    assert drive(w, action).status is fsm.DriveStatus.DONE
    # A start delivered again is recognised: the kept outcome, nothing runs twice.
    assert run(w.executor.start(action)).status is fsm.StartStatus.ENDED
    # The same receive again from the start (as if its checkpoint were older than the server).
    assert run(w.executor.start(action, again=True))
    assert drive(w, action).status is fsm.DriveStatus.DONE
    assert w.applied_by("claim_lightning_receive") == 1
    assert w.problems() == []


# -- idempotency of each step ------------------------------------------------------------------


@pytest.mark.parametrize("external", [False, True])
def test_every_step_twice_gives_the_same_outcome_and_no_second_effect(
    w: Rig, external: bool
) -> None:
    dest = ArkAddress(digest("carol"), ["mbx-carol"]) if external else None
    action = receive(w, claim_destination=dest)
    pay(w, action)
    states = run(DoubleStepper(w, action).until_end())
    expected = ["awaiting_payment", "awaiting_payment", "htlcs_ready", "preimage_revealed"]
    assert states == [*expected, "delivering", "Done"] if external else [*expected, "Done"]


# -- SIGKILL -----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("commits", [1, 2, 3, 4])
def test_resumes_after_sigkill_right_after_a_commit(tmp_path: Path, commits: int) -> None:
    kill_then_resume(tmp_path, "start", "lightning_receive", kill=after_commits(commits))
    with Rig(tmp_path) as w:
        assert w.store.rows() == []
        [movement] = w.wallet.movements()
        assert movement.status is MovementStatus.SUCCESSFUL
        assert w.problems() == []

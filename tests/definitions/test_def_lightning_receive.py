"""The lightning receive kind against the simulated world: every path of reference §2.5,
idempotency of each step, and resumption after a real SIGKILL."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest

import fsm
from fsm.retry import SEED_POLICY
from fsm_bark.lightning_receive import LightningReceiveKind, receive_id, start_lightning_receive
from fsm_bark.lightning_receive_ops import (
    ReceiveNotInState,
    ReceiveOutcome,
    cancel_receive,
    exit_receive,
    read_receive,
    receive_outcome,
)
from fsm_bark.model import ArkAddress, MovementStatus, VtxoState, digest
from fsm_bark.services import Services
from fsm_bark.services.ark_records import ReceiveState
from fsm_bark.sim import Fault, World, check_wallet_invariants, make_world

T = TypeVar("T")
SUPPORT = Path(__file__).resolve().parents[1] / "support"
REPO = Path(__file__).resolve().parents[2]
AMOUNT = 10_000
FEE = 20  # the sim's lightning_receive_fee


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


class Wallet:
    """A world, an fsm store and an executor on the world's clock, in tmp_path."""

    def __init__(self, tmp_path: Path, seed: int = 3) -> None:
        self.world: World = make_world(tmp_path / "world", seed)
        self.store = fsm.Store.sqlite(tmp_path / "fsm.sqlite")
        self.svc: Services = self.world.services(self.store)
        self.stops_at: str | None = None
        self.ex = fsm.Executor(
            self.store,
            self.svc,
            kinds=[LightningReceiveKind],
            clock=self.world.clock.now,
            sleep=self._sleep,
            on_commit=self._on_commit,
        )
        self.world.fund_vtxos(self.svc.wallet, [50_000])

    async def _sleep(self, seconds: float) -> None:
        self.world.advance_time(seconds)

    def _on_commit(self, action_id: str, entry: Any) -> None:
        if self.stops_at is not None and entry.to_state == self.stops_at:
            raise Interrupted(entry.to_state)  # as if the process died right after the commit

    def receive(self, name: str = "r", **kw: Any) -> fsm.Action[Services]:
        action = run(start_lightning_receive(self.svc, AMOUNT, preimage=digest(name), **kw))
        assert run(self.ex.start(action))
        return action

    def pay(self, action: fsm.Action[Services]) -> None:
        found = read_receive(self.store, action.id.removeprefix("ln_recv."))
        assert found is not None
        run(self.svc.lightning.pay_invoice(found[1].invoice, f"payer.{action.id}"))

    def drive(
        self, action: fsm.Action[Services], mode: fsm.DriveMode = fsm.DriveMode.UNTIL_DONE
    ) -> fsm.DriveResult:
        return run(self.ex.drive(action.id, mode))

    def problems(self) -> list[str]:
        return check_wallet_invariants(self.world, self.svc.wallet, self.store)  # type: ignore[arg-type]

    def applied(self, rpc: str) -> int:
        return sum(e.applied for e in self.world.ledger.entries() if e.rpc == rpc)


class Interrupted(Exception):
    pass


def hash_of(action: fsm.Action[Services]) -> str:
    return action.id.removeprefix("ln_recv.")


@pytest.fixture
def w(tmp_path: Path) -> Wallet:
    return Wallet(tmp_path)


# -- the happy paths ---------------------------------------------------------------------------


def test_paid_receive_settles_into_the_wallet(w: Wallet) -> None:
    action = w.receive()
    assert action.id == receive_id(hash_of(action))
    first = w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert (first.status, first.state) == (fsm.DriveStatus.PARKED, "awaiting_payment")
    assert w.store.row(action.id).wake_at == w.world.clock.now() + 4.0  # type: ignore[union-attr]
    w.pay(action)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    wallet = w.svc.wallet
    assert wallet.settled_receive(hash_of(action)) == AMOUNT - FEE
    [movement] = [m for m in wallet.movements() if m.action_id == action.id]
    assert movement.status is MovementStatus.SUCCESSFUL
    assert movement.effective_balance == AMOUNT - FEE and movement.intended_balance == AMOUNT
    [claimed] = movement.produced
    assert wallet.vtxo_state(claimed) is VtxoState.SPENDABLE
    assert w.applied("prepare_lightning_receive_claim") == 1
    assert w.applied("claim_lightning_receive") == 1
    assert receive_outcome(w.store, w.svc, hash_of(action)) is ReceiveOutcome.SETTLED
    assert w.problems() == []


def test_external_destination_is_delivered_to_its_mailbox(w: Wallet) -> None:
    bob = ArkAddress(digest("bob key"), ["mbx-bob-1", "mbx-bob-2"])
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST)  # the first mailbox fails
    action = w.receive(claim_destination=bob)
    w.pay(action)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    assert [v.pubkey for v in w.world.server.mailbox("mbx-bob-2")] == [bob.pubkey]
    assert w.world.server.mailbox("mbx-bob-1") == []
    assert w.svc.wallet.settled_receive(hash_of(action)) == AMOUNT
    [movement] = [m for m in w.svc.wallet.movements() if m.action_id == action.id]
    assert movement.status is MovementStatus.SUCCESSFUL and movement.effective_balance == 0
    assert movement.metadata["sent_to"] == bob.pubkey
    assert w.problems() == []


def test_delivery_retries_until_a_mailbox_accepts(w: Wallet) -> None:
    bob = ArkAddress(digest("bob key"), ["mbx-bob"])
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST, times=2)
    action = w.receive(claim_destination=bob)
    w.pay(action)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    assert len(w.world.server.mailbox("mbx-bob")) == 1


# -- unpaid, canceled, refused -----------------------------------------------------------------


def test_unpaid_invoice_expires_after_the_grace(w: Wallet) -> None:
    action = w.receive()
    w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    w.world.advance_time(3600 + 30)  # expired, but inside the 60 s grace
    assert w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE).status is fsm.DriveStatus.PARKED
    w.world.advance_time(31)
    assert w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE).status is fsm.DriveStatus.DONE
    assert w.svc.wallet.movement_of(action.id) is None
    assert receive_outcome(w.store, w.svc, hash_of(action)) is ReceiveOutcome.GONE
    assert w.problems() == []


def test_cancel_goes_through_the_table(w: Wallet) -> None:
    action = w.receive()
    w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    result = run(cancel_receive(w.ex, hash_of(action)))
    assert result.status is fsm.DriveStatus.FAILED and "canceled" in str(result.error)
    status = run(w.svc.server.check_lightning_receive(hash_of(action)))
    assert status.state is ReceiveState.CANCELED
    assert w.problems() == []


def test_server_cancel_is_seen_by_the_poll(w: Wallet) -> None:
    action = w.receive()
    run(w.svc.server.cancel_lightning_receive(hash_of(action), "someone.cancel"))
    assert w.drive(action).status is fsm.DriveStatus.FAILED


def test_cancel_needs_an_unpaid_receive(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    with pytest.raises(ReceiveNotInState):
        run(cancel_receive(w.ex, hash_of(action)))


@pytest.mark.parametrize("fault", [Fault.REJECT_NOT_FOUND, Fault.REJECT_INVALID_ARGUMENT])
def test_server_rejection_while_awaiting_payment_fails(w: Wallet, fault: Fault) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("prepare_lightning_receive_claim", fault)
    result = w.drive(action)
    assert result.status is fsm.DriveStatus.FAILED and isinstance(result.error, fsm.Rejected)
    assert w.svc.wallet.movement_of(action.id) is None
    assert w.store.all_resources() == {}
    assert w.problems() == []


def test_grant_too_close_to_the_claim_deadline_is_rejected(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("prepare_lightning_receive_claim", Fault.LOSE_RESPONSE)
    parked = w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    assert parked.status is fsm.DriveStatus.PARKED  # granted, but the answer was lost
    w.world.mine(5)  # the granted expiry no longer leaves room for a unilateral claim
    result = w.drive(action)
    assert result.status is fsm.DriveStatus.FAILED and "grant rejected" in str(result.error)
    assert w.svc.wallet.movement_of(action.id) is None
    w.world.mine(60)  # the server takes the unclaimed HTLCs back and refunds the payer
    assert w.problems() == []


def test_a_stale_unsent_grant_request_is_pinned_again(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("prepare_lightning_receive_claim", Fault.DROP_REQUEST)
    w.drive(action, fsm.DriveMode.UNTIL_PARK_OR_DONE)
    w.world.mine(5)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    assert w.problems() == []


# -- faults after the payment ------------------------------------------------------------------


@pytest.mark.parametrize(
    "rpc",
    ["prepare_lightning_receive_claim", "claim_lightning_receive", "register_vtxo_transactions"],
)
def test_lost_responses_are_replayed_not_reapplied(w: Wallet, rpc: str) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault(rpc, Fault.LOSE_RESPONSE, times=2)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    [entry] = [e for e in w.world.ledger.entries() if e.rpc == rpc]
    assert (entry.applied, entry.attempts) == (1, 3)
    assert w.problems() == []


def test_claim_budget_parks_pending_then_a_later_drive_finishes(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("claim_lightning_receive", Fault.DROP_REQUEST, times=6)
    result = w.drive(action)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "preimage_revealed"
    assert "retry budget exhausted" in str(result.error)
    row = w.store.row(action.id)
    assert row is not None and row.attempts == 5 and row.wake_at is None
    again = w.drive(action)  # the sixth attempt fails too: still over budget, still pending
    assert again.status is fsm.DriveStatus.PARKED and "budget" in str(again.error)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    assert w.problems() == []


def test_claim_rejection_keeps_the_receive_pending(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("claim_lightning_receive", Fault.REJECT_INVALID_ARGUMENT)
    result = w.drive(action)
    assert result.status is fsm.DriveStatus.PARKED and result.state == "preimage_revealed"
    assert isinstance(result.error, Exception) and "rejected" in str(result.error)
    assert w.drive(action).status is fsm.DriveStatus.DONE


def test_htlcs_near_expiry_are_abandoned_before_the_reveal(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.stops_at = "htlcs_ready"
    with pytest.raises(Interrupted):
        w.drive(action)
    w.stops_at = None
    w.world.mine(45)  # within vtxo_refresh_expiry_threshold (12) of the HTLC expiry (+50)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    movement = w.svc.wallet.movement_of(action.id)
    assert movement is not None and movement.status is MovementStatus.CANCELED
    assert movement.effective_balance == 0
    assert w.applied("claim_lightning_receive") == 0
    w.world.mine(10)
    assert w.problems() == []


def test_exit_after_the_reveal(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    w.world.script_fault("claim_lightning_receive", Fault.REJECT_NOT_FOUND)
    assert w.drive(action).state == "preimage_revealed"
    run(exit_receive(w.ex, hash_of(action)))
    assert w.store.row(action.id) is None and w.store.all_resources() == {}
    movement = w.svc.wallet.movement_of(action.id)
    assert movement is not None and movement.status is MovementStatus.FAILED
    assert w.svc.wallet.settled_receive(hash_of(action)) == AMOUNT - FEE
    exited = [v for v, s in w.svc.wallet.vtxos() if s is VtxoState.EXITED]
    assert len(exited) == 1 and exited[0].amount == AMOUNT - FEE


def test_settled_on_the_server_walks_forward_instead_of_retrying(w: Wallet) -> None:
    action = w.receive()
    w.pay(action)
    assert w.drive(action).status is fsm.DriveStatus.DONE
    # A start delivered again is recognised: the kept outcome, nothing runs twice.
    assert run(w.ex.start(action)).status is fsm.StartStatus.ENDED
    # The same receive again from the start (as if its checkpoint were older than the server).
    assert run(w.ex.start(action, again=True))
    assert w.drive(action).status is fsm.DriveStatus.DONE
    assert w.applied("claim_lightning_receive") == 1
    assert w.problems() == []


# -- idempotency of each step ------------------------------------------------------------------


def step_twice(w: Wallet, action: Any) -> Any:
    """Run one step twice from the same stored state, as a crash before the commit would."""
    row = w.store.row(action.id)
    assert row is not None
    outcomes = []
    for _ in range(2):
        claimed = w.store.claim(action.id, "test", w.world.clock.now())
        assert isinstance(claimed, fsm.store.Claimed)
        ctx = fsm.StepContext(
            w.svc, action.id, claimed.seq, 0, w.world.clock.now(), SEED_POLICY,
            logging.LoggerAdapter(logging.getLogger("test")),
            lambda: w.store.resources_of(action.id), w.store.holder_of,
        )  # fmt: skip
        before = [(e.key, e.applied) for e in w.world.ledger.entries()]
        outcomes.append((run(action.advance(ctx)), before))
        w.store.unclaim(action.id, claimed.epoch)
    (first, _), (second, ledger_before_second) = outcomes
    assert first == second
    assert [(e.key, e.applied) for e in w.world.ledger.entries()] == ledger_before_second
    return first


@pytest.mark.parametrize("external", [False, True])
def test_every_step_twice_gives_the_same_outcome_and_no_second_effect(
    w: Wallet, external: bool
) -> None:
    dest = ArkAddress(digest("carol"), ["mbx-carol"]) if external else None
    action: Any = w.receive(claim_destination=dest)
    w.pay(action)
    states = []
    while True:
        states.append(action.state)
        outcome = step_twice(w, action)
        if not isinstance(outcome, fsm.Next):
            assert isinstance(outcome, fsm.Done)
            break
        action = outcome.state
        claimed = w.store.claim(action.id, "test", w.world.clock.now())
        assert isinstance(claimed, fsm.store.Claimed)
        was = claimed.bookkeeping
        w.store.write(
            action.id, claimed.epoch, state=action.state,
            payload=LightningReceiveKind.__fsm_codec__.dump(action)[1].decode(),
            seq=claimed.seq + 1, was=was,
            new=fsm.store.Bookkeeping(1, 0, None, 0.0, None),
            acquired=(), released=(), entry=fsm.store.LogEntry(
                "lightning_receive", claimed.seq, "x", action.state, "next", "step", 0, None, 0.0
            ), now=w.world.clock.now(),
        )  # fmt: skip
    expected = ["awaiting_payment", "awaiting_payment", "htlcs_ready", "preimage_revealed"]
    assert states == [*expected, "delivering"] if external else expected


# -- SIGKILL -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kill_after", [1, 2, 3, 4])
def test_resumes_after_sigkill_right_after_a_commit(tmp_path: Path, kill_after: int) -> None:
    child = [sys.executable, str(SUPPORT / "lnrecv_child.py"), str(tmp_path)]
    killed = subprocess.run([*child, str(kill_after)], cwd=REPO, capture_output=True, check=False)
    assert killed.returncode == -9, killed.stderr.decode()
    finished = subprocess.run(child, cwd=REPO, capture_output=True, check=False)
    assert finished.returncode == 0, finished.stderr.decode()
    world = make_world(tmp_path / "world", seed=5)
    store = fsm.Store.sqlite(tmp_path / "fsm.sqlite")
    wallet = world.wallet_store(store.holder_of)
    assert store.rows() == []
    assert len(wallet.movements()) == 1
    assert wallet.movements()[0].status is MovementStatus.SUCCESSFUL
    assert check_wallet_invariants(world, wallet, store) == []

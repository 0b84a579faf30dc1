"""The arkoor send kind against the simulated world: reference 2.3, state by state."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from processes import after_call, after_commits
from wallet_rig import DoubleStepper, Rig, kill_then_resume, payee

import fsm
from fsm_bark.arkoor_send import (
    DELIVERY_ATTEMPTS,
    ArkoorSendKind,
    start_arkoor_send,
)
from fsm_bark.model import MovementStatus, Network, VtxoState, vtxo_resource
from fsm_bark.services.wallet import InsufficientFunds
from fsm_bark.sim import Fault


@pytest.fixture
def w(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path)
    yield rig
    rig.close()


def fund(w: Rig) -> list[str]:
    return [v.id for v in w.world.fund_vtxos(w.wallet, [50_000, 30_000])]


def send(w: Rig, amount: int = 20_000, **kw: int) -> fsm.DriveResult:
    """Start a send to ``payee(**kw)`` and drive it until it ends."""

    async def go() -> fsm.DriveResult:
        action_id = await w.start(await start_arkoor_send(w.services, payee(**kw), amount))
        return await w.drive(action_id, fsm.DriveMode.UNTIL_DONE)

    return asyncio.run(go())


def states(w: Rig, action_id: str) -> list[tuple[str, str | None, str]]:
    return [(t.from_state, t.to_state, t.via) for t in w.store.transitions(action_id)]


def the_movement(w: Rig) -> tuple[str, object]:
    [m] = w.wallet.movements()
    assert m.action_id is not None
    return m.action_id, m


def test_happy_path_sends_stores_change_and_finishes_the_movement(w: Rig) -> None:
    big, small = fund(w)
    result = send(w)
    assert result.status is fsm.DriveStatus.DONE, result
    action_id, m = the_movement(w)
    assert [s[:2] for s in states(w, action_id)] == [
        ("cosigning", "registration"),
        ("registration", "delivery"),
        ("delivery", "finalizing"),
        ("finalizing", None),
    ]
    # largest first: the 50k input; 30k change > 20k payment -> two pieces (split factor 2)
    assert w.wallet.vtxo_state(big) is VtxoState.SPENT
    assert w.wallet.vtxo_state(small) is VtxoState.SPENDABLE
    change = [v for v, s in w.wallet.vtxos(VtxoState.SPENDABLE) if v.id != small]
    assert sorted(v.amount for v in change) == [15_000, 15_000]
    assert m.status is MovementStatus.SUCCESSFUL
    assert (m.intended_balance, m.effective_balance, m.fee) == (-20_000, -20_000, 0)
    assert m.consumed == [big] and m.produced == sorted(v.id for v in change)
    [posted] = w.world.server.mailbox(payee().mailbox_ids[0])
    assert posted.amount == 20_000 and posted.pubkey == payee().pubkey
    rpcs = [(e.rpc, e.applied) for e in w.world.ledger.entries() if e.action_id == action_id]
    assert rpcs == [
        ("request_arkoor_cosign", 1),
        ("register_vtxo_transactions", 1),
        ("post_to_mailbox", 1),
    ]
    assert w.store.all_resources() == {}
    assert w.problems() == []


def test_no_change_means_no_change_pieces(w: Rig) -> None:
    [only] = [v.id for v in w.world.fund_vtxos(w.wallet, [20_000])]
    assert send(w).status is fsm.DriveStatus.DONE
    assert w.wallet.vtxos(VtxoState.SPENDABLE) == []
    assert w.wallet.vtxo_state(only) is VtxoState.SPENT
    assert w.problems() == []


def test_inputs_are_held_from_the_first_checkpoint_and_skipped_by_the_next_send(
    w: Rig,
) -> None:
    big, small = fund(w)
    first, resources = asyncio.run(start_arkoor_send(w.services, payee(), 20_000))
    assert resources == [vtxo_resource(big)]
    assert w.store.all_resources() == {}  # nothing held before the checkpoint exists
    assert asyncio.run(w.executor.start(first, resources=resources))
    assert w.store.resources_of(first.id) == [vtxo_resource(big)]
    second, resources = asyncio.run(start_arkoor_send(w.services, payee("b"), 10_000))
    assert resources == [vtxo_resource(small)]
    with pytest.raises(fsm.ResourceConflict):  # same input as the first: refused at start
        asyncio.run(w.executor.start(second, resources=[vtxo_resource(big)]))
    with pytest.raises(InsufficientFunds):
        # the 50k is held, 30k is not enough
        asyncio.run(start_arkoor_send(w.services, payee("c"), 40_000))
    for action_id in (first.id,):
        result = asyncio.run(w.executor.drive(action_id, fsm.DriveMode.UNTIL_DONE))
        assert result.status is fsm.DriveStatus.DONE
    assert w.problems() == []


def test_bad_arguments_are_refused_before_anything_is_written(w: Rig) -> None:
    fund(w)
    with pytest.raises(ValueError, match="positive"):
        asyncio.run(start_arkoor_send(w.services, payee(), 0))
    with pytest.raises(ValueError, match="mailbox"):
        asyncio.run(start_arkoor_send(w.services, payee(mailboxes=0), 1_000))
    address = payee()
    wrong = type(address)(address.pubkey, address.mailbox_ids, Network.SIGNET)
    with pytest.raises(ValueError, match="signet"):
        asyncio.run(start_arkoor_send(w.services, wrong, 1_000))
    assert w.store.rows() == [] and w.wallet.movements() == []


def test_cosign_rejection_fails_and_releases_the_inputs(w: Rig) -> None:
    big, _ = fund(w)
    w.world.script_fault("request_arkoor_cosign", Fault.REJECT_INVALID_ARGUMENT)
    result = send(w)
    assert result.status is fsm.DriveStatus.FAILED
    assert w.store.rows() == [] and w.store.all_resources() == {}
    assert w.wallet.vtxo_state(big) is VtxoState.SPENDABLE
    assert w.wallet.movements() == []  # bark: no movement exists yet
    assert w.problems() == []


def test_a_refused_retry_after_a_lost_cosign_answer_asks_the_server_first(w: Rig) -> None:
    """The spend happened but its answer was lost; the retry is refused. Cancelling would
    release inputs the server has spent: the send asks, finds them spent, and adopts it."""
    fund(w)
    w.world.script_fault("request_arkoor_cosign", Fault.LOSE_RESPONSE)
    w.world.script_fault("request_arkoor_cosign", Fault.REJECT_INVALID_ARGUMENT)
    w.world.script_fault("request_arkoor_cosign", Fault.REJECT_INVALID_ARGUMENT)
    result = send(w)  # the adopting replay is refused too: parked, nothing released
    assert (result.status, result.state) == (fsm.DriveStatus.PARKED, "cosign_refused")
    assert w.store.all_resources() != {}  # the inputs stay held: the server spent them
    # locked, as bark's are during the spend: not spendable, and no invariant is broken
    [locked] = w.wallet.locked_vtxos()
    assert locked.id not in {v.id for v in w.wallet.spendable_vtxos()}
    assert w.problems() == []
    assert asyncio.run(w.executor.notify(result.id)).status is fsm.DriveStatus.DONE
    action_id, m = the_movement(w)
    assert ("cosigning", "cosign_refused", "rejection") in states(w, action_id)
    assert m.status is MovementStatus.SUCCESSFUL
    assert w.applied_by("request_arkoor_cosign") == 1
    assert w.problems() == []


def test_registration_rejection_still_delivers(w: Rig) -> None:
    fund(w)
    w.world.script_fault("register_vtxo_transactions", Fault.REJECT_NOT_FOUND)
    assert send(w).status is fsm.DriveStatus.DONE
    action_id, m = the_movement(w)
    assert ("registration", "delivery", "rejection") in states(w, action_id)
    assert m.status is MovementStatus.SUCCESSFUL
    assert len(w.world.server.mailbox(payee().mailbox_ids[0])) == 1
    assert w.problems() == []


def test_delivery_refused_by_every_mailbox_salvages_the_change(w: Rig) -> None:
    fund(w)
    w.world.script_fault("post_to_mailbox", Fault.REJECT_INVALID_ARGUMENT, times=2)
    result = send(w, mailboxes=2)
    assert result.status is fsm.DriveStatus.DONE
    action_id, m = the_movement(w)
    assert states(w, action_id)[-2:] == [
        ("delivery", "salvaging", "rejection"),
        ("salvaging", None, "step"),
    ]
    assert m.status is MovementStatus.FAILED
    assert len(m.produced) == 2  # change kept
    assert w.store.all_resources() == {}
    assert w.problems() == []


def test_one_accepting_mailbox_is_enough(w: Rig) -> None:
    fund(w)
    w.world.script_fault("post_to_mailbox", Fault.REJECT_INVALID_ARGUMENT)
    assert send(w, mailboxes=2).status is fsm.DriveStatus.DONE
    _, m = the_movement(w)
    assert m.status is MovementStatus.SUCCESSFUL
    assert w.world.server.mailbox(payee(mailboxes=2).mailbox_ids[0]) == []
    assert len(w.world.server.mailbox(payee(mailboxes=2).mailbox_ids[1])) == 1


def test_delivery_failing_for_the_whole_budget_salvages(w: Rig) -> None:
    fund(w)
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST, times=DELIVERY_ATTEMPTS)
    t0 = w.world.clock.now()
    result = send(w)
    assert result.status is fsm.DriveStatus.DONE
    action_id, m = the_movement(w)
    retries = [s for s in states(w, action_id) if s[0] == "delivery" and s[2] == "retry"]
    assert len(retries) == DELIVERY_ATTEMPTS
    assert retries[-1][1] == "salvaging"  # the spent budget takes the rejection route
    assert w.world.clock.now() - t0 == 60.0 * (DELIVERY_ATTEMPTS - 1)  # parked 60 s each
    assert m.status is MovementStatus.FAILED
    assert w.problems() == []


def test_a_transient_delivery_failure_is_retried_after_60_seconds(w: Rig) -> None:
    fund(w)
    w.world.script_fault("post_to_mailbox", Fault.DROP_REQUEST)
    action, resources = asyncio.run(start_arkoor_send(w.services, payee(), 20_000))
    asyncio.run(w.executor.start(action, resources=resources))
    result = asyncio.run(w.executor.drive(action.id))
    assert result.status is fsm.DriveStatus.PARKED and result.state == "delivery"
    row = w.store.row(action.id)
    assert row is not None and row.wake_at == w.world.clock.now() + 60.0
    assert row.last_error is not None and "no mailbox accepted" in row.last_error
    w.world.advance_time(60)
    assert asyncio.run(w.executor.run_due()).count(fsm.DriveStatus.DONE) == 1
    assert w.problems() == []


@pytest.mark.parametrize(
    "rpc", ["request_arkoor_cosign", "register_vtxo_transactions", "post_to_mailbox"]
)
def test_a_lost_response_is_replayed_with_the_same_key(w: Rig, rpc: str) -> None:
    fund(w)
    w.world.script_fault(rpc, Fault.LOSE_RESPONSE)
    assert send(w).status is fsm.DriveStatus.DONE
    [entry] = [e for e in w.world.ledger.entries() if e.rpc == rpc]
    assert (entry.applied, entry.attempts) == (1, 2)  # applied once, then replayed
    assert w.problems() == []


def test_every_step_is_idempotent(w: Rig) -> None:
    fund(w)
    started = asyncio.run(start_arkoor_send(w.services, payee(mailboxes=2), 20_000))
    path = asyncio.run(DoubleStepper(w, *started).until_end())
    assert path == ["cosigning", "registration", "delivery", "finalizing", "Done"]
    _, m = the_movement(w)
    assert m.status is MovementStatus.SUCCESSFUL
    assert w.problems() == []


def test_diagram_states_match_the_reference() -> None:
    graph = ArkoorSendKind.graph()
    assert [s.name for s in graph.states] == [
        "cosigning",
        "cosign_refused",
        "registration",
        "delivery",
        "finalizing",
        "salvaging",
        "sent",
        "undelivered",
        "cancelled",
    ]


@pytest.mark.slow
@pytest.mark.parametrize(
    "rpc",
    [
        "request_arkoor_cosign",
        "register_vtxo_transactions",
        "post_to_mailbox",
        None,  # killed right after the delivery step committed
    ],
)
def test_sigkill_mid_send_resumes_in_a_new_process(tmp_path: Path, rpc: str | None) -> None:
    def inputs_still_held(w: Rig) -> None:
        [row] = w.store.rows()
        assert set(w.store.all_resources().values()) == {row.id}
        assert rpc is not None or row.state == "finalizing"

    kill = after_commits(3) if rpc is None else after_call(rpc)
    kill_then_resume(tmp_path, "start", "arkoor_send", kill=kill, while_dead=inputs_still_held)
    with Rig(tmp_path) as w:
        assert w.store.rows() == [] and w.store.all_resources() == {}
        _, m = the_movement(w)
        assert m.status is MovementStatus.SUCCESSFUL
        if rpc is not None:
            entry = next(e for e in w.world.ledger.entries() if e.rpc == rpc)
            assert (entry.applied, entry.attempts) == (1, 2)  # re-run with the same key
        assert w.problems() == []

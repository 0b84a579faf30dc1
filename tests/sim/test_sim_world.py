"""The simulated world is deterministic from its seed, persistent, and its wallet store keeps
the reference's idempotency rules."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from processes import after_call, died
from wallet_rig import run_child

import fsm
from fsm_bark.model import (
    MovementStatus,
    MovementUpdate,
    PubkeyPolicy,
    VtxoRequest,
    VtxoState,
    digest,
    vtxo_resource,
)
from fsm_bark.services.ark_server import ServerUnavailable
from fsm_bark.services.wallet import InsufficientFunds, VtxoStateError
from fsm_bark.sim import Faults, World, make_world
from fsm_bark.sim.wallet_store import SqliteWalletStore

NOISY = Faults(drop_request=0.2, lose_response=0.2, reject_invalid_argument=0.1, evict=0.3)


def scenario(world: World) -> list[str]:
    """Ten arkoor spends through a faulty server, each retried with its key until it lands."""
    wallet = world.wallet_store()
    vtxos = world.fund_vtxos(wallet, [1_000 * (i + 1) for i in range(10)])
    outcomes = []
    for i, v in enumerate(vtxos):
        out = [VtxoRequest(v.amount, PubkeyPolicy(digest("payee", i)))]
        for attempt in range(50):
            try:
                asyncio.run(world.rpc.request_arkoor_cosign([v.id], out, f"send{i}.1"))
            except (ServerUnavailable, fsm.Rejected) as exc:
                outcomes.append(f"{i}/{attempt}:{type(exc).__name__}")
                continue
            outcomes.append(f"{i}/{attempt}:ok")
            break
        world.mine(1)
    wallet.close()
    return outcomes


def test_same_seed_same_outcomes(tmp_path: Path) -> None:
    a = make_world(tmp_path / "a", seed=42, faults=NOISY)
    b = make_world(tmp_path / "b", seed=42, faults=NOISY)
    c = make_world(tmp_path / "c", seed=43, faults=NOISY)
    first, second, other = scenario(a), scenario(b), scenario(c)
    assert first == second
    assert a.gate.log() == b.gate.log()
    assert [e.key for e in a.ledger.entries()] == [e.key for e in b.ledger.entries()]
    assert any(not o.endswith("ok") for o in first)
    assert first != other


def test_reopened_world_keeps_its_state(tmp_path: Path) -> None:
    folder = tmp_path / "w"
    world = make_world(folder, seed=5, faults=Faults(lose_response=0.5))
    wallet = world.wallet_store()
    [v] = world.fund_vtxos(wallet, [7_000])
    world.fund_onchain(50_000)
    world.mine(3)
    world.advance_time(120)
    movement = wallet.get_or_create_movement(
        "act", "send", intended_balance=-1, effective_balance=-1, fee=0
    )
    counter = world.db.meta("rng_counter", "0")
    now = world.clock.now()
    ledger = world.ledger.entries()
    world.close()
    wallet.close()

    again = make_world(folder, seed=5)
    wallet2 = again.wallet_store()
    assert again.faults == Faults(lose_response=0.5)
    assert again.chain.tip() == 3
    assert again.clock.now() == now == 1_700_000_120.0
    assert again.server.vtxo(v.id) is not None
    assert again.onchain_wallet().balance() == 50_000
    assert again.ledger.entries() == ledger
    assert again.db.meta("rng_counter", "0") == counter
    assert wallet2.vtxo_state(v.id) is VtxoState.SPENDABLE
    assert wallet2.movement_of("act") == movement
    with pytest.raises(ValueError, match="seed 5"):
        make_world(folder, seed=6)


@pytest.mark.slow
def test_effects_survive_sigkill_of_the_caller(tmp_path: Path) -> None:
    proc = run_child(tmp_path, "cosign", kill=after_call("request_arkoor_cosign"))
    assert died(proc), proc.stderr
    vtxo_id = proc.stdout.strip()
    world = make_world(tmp_path / "world", seed=1)
    row = world.server.vtxo(vtxo_id)
    assert row is not None and row[1] == "spent"
    entry = world.ledger.entry("killed.1")
    assert entry is not None and entry.applied == 1
    assert world.wallet_store().vtxo_state(vtxo_id) is VtxoState.SPENDABLE


def test_vtxo_insert_if_absent_and_checked_transitions(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w", seed=1)
    wallet = world.wallet_store()
    [v] = world.fund_vtxos(wallet, [1_000])
    assert not wallet.insert_vtxo(v, VtxoState.SPENT)
    assert wallet.vtxo_state(v.id) is VtxoState.SPENDABLE
    spendable = frozenset({VtxoState.SPENDABLE})
    wallet.set_vtxo_state([v.id], VtxoState.SPENT, allowed_from=spendable)
    wallet.set_vtxo_state([v.id], VtxoState.SPENT, allowed_from=spendable)  # no-op
    with pytest.raises(VtxoStateError):
        wallet.set_vtxo_state([v.id], VtxoState.EXITED, allowed_from=spendable)
    with pytest.raises(VtxoStateError):
        wallet.set_vtxo_state(["missing:0"], VtxoState.SPENT, allowed_from=spendable)


def test_coin_selection_skips_held_and_excluded(tmp_path: Path) -> None:
    world = make_world(tmp_path / "w", seed=1)
    held: set[str] = set()
    wallet = SqliteWalletStore(
        tmp_path / "w" / "wallet.sqlite", "wallet", lambda r: "x" if r in held else None
    )
    big, mid, small = world.fund_vtxos(wallet, [5_000, 3_000, 1_000])
    assert wallet.select_coins(6_000) == [big, mid]
    held.add(vtxo_resource(big.id))
    assert wallet.select_coins(3_500) == [mid, small]
    assert wallet.spendable_vtxos(exclude=frozenset({mid.id})) == [small]
    with pytest.raises(InsufficientFunds):
        wallet.select_coins(4_500)


def test_movements_keys_and_facts_are_idempotent(tmp_path: Path) -> None:
    wallet = SqliteWalletStore(tmp_path / "wallet.sqlite")
    m = wallet.get_or_create_movement(
        "act", "send", intended_balance=-5, effective_balance=-5, fee=1, consumed=["b", "a"]
    )
    assert m.consumed == ["a", "b"]
    same = wallet.get_or_create_movement(
        "act", "other", intended_balance=0, effective_balance=0, fee=0
    )
    assert same == m
    wallet.update_movement(m.id, MovementUpdate(produced=["c"], metadata={"k": "v"}))
    wallet.update_movement(m.id, MovementUpdate(produced=["c"]))
    done = wallet.finish_movement(m.id, MovementStatus.SUCCESSFUL)
    assert done.produced == ["c"] and done.metadata == {"k": "v"}
    assert wallet.finish_movement(m.id, MovementStatus.FAILED).status is MovementStatus.SUCCESSFUL
    assert wallet.record_paid_invoice("h", "p", 5)
    assert not wallet.record_paid_invoice("h", "q", 6)
    assert wallet.paid_invoice("h") == "p"
    assert wallet.record_settled_receive("r", "p", 7) and wallet.settled_receive("r") == 7
    a, b = wallet.next_key_index(), wallet.next_key_index()
    assert (a, b) == (0, 1)
    assert wallet.key_index_of(wallet.derive_key(1)) == 1
    assert wallet.key_index_of(digest("foreign")) is None

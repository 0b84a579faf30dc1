"""The invariant checker passes on a consistent world and catches each violation seeded on
purpose: a double effect, spent-and-spendable, broken conservation, money lost while idle, an
orphaned resource."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from wallet_rig import KINDS, Rig

import fsm
from fsm_bark.model import (
    PubkeyPolicy,
    TxOut,
    Vtxo,
    VtxoRequest,
    VtxoState,
    board_address,
    digest,
    payment_hash_of,
    vtxo_resource,
)
from fsm_bark.services.ark_records import BoardRequest, HtlcSendRequest, OffboardRequest
from fsm_bark.sim.ark_state import LIVE
from fsm_bark.sim.wallet_invariants import balance

SPENDABLE = frozenset({VtxoState.SPENDABLE})


@attrs.frozen
class Hold(fsm.Action[Any]):
    """An action that only sits there, parked, holding what it was started with."""

    name = "hold"
    label: str

    @property
    def id(self) -> str:
        return f"hold.{self.label}"

    async def advance(self, ctx: fsm.StepContext[Any]) -> fsm.Outcome:
        return fsm.Park(self)


class Env(Rig):
    """The wallet rig, whose executor also knows `Hold`."""

    def __init__(self, tmp_path: Path) -> None:
        super().__init__(tmp_path, seed=11, kinds=[*KINDS, Hold])
        self.fsm_path = tmp_path / "fsm.sqlite"

    def run(self, coro: Any) -> Any:
        return asyncio.run(coro)

    def key(self) -> str:
        return self.wallet.derive_key(self.wallet.next_key_index())


@pytest.fixture
def env(tmp_path: Path) -> Iterator[Env]:
    with Env(tmp_path) as e:
        yield e


def test_a_consistent_world_through_every_flow_passes(env: Env) -> None:
    """Funding, arkoor with change, board, offboard, lightning send and receive: no violation
    at any point, and the books balance to the sat."""
    w, s, wallet = env.world, env.services, env.wallet
    a, b = w.fund_vtxos(wallet, [50_000, 30_000])
    w.fund_onchain(100_000)
    assert env.problems() == []
    env.run(env.executor.start(Hold("flows")))  # the wallet is busy: money may be in flight
    # arkoor: 20k away, 30k change back to us
    change_key = env.key()
    outs = [
        VtxoRequest(20_000, PubkeyPolicy(digest("bob"))),
        VtxoRequest(30_000, PubkeyPolicy(change_key)),
    ]
    created = env.run(s.server.request_arkoor_cosign([a.id], outs, "ark.1"))
    wallet.set_vtxo_state([a.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    assert env.problems() == []  # change in flight, counted as such
    assert balance(w, wallet).wallet_in_flight == 30_000
    wallet.insert_vtxo(created[1], VtxoState.SPENDABLE)
    # board
    pk = env.key()
    tx = s.onchain.build_tx([TxOut(board_address(pk), 40_000)], fee=500)
    board = env.run(s.server.request_board_cosign(BoardRequest(tx, 0, pk, 700, 200), "board.1"))
    wallet.insert_vtxo(board, VtxoState.SPENDABLE)
    assert env.problems() == []
    env.run(s.chain.broadcast(tx))
    assert balance(w, wallet).boards_in_flight == 40_000
    w.mine(2)
    env.run(s.server.register_board_vtxo(board, "board.2"))
    assert env.problems() == []
    # offboard the board vtxo
    info = env.run(s.server.info())
    req = OffboardRequest([board.id], "bc1q", board.amount - info.offboard_fee(1), True, 50)
    prepared = env.run(s.server.prepare_offboard(req, "off.1"))
    env.run(s.server.finish_offboard(prepared.unsigned_tx.txid, ["sig"], "off.2"))
    wallet.set_vtxo_state([board.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    assert env.problems() == []
    # lightning send of 10k from b, change to us
    invoice = env.run(s.lightning.create_invoice(10_000, "", "payee.1"))
    fee = info.lightning_send_fee(10_000)
    hk = env.key()
    change = [VtxoRequest(b.amount - 10_000 - fee, PubkeyPolicy(hk))]
    req2 = HtlcSendRequest([b.id], invoice, 10_000, hk, w.chain.tip() + 60, change, fee)
    htlc, chg = env.run(s.server.request_lightning_pay_htlc_cosign(req2, "pay.1"))
    wallet.set_vtxo_state([b.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    wallet.insert_vtxo(chg, VtxoState.SPENDABLE)
    env.run(s.server.initiate_lightning_payment(invoice, [htlc.id], 10_000, "mb", "pay.2"))
    assert env.run(s.server.check_lightning_payment(invoice.payment_hash)).preimage
    assert env.problems() == []
    # lightning receive of 5k from an outside payer
    preimage = digest("r")
    h = payment_hash_of(preimage)
    inv = env.run(s.server.start_lightning_receive(h, 5_000, 50, "mb", "", "recv.1"))
    env.run(s.lightning.pay_invoice(inv, "payer.1"))
    rk = env.key()
    grant = env.run(
        s.server.prepare_lightning_receive_claim(h, rk, w.chain.tip() + 50, None, "recv.2")
    )
    ids = [v.id for v in grant.htlc_vtxos]
    [claimed] = env.run(
        s.server.claim_lightning_receive(h, preimage, ids, PubkeyPolicy(rk), "recv.3")
    )
    wallet.insert_vtxo(claimed, VtxoState.SPENDABLE)
    env.run(env.executor.delete("hold.flows"))
    assert env.problems() == []
    books = balance(w, wallet)
    assert books.sources == books.uses == 180_000 + 5_000
    assert books.ln_out == 10_000 and books.offboard_out == req.net_amount


def test_catches_an_effect_applied_twice(env: Env) -> None:
    [v] = env.world.fund_vtxos(env.wallet, [1_000])
    out = [VtxoRequest(1_000, PubkeyPolicy(digest("x")))]
    env.run(env.services.server.request_arkoor_cosign([v.id], out, "a.1"))
    env.wallet.set_vtxo_state([v.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    assert env.problems() == []
    with env.world.db.transaction():
        env.world.db.run(
            "INSERT INTO ledger SELECT 'b.1', rpc, 'b', effect_id, summary, request_digest, "
            "response, 1, 1 FROM ledger WHERE key = 'a.1'"
        )
    assert any("applied 2 times" in p for p in env.problems())
    with env.world.db.transaction():
        env.world.db.run("DELETE FROM ledger WHERE key = 'b.1'")
        env.world.db.run("UPDATE ledger SET applied = 2 WHERE key = 'a.1'")
    assert any("'a.1'" in p and "2 times" in p for p in env.problems())


def test_catches_spent_on_the_server_but_spendable_in_the_wallet(env: Env) -> None:
    [v] = env.world.fund_vtxos(env.wallet, [1_000])
    out = [VtxoRequest(1_000, PubkeyPolicy(digest("x")))]
    env.run(env.services.server.request_arkoor_cosign([v.id], out, "a.1"))
    # the wallet forgot to mark its input spent
    assert any(f"vtxo {v.id} is spendable in the wallet but spent" in p for p in env.problems())
    env.wallet.set_vtxo_state([v.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    assert env.problems() == []


def test_a_locked_vtxo_may_be_spent_on_the_server_until_its_holder_lets_it_go(env: Env) -> None:
    """bark's Locked{Action}: the holder's spend happened, its answer was lost; the wallet
    does not show the VTXO as spendable, and the holder asks the server before releasing it.
    Released without being marked spent, it is spendable-but-spent again."""
    [v] = env.world.fund_vtxos(env.wallet, [1_000])
    env.run(env.executor.start(Hold("spender"), resources=[vtxo_resource(v.id)]))
    out = [VtxoRequest(1_000, PubkeyPolicy(digest("x")))]
    env.run(env.services.server.request_arkoor_cosign([v.id], out, "hold.spender.1"))
    assert env.wallet.locked_vtxos() == [v] and env.wallet.spendable_vtxos() == []
    assert env.problems() == []
    env.run(env.executor.delete("hold.spender"))
    assert env.wallet.locked_vtxos() == []
    assert any(f"vtxo {v.id} is spendable in the wallet but spent" in p for p in env.problems())


def test_catches_money_out_of_nothing(env: Env) -> None:
    env.world.fund_vtxos(env.wallet, [1_000])
    assert env.problems() == []
    free = Vtxo(f"{digest('free')}:0", 500, 900, PubkeyPolicy(digest("x")), digest("t"))
    with env.world.db.transaction():
        env.world.server.insert_vtxos([free], LIVE)
    problems = env.problems()
    assert any("not conserved" in p and "1000 != 1500" in p for p in problems)


def test_catches_change_lost_when_no_action_is_in_flight(env: Env) -> None:
    [v] = env.world.fund_vtxos(env.wallet, [1_000])
    out = [VtxoRequest(400, PubkeyPolicy(digest("x"))), VtxoRequest(600, PubkeyPolicy(env.key()))]
    created = env.run(env.services.server.request_arkoor_cosign([v.id], out, "a.1"))
    env.wallet.set_vtxo_state([v.id], VtxoState.SPENT, allowed_from=SPENDABLE)
    # the change was never stored: while an action is live it may still be in its checkpoint
    env.run(env.executor.start(Hold("sender")))
    assert env.problems() == []
    env.run(env.executor.delete("hold.sender"))
    assert any(f"vtxo {created[1].id}" in p and "no action in flight" in p for p in env.problems())


def test_catches_an_orphaned_resource(env: Env) -> None:
    [v] = env.world.fund_vtxos(env.wallet, [1_000])
    env.run(env.executor.start(Hold("a"), resources=[vtxo_resource(v.id)]))
    assert env.problems() == []
    assert env.wallet.spendable_vtxos() == []  # held: coin selection skips it
    # a crash of a buggy store could leave this; the foreign key normally forbids it
    raw = sqlite3.connect(env.fsm_path)
    raw.execute("PRAGMA foreign_keys = OFF")
    raw.execute(
        "INSERT INTO fsm_resource (name, action_id, acquired_at) VALUES (?, 'gone', 0)",
        (vtxo_resource("other:0"),),
    )
    raw.commit()
    raw.close()
    problems = env.problems()
    assert problems == [
        f"resource {vtxo_resource('other:0')} is held by gone, which has no row "
        "(finished or missing)"
    ]

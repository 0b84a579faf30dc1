"""The simulated bitcoin chain: blocks, mempool, broadcast, spends, eviction, conflicts,
and the relative timelock of unilateral exit outputs (`model.exit_address`).

Heights move only by `ChainState.mine`. A tx is *effective* while it is in the mempool or
confirmed; effective txs never conflict (the mempool refuses double spends: no RBF), and a
mined conflicting spend evicts the mempool txs it conflicts with, with their descendants.
`ChainState` is the synchronous core the server and the world use inside their transactions;
`SimChain` is the `ChainSource` a wallet sees.
"""

from __future__ import annotations

from ..model import (
    BOARD_PREFIX,
    OutPoint,
    Tx,
    TxOut,
    digest,
    exit_timelock,
    exited_vtxo,
    fee_anchor,
)
from ..services.chain import ChainRejected, SpendInfo, TxState, TxStatus
from .db import Db, dump, load
from .world_faults import FaultGate

CHAIN_SCHEMA = """
CREATE TABLE IF NOT EXISTS chain_tx (
    txid TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    state TEXT NOT NULL,
    height INTEGER,
    fee INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_spend (
    outpoint TEXT PRIMARY KEY,
    txid TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS chain_swept (vtxo_id TEXT PRIMARY KEY, height INTEGER NOT NULL)
"""

MEMPOOL = "mempool"
CONFIRMED = "confirmed"
DROPPED = "dropped"
CONFLICT_FEE = 100


class ChainState:
    def __init__(self, db: Db, gate: FaultGate) -> None:
        self.db = db
        self.gate = gate

    # -- reads ----------------------------------------------------------------------------

    def tip(self) -> int:
        return int(self.db.meta("tip", "0"))

    def tx(self, txid: str) -> Tx | None:
        row = self.db.one("SELECT body FROM chain_tx WHERE txid = ?", (txid,))
        return None if row is None else _tx(row[0])

    def status(self, txid: str) -> TxStatus:
        row = self.db.one("SELECT state, height FROM chain_tx WHERE txid = ?", (txid,))
        if row is None or row[0] == DROPPED:
            return TxStatus(TxState.NOT_FOUND)
        if row[0] == MEMPOOL:
            return TxStatus(TxState.MEMPOOL)
        return TxStatus(TxState.CONFIRMED, int(row[1]))

    def spent_by(self, outpoint: OutPoint) -> SpendInfo | None:
        row = self.db.one(
            "SELECT s.txid, t.height FROM chain_spend s JOIN chain_tx t ON t.txid = s.txid "
            "WHERE s.outpoint = ?",
            (str(outpoint),),
        )
        return None if row is None else SpendInfo(str(row[0]), row[1])

    def effective(self) -> list[tuple[Tx, int]]:
        """Every mempool or confirmed tx with its fee, in arrival order."""
        rows = self.db.all(
            "SELECT body, fee FROM chain_tx WHERE state != ? ORDER BY rowid", (DROPPED,)
        )
        return [(_tx(body), int(fee)) for body, fee in rows]

    def unspent(self, address_prefix: str) -> list[tuple[OutPoint, TxOut]]:
        """Effective outputs to addresses starting with ``address_prefix`` nobody spends."""
        out = []
        for tx, _ in self.effective():
            for vout, o in enumerate(tx.outputs):
                if o.address.startswith(address_prefix):
                    op = tx.outpoint(vout)
                    if self.spent_by(op) is None:
                        out.append((op, o))
        return out

    def confirmed_at(self, height: int) -> list[Tx]:
        rows = self.db.all(
            "SELECT body FROM chain_tx WHERE state = ? AND height = ? ORDER BY rowid",
            (CONFIRMED, height),
        )
        return [_tx(body) for (body,) in rows]

    def output(self, outpoint: OutPoint) -> TxOut | None:
        tx = self.tx(outpoint.txid)
        if tx is None or outpoint.vout >= len(tx.outputs):
            return None
        return tx.outputs[outpoint.vout]

    # -- writes ---------------------------------------------------------------------------

    def mint(self, address: str, amount: int, tag: str) -> OutPoint:
        """A confirmed coin out of nothing (coinbase-like), idempotent per ``tag``."""
        tx = Tx(digest("mint", tag, address, amount), [], [TxOut(address, amount)], True)
        with self.db.transaction():
            self.db.run(
                "INSERT OR IGNORE INTO chain_tx (txid, body, state, height, fee) "
                "VALUES (?, ?, ?, ?, 0)",
                (tx.txid, dump(tx), CONFIRMED, self.tip()),
            )
        return tx.outpoint(0)

    def broadcast(self, tx: Tx) -> None:
        if not tx.signed:
            raise ChainRejected(f"tx {tx.txid} is not signed", missing_inputs=False)
        with self.db.transaction():
            if self.status(tx.txid).state is not TxState.NOT_FOUND:
                return
            self._check_swept(tx)
            total_in = 0
            for op in tx.inputs:
                parent = self.db.one(
                    "SELECT state FROM chain_tx WHERE txid = ? AND state != ?", (op.txid, DROPPED)
                )
                out = self.output(op)
                if parent is None or out is None:
                    raise ChainRejected(f"missing input {op}", missing_inputs=True)
                spender = self.spent_by(op)
                if spender is not None:
                    raise ChainRejected(
                        f"input {op} already spent by {spender.txid}", missing_inputs=True
                    )
                self._check_timelock(op, out)
                total_in += out.amount
            fee = total_in - sum(o.amount for o in tx.outputs)
            if tx.inputs and fee < 0:
                raise ChainRejected(
                    f"tx {tx.txid} spends more than its inputs", missing_inputs=False
                )
            self.db.run(
                "INSERT INTO chain_tx (txid, body, state, height, fee) VALUES (?, ?, ?, NULL, ?) "
                "ON CONFLICT (txid) DO UPDATE SET state = excluded.state, height = NULL",
                (tx.txid, dump(tx), MEMPOOL, max(fee, 0)),
            )
            for op in tx.inputs:
                self.db.run(
                    "INSERT INTO chain_spend (outpoint, txid) VALUES (?, ?)", (str(op), tx.txid)
                )

    def sweep_tree(self, vtxo_id: str) -> None:
        """The server's sweep spends the tree output ``vtxo_id``'s exit path hangs from (the
        anchor the sim leaves off chain): its exit txs in the mempool are evicted, and the
        chain refuses them from now on (an input spent, as a real node would say)."""
        with self.db.transaction():
            self.db.run(
                "INSERT OR IGNORE INTO chain_swept (vtxo_id, height) VALUES (?, ?)",
                (vtxo_id, self.tip()),
            )
            for tx, _ in self._mempool():
                if any(exited_vtxo(o.address) == vtxo_id for o in tx.outputs):
                    self.evict(tx.txid)

    def _check_swept(self, tx: Tx) -> None:
        for out in tx.outputs:
            vtxo_id = exited_vtxo(out.address)
            swept = vtxo_id is not None and self.db.one(
                "SELECT height FROM chain_swept WHERE vtxo_id = ?", (vtxo_id,)
            )
            if swept:
                raise ChainRejected(
                    f"exit tx {tx.txid}: the tree output of {vtxo_id} was swept by the server "
                    f"at height {swept[0]}",
                    missing_inputs=True,
                )

    def _check_timelock(self, op: OutPoint, out: TxOut) -> None:
        """An exit output is spendable ``delta`` blocks after it confirmed (BIP 68: in the
        block at height ``confirmed + delta``), never from the mempool."""
        delta = exit_timelock(out.address)
        if delta is None:
            return
        status = self.status(op.txid)
        if status.state is not TxState.CONFIRMED or status.height is None:
            raise ChainRejected(f"input {op} is timelocked: not confirmed", missing_inputs=False)
        if self.tip() + 1 < status.height + delta:
            raise ChainRejected(
                f"input {op} is timelocked until height {status.height + delta}",
                missing_inputs=False,
            )

    def evict(self, txid: str) -> None:
        """Drop a mempool tx and every mempool tx spending its outputs."""
        with self.db.transaction():
            if self.status(txid).state is not TxState.MEMPOOL:
                return
            self.db.run("UPDATE chain_tx SET state = ? WHERE txid = ?", (DROPPED, txid))
            self.db.run("DELETE FROM chain_spend WHERE txid = ?", (txid,))
            children = self.db.all(
                "SELECT DISTINCT txid FROM chain_spend WHERE outpoint LIKE ?", (f"{txid}:%",)
            )
            for (child,) in children:
                self.evict(str(child))

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks, each confirming the whole mempool after the chain faults
        (eviction, conflicting spend of a board funding tx) drawn per tx. Returns the tip."""
        for _ in range(blocks):
            with self.db.transaction():
                for tx, _fee in self._mempool():
                    if self.gate.chance(self.gate.faults.evict):
                        self.evict(tx.txid)
                    elif _funds_board(tx) and self.gate.chance(self.gate.faults.conflict):
                        self._replace_with_conflict(tx)
                self._confirm_block()
        return self.tip()

    def double_spend(self, tx: Tx) -> Tx:
        """Mine, in a new block, a tx spending ``tx``'s inputs to an external address,
        evicting ``tx`` (and descendants) from the mempool if it is there."""
        with self.db.transaction():
            conflict = self._replace_with_conflict(tx)
            self._confirm_block()
        return conflict

    def _replace_with_conflict(self, tx: Tx) -> Tx:
        if self.status(tx.txid).state is TxState.CONFIRMED:
            raise ValueError(f"tx {tx.txid} is confirmed; it can no longer be double-spent")
        self.evict(tx.txid)
        for op in tx.inputs:
            spender = self.spent_by(op)
            if spender is not None:
                self.evict(spender.txid)
        value = sum(o.amount for op in tx.inputs if (o := self.output(op)) is not None)
        conflict = Tx.build(
            list(tx.inputs),
            [TxOut(f"external:conflict-{tx.txid[:16]}", value - CONFLICT_FEE)],
            signed=True,
        )
        self.broadcast(conflict)
        return conflict

    def _mempool(self) -> list[tuple[Tx, int]]:
        rows = self.db.all(
            "SELECT body, fee FROM chain_tx WHERE state = ? ORDER BY rowid", (MEMPOOL,)
        )
        return [(_tx(body), int(fee)) for body, fee in rows]

    def _confirm_block(self) -> None:
        """Mine the mempool, but for a tx with an unspent fee anchor: it pays no fee, so no
        miner takes it until a child spends the anchor and pays for both (CPFP)."""
        height = self.tip() + 1
        self.db.set_meta("tip", str(height))
        for tx, _ in self._mempool():
            if self._unbumped(tx):
                continue
            self.db.run(
                "UPDATE chain_tx SET state = ?, height = ? WHERE txid = ?",
                (CONFIRMED, height, tx.txid),
            )

    def _unbumped(self, tx: Tx) -> bool:
        anchor = fee_anchor(tx)
        return anchor is not None and self.spent_by(anchor) is None


def _funds_board(tx: Tx) -> bool:
    return bool(tx.inputs) and any(o.address.startswith(BOARD_PREFIX) for o in tx.outputs)


def _tx(body: str) -> Tx:
    tx: Tx = load(body, Tx)
    return tx


class SimChain:
    """`ChainSource` over the simulated chain."""

    def __init__(self, state: ChainState) -> None:
        self.state = state

    async def tip_height(self) -> int:
        return self.state.tip()

    async def tx_status(self, txid: str) -> TxStatus:
        return self.state.status(txid)

    async def get_tx(self, txid: str) -> Tx | None:
        return self.state.tx(txid)

    async def broadcast(self, tx: Tx) -> None:
        self.state.broadcast(tx)

    async def spent_by(self, outpoint: OutPoint) -> SpendInfo | None:
        return self.state.spent_by(outpoint)

"""Unilateral exits as the simulated server and the world's books see them.

A wallet exits a VTXO by broadcasting its exit path (`model.exit_path`: ``depth + 1`` txs,
each confirmed before the next can follow) and, once the last one's output has waited out
its relative timelock, a claim of that output to its on-chain address (the `exit` kind).
The server watches the chain: once any exit tx of a live VTXO confirms, the VTXO is
``exited`` and no longer spendable out of round (`watch_exits`, run by `World.mine`).

For conservation, an exited VTXO's money is on its way to the chain until the claim spends
the exit output (`exits_in_flight`); from then on it is the wallet's on-chain coin (and the
claim's fee an on-chain fee). An exit of a VTXO the server had already spent is never
marked: its claim would make money, which the conservation check reports.
"""

from __future__ import annotations

from ..model import EXIT_PREFIX, OutPoint, exited_vtxo
from .ark_state import BOARD_PENDING, EXITED, LIVE
from .chain import ChainState
from .db import Db
from .ledger import Flow, Ledger


def watch_exits(db: Db, chain: ChainState, ledger: Ledger, height: int) -> list[str]:
    """Mark ``exited`` every live (or board-pending) VTXO an exit tx confirmed at ``height``
    belongs to. A board exited before its registration leaves its funding output to the
    exit (no longer a board in flight), and the board fee its VTXO was cut by goes to the
    server's fees, as a registration would have."""
    marked = []
    for tx in chain.confirmed_at(height):
        for out in tx.outputs:
            vtxo_id = exited_vtxo(out.address)
            row = (
                None
                if vtxo_id is None
                else db.one("SELECT status, amount FROM srv_vtxo WHERE id = ?", (vtxo_id,))
            )
            if vtxo_id is None or row is None or row[0] not in (LIVE, BOARD_PENDING):
                continue
            db.run(
                "UPDATE srv_vtxo SET status = ?, spent_by = ? WHERE id = ?",
                (EXITED, tx.txid, vtxo_id),
            )
            board = db.one("SELECT gross FROM srv_board WHERE vtxo_id = ?", (vtxo_id,))
            if row[0] == BOARD_PENDING and board is not None:
                fee = int(board[0]) - int(row[1])
                ledger.flow(f"server.exit.{vtxo_id}", Flow.SERVER_FEE, fee, f"board {vtxo_id}")
            marked.append(vtxo_id)
    return marked


def exits_in_flight(db: Db, chain: ChainState) -> int:
    """Sats of exited VTXOs whose exit output no effective claim spends yet."""
    claimed: set[str] = set()
    for tx, _ in chain.effective():
        for vout, out in enumerate(tx.outputs):
            vtxo_id = exited_vtxo(out.address)
            final = out.address.startswith(EXIT_PREFIX) and vtxo_id is not None
            if final and chain.spent_by(OutPoint(tx.txid, vout)) is not None:
                claimed.add(str(vtxo_id))
    rows = db.all("SELECT id, amount FROM srv_vtxo WHERE status = ?", (EXITED,))
    return sum(int(amount) for vid, amount in rows if vid not in claimed)


__all__ = ["exits_in_flight", "watch_exits"]

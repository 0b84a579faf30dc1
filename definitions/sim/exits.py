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
from .ark_state import EXITED, LIVE
from .chain import ChainState
from .db import Db


def watch_exits(db: Db, chain: ChainState, height: int) -> list[str]:
    """Mark ``exited`` every live VTXO an exit tx confirmed at ``height`` belongs to."""
    marked = []
    for tx in chain.confirmed_at(height):
        for out in tx.outputs:
            vtxo_id = exited_vtxo(out.address)
            if vtxo_id is None:
                continue
            cur = db.run(
                "UPDATE srv_vtxo SET status = ?, spent_by = ? WHERE id = ? AND status = ?",
                (EXITED, tx.txid, vtxo_id, LIVE),
            )
            if cur.rowcount:
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

"""The server's sweep: after a VTXO's expiry the server takes its funds back (Ark's rule:
the round tree's outputs become the server's at expiry, which is what lets it free the
liquidity it locked). A wallet that neither refreshed the VTXO in a round nor exited it in
time loses it.

`sweep_expired` runs after every block of `World.mine`, after `exits.watch_exits` (an exit
confirming in the expiry block saves the VTXO): every live plain VTXO whose
``expiry_height`` the tip reached is marked ``swept``, its tree output is spent on chain
(`ChainState.sweep_tree`: its exit txs are evicted and refused from then on), and its amount
goes to the ledger's ``swept`` flow under ``server.sweep.<vtxo id>``.

Not swept: HTLC VTXOs (their own, earlier expiries decide them: the send's revocation or
settlement, the receive's grant expiry), a board not registered yet (its funding output is
on chain; the board kind exits it near expiry), and VTXOs exited already.
"""

from __future__ import annotations

from ..model import Vtxo
from .ark_state import LIVE, SWEPT
from .chain import ChainState
from .db import Db, load
from .ledger import Flow, Ledger

SWEEP_PREFIX = "sweep:"
"""``spent_by`` of a swept VTXO: ``sweep:<height>``."""


def sweep_expired(db: Db, chain: ChainState, ledger: Ledger, height: int) -> list[str]:
    """Sweep every live plain VTXO expired at ``height``; returns their ids."""
    swept = []
    rows = db.all("SELECT id, body FROM srv_vtxo WHERE status = ? AND plain = 1", (LIVE,))
    for vtxo_id, body in rows:
        vtxo: Vtxo = load(body, Vtxo)
        if vtxo.expiry_height > height:
            continue
        db.run(
            "UPDATE srv_vtxo SET status = ?, spent_by = ? WHERE id = ?",
            (SWEPT, f"{SWEEP_PREFIX}{height}", vtxo_id),
        )
        chain.sweep_tree(str(vtxo_id))
        key = f"server.sweep.{vtxo_id}"
        ledger.flow(key, Flow.SWEPT, vtxo.amount, f"swept {vtxo_id} at {height}")
        ledger.record(
            key, "sweep", "", f"sweep:{vtxo_id}", f"sweep {vtxo_id} at {height}", "null",
            applied=True,
        )  # fmt: skip
        swept.append(str(vtxo_id))
    return swept


def early_sweeps(db: Db) -> list[str]:
    """Sweeps made before the VTXO's expiry (the server's rule broken): one line each."""
    problems = []
    for vtxo_id, body, spent_by in db.all(
        "SELECT id, body, spent_by FROM srv_vtxo WHERE status = ?", (SWEPT,)
    ):
        vtxo: Vtxo = load(body, Vtxo)
        height = int(str(spent_by).removeprefix(SWEEP_PREFIX))
        if height < vtxo.expiry_height:
            problems.append(
                f"vtxo {vtxo_id} swept at height {height}, before its expiry {vtxo.expiry_height}"
            )
    return problems


__all__ = ["SWEEP_PREFIX", "early_sweeps", "sweep_expired"]

"""The offboard's checkpoint (`Offboard`, `SendOnchain`) and the reads every phase shares: its
offboard tx, its movement (get-or-create, keyed by the action id) and a VTXO of the wallet.

The kind is in `offboard`, the SendOnchain arkoor split in `offboard_split`, the starter in
`offboard_start`.
"""

from __future__ import annotations

import attrs

from fsm import StepContext

from .model import Tx, Vtxo, VtxoState
from .services import Services
from .services.wallet import WalletStore

Ctx = StepContext[Services]
UNSPENT = frozenset({VtxoState.SPENDABLE})


@attrs.frozen
class SendOnchain:
    """The SendOnchain flavour: keys reserved at start and the change split, so a retried
    arkoor split is byte-identical (the server takes it as a replay)."""

    arkoor_key_index: int
    change_key_index: int
    change_pieces: list[int]


@attrs.frozen
class Offboard:
    """The checkpoint. The first block is fixed at start; the rest is phase data.

    ``send_onchain`` is ``None`` for OffboardWhole. ``offboard_tx`` is the unsigned tx once
    prepared, the signed one once finished; ``created_at`` is when it was first broadcast or
    adopted (the lost-tx grace period counts from there); ``refusal`` the server's refusal of
    the prepare that sends it to ``abandoning``, for the failed movement.
    """

    id: str
    destination: str
    onchain_output_amount: int
    committed_fee: int
    committed_fee_rate: int
    input_vtxo_ids: list[str]
    send_onchain: SendOnchain | None = None
    offboard_vtxo_ids: list[str] = attrs.Factory(list)
    change_vtxo_ids: list[str] = attrs.Factory(list)
    prior_txid: str | None = None
    offboard_tx: Tx | None = None
    forfeit_nonces: list[str] = attrs.Factory(list)
    movement_id: int | None = None
    created_at: float | None = None
    refusal: str | None = None


def offboard_tx(d: Offboard) -> Tx:
    assert d.offboard_tx is not None, f"offboard {d.id}: no offboard tx in this phase"
    return d.offboard_tx


def offboard_movement(wallet: WalletStore, d: Offboard) -> int:
    """Get-or-create the movement keyed by the action id (re-entrant by construction)."""
    net, fee = d.onchain_output_amount, d.committed_fee
    sent_to = {"sent_to": d.destination, "sent_amount": str(net)}
    if d.send_onchain is None:
        m = wallet.get_or_create_movement(
            d.id,
            "offboard",
            intended_balance=-(net + fee),
            effective_balance=-(net + fee),
            fee=fee,
            consumed=d.input_vtxo_ids,
            metadata=sent_to,
        )
    else:
        m = wallet.get_or_create_movement(
            d.id,
            "send_onchain",
            intended_balance=-net,
            effective_balance=-(net + fee),
            fee=fee,
            consumed=d.input_vtxo_ids,
            produced=d.change_vtxo_ids,
            metadata={**sent_to, "offboard_vtxos": ",".join(d.offboard_vtxo_ids)},
        )
    return m.id


def wallet_vtxo(wallet: WalletStore, vtxo_id: str) -> Vtxo:
    vtxo = wallet.get_vtxo(vtxo_id)
    if vtxo is None:
        raise LookupError(f"vtxo {vtxo_id} is not in the wallet")
    return vtxo


__all__ = [
    "UNSPENT",
    "Ctx",
    "Offboard",
    "SendOnchain",
    "offboard_movement",
    "offboard_tx",
    "wallet_vtxo",
]

"""Taking in what other wallets paid: bark's mailbox sync (an arkoor receive).

Another wallet pays this one by spending to a key of one of its addresses
(`WalletStore.new_address`) and posting the new VTXOs to the address's mailbox (the arkoor
send's delivery, or a lightning receive claimed to an external destination). Until the
payee syncs its mailbox the money sits on the server as a live VTXO of the payee's key that
the payee's wallet does not know: `sync_mailbox` stores each such VTXO as spendable with a
successful ``arkoor_receive`` movement.

Not an action: every write is idempotent (the movement is get-or-create keyed by the VTXO,
the VTXO insert-if-absent, finishing a finished movement keeps it), so a sync cut short by a
crash or a lost answer is simply run again. The movement is created before the VTXO is
stored, so a VTXO the wallet knows always has its movement, and a second sync finishes one
left pending.

Checks, standing in for bark's validation of the signed chain: the VTXO pays a plain key of
this wallet, and the server knows it and has not spent it (`ArkServer.spent_vtxos`; unknown
is ``NotFound``). Only VTXOs paying a key of one of the wallet's addresses are payments: the
wallet's own recovery posts (a board's, an offboard split's outputs, a send's change, which
the server posts with the spend, before the send has stored it) are its actions' business,
never taken in as received.
"""

from __future__ import annotations

import fsm

from .model import MovementStatus, PubkeyPolicy, Vtxo, VtxoState
from .services import Services

RECEIVE_KIND = "arkoor_receive"


def receive_movement_id(vtxo_id: str) -> str:
    """The action id the movement of a received VTXO is keyed by."""
    return f"{RECEIVE_KIND}.{vtxo_id}"


async def _live_on_server(services: Services, vtxo: Vtxo) -> bool:
    try:
        return not await services.server.spent_vtxos([vtxo.id])
    except fsm.Rejected as exc:
        if exc.code == "NotFound":
            return False
        raise


async def sync_mailbox(services: Services) -> list[Vtxo]:
    """Take in the VTXOs paid to this wallet's keys through its mailbox; returns the ones
    taken in by this call. Server errors propagate: run it again."""
    wallet = services.wallet
    addresses = wallet.address_keys()
    taken: list[Vtxo] = []
    for vtxo in await services.server.read_mailbox(wallet.mailbox_id()):
        if not isinstance(vtxo.policy, PubkeyPolicy) or vtxo.pubkey not in addresses:
            continue
        pending = wallet.movement_of(receive_movement_id(vtxo.id))
        if wallet.get_vtxo(vtxo.id) is not None:
            if pending is not None:  # a sync cut short after storing the VTXO
                wallet.finish_movement(pending.id, MovementStatus.SUCCESSFUL)
            continue
        if not await _live_on_server(services, vtxo):
            continue
        movement = wallet.get_or_create_movement(
            receive_movement_id(vtxo.id),
            RECEIVE_KIND,
            intended_balance=vtxo.amount,
            effective_balance=vtxo.amount,
            fee=0,
            produced=[vtxo.id],
            metadata={"received_on": vtxo.pubkey},
        )
        wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
        wallet.finish_movement(movement.id, MovementStatus.SUCCESSFUL)
        taken.append(vtxo)
    return taken


__all__ = ["RECEIVE_KIND", "receive_movement_id", "sync_mailbox"]

"""SendOnchain's first half: the arkoor split that makes a VTXO of exactly amount + fee (plus
change), its registration, and after a refused split the question whether the server made it
anyway (bark reference 2.2, ``SplitWithArkoor`` and ``ArkoorRegistrationRequired``).

The split's request is fixed at start (`offboard_model.SendOnchain`), so a retry is
byte-identical and the server takes it as a replay.
"""

from __future__ import annotations

import attrs

from .answers import check_outputs
from .model import PubkeyPolicy, VtxoRequest, VtxoState, vtxo_resource
from .offboard_model import UNSPENT, Ctx, Offboard, offboard_movement, wallet_vtxo
from .services.ark_records import RecoveryPost


async def arkoor_split(ctx: Ctx, d: Offboard) -> Offboard:
    """Split the inputs into one VTXO of net + fee (arkoor key) and the change pieces
    (change key). The outputs are stored and held by this action; the inputs are spent. The
    server posts every output to the wallet's own mailbox with the split (bark posts them
    best-effort afterwards: here a lost answer or a crash cannot skip the post)."""
    assert d.send_onchain is not None
    svc, split = ctx.services, d.send_onchain
    inputs = [wallet_vtxo(svc.wallet, vid) for vid in sorted(d.input_vtxo_ids)]
    outputs = [
        VtxoRequest(
            d.onchain_output_amount + d.committed_fee,
            PubkeyPolicy(svc.wallet.derive_key(split.arkoor_key_index)),
        ),
        *(
            VtxoRequest(piece, PubkeyPolicy(svc.wallet.derive_key(split.change_key_index)))
            for piece in split.change_pieces
        ),
    ]
    key = ctx.idempotency_key
    await svc.server.register_vtxo_transactions(inputs, f"{key}.inputs")
    recovery = RecoveryPost(svc.wallet.mailbox_id(), list(range(len(outputs))))
    created = await svc.server.request_arkoor_cosign([v.id for v in inputs], outputs, key, recovery)
    check_outputs(f"offboard {d.id} split", outputs, created)
    ctx.acquire(*(v.resource for v in created))
    for vtxo in created:
        svc.wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
    svc.wallet.set_vtxo_state([v.id for v in inputs], VtxoState.SPENT, allowed_from=UNSPENT)
    ctx.release(*(v.resource for v in inputs))
    split_done = attrs.evolve(
        d,
        offboard_vtxo_ids=[created[0].id],
        change_vtxo_ids=sorted(v.id for v in created[1:]),
    )
    return attrs.evolve(split_done, movement_id=offboard_movement(svc.wallet, split_done))


async def register_split(ctx: Ctx, d: Offboard) -> Offboard:
    """Register the new VTXOs' chains with the server, then let the change go."""
    svc = ctx.services
    vtxos = [wallet_vtxo(svc.wallet, vid) for vid in [*d.offboard_vtxo_ids, *d.change_vtxo_ids]]
    await svc.server.register_vtxo_transactions(vtxos, ctx.idempotency_key)
    ctx.release(*(vtxo_resource(vid) for vid in d.change_vtxo_ids))
    return attrs.evolve(d, prior_txid=None)


async def split_made(ctx: Ctx, d: Offboard) -> bool:
    """After a refused split: did the server spend the inputs anyway (a first attempt whose
    answer was lost)? Then it must be adopted, never abandoned. Errors propagate: giving up
    waits until the server can say no."""
    return bool(await ctx.services.server.spent_vtxos(sorted(d.input_vtxo_ids)))


__all__ = ["arkoor_split", "register_split", "split_made"]

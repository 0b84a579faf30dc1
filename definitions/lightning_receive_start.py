"""The lightning receive's starter: `start_lightning_receive` asks the Ark server for an invoice
before the action exists, as bark does (an unused invoice just expires), and returns the
action, which holds no resources (`started.Started`).
"""

from __future__ import annotations

from .lightning_receive import LightningReceive, LightningReceiveKind, lightning_receive_id
from .model import ArkAddress, payment_hash_of
from .services import Services
from .started import Started


async def start_lightning_receive(
    services: Services,
    amount: int,
    *,
    description: str = "",
    claim_destination: ArkAddress | None = None,
    anti_dos_token: str | None = None,
    preimage: str | None = None,
) -> Started[LightningReceive]:
    """Create the invoice on the server and return the action to `fsm.Executor.start` (it
    holds no resources).

    ``preimage`` defaults to one derived from the wallet's seed and the receive's key index
    (`WalletStore.derive_preimage`: a wallet restored from its seed finds it again, see
    `recovery`); pass one to make a retry of this call (after a lost response) a replay on
    the server. Raises ValueError for a bad amount or a server
    whose limits leave no room for the receive's CLTV delta.
    """
    if amount <= 0:
        raise ValueError(f"amount must be positive, got {amount}")
    info = await services.server.info()
    cfg = services.config
    fee = info.lightning_receive_fee(amount)
    if amount <= fee:
        raise ValueError(f"amount {amount} does not cover the receive fee {fee}")
    cltv = (
        info.vtxo_exit_delta
        + info.htlc_expiry_delta
        + cfg.vtxo_exit_margin
        + cfg.htlc_recv_claim_delta
        + 2
    )
    if cltv > info.max_htlc_recv_cltv_delta:
        raise ValueError(f"CLTV delta {cltv} above the server's {info.max_htlc_recv_cltv_delta}")
    wallet = services.wallet
    key_index = wallet.next_key_index()
    preimage = preimage or wallet.derive_preimage(key_index)
    payment_hash = payment_hash_of(preimage)
    invoice = await services.server.start_lightning_receive(
        payment_hash,
        amount,
        cltv,
        wallet.mailbox_id(),
        description,
        f"{lightning_receive_id(payment_hash)}.invoice",
    )
    if invoice.payment_hash != payment_hash:
        raise ValueError(f"server invoice is for {invoice.payment_hash}, not {payment_hash}")
    data = LightningReceive(invoice, preimage, cltv, key_index, anti_dos_token, claim_destination)
    return Started(LightningReceiveKind.create(data), [])


__all__ = ["start_lightning_receive"]

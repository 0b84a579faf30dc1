"""The lightning receive's grant: what the wallet asks the server for (the HTLC expiry and the
anti-DoS proof, pinned in the checkpoint before the request is sent) and which grant of
HTLC-recv VTXOs it accepts (bark reference §2.5, ``prepare_lightning_receive_claim``).

Both are plain functions of the services and the receive's fixed data, so the kind
(`lightning_receive`) stays a table and its steps.
"""

from __future__ import annotations

import attrs

from .model import HtlcRecvPolicy, digest
from .services import Services
from .services.ark_records import ReceiveGrant

PROOF_MIN_EXPIRY_MARGIN = 2
"""A VTXO used for the anti-DoS proof must expire more than this many blocks from the tip."""


@attrs.frozen
class GrantRequest:
    """The grant request, fixed in the checkpoint before it is sent, so a re-run sends the
    identical request under the same idempotency key (the tip may have moved meanwhile)."""

    htlc_expiry: int
    proof: str | None


async def pin(
    svc: Services, payment_hash: str, cltv_delta: int, anti_dos_token: str | None
) -> GrantRequest:
    """The HTLC expiry (tip + the receive's CLTV delta) and the anti-DoS proof: the token if
    given, else an attestation over a spendable VTXO that does not expire within two blocks,
    else none."""
    tip = await svc.chain.tip_height()
    proof = None if anti_dos_token is None else f"token:{anti_dos_token}"
    if proof is None:
        usable = [
            v
            for v in svc.wallet.spendable_vtxos()
            if v.expiry_height > tip + PROOF_MIN_EXPIRY_MARGIN
        ]
        if usable:
            v = usable[0]
            proof = f"vtxo:{v.id}:{digest('attest', v.id, payment_hash)}"
    return GrantRequest(tip + cltv_delta, proof)


async def grant_problem(
    svc: Services,
    request: GrantRequest,
    payment_hash: str,
    key_index: int,
    invoice_amount: int,
    grant: ReceiveGrant,
) -> str | None:
    """Why the grant is unacceptable (None: it is fine). Every check is terminal."""
    info = await svc.server.info()
    tip = await svc.chain.tip_height()
    cfg = svc.config
    pubkey = svc.wallet.derive_key(key_index)
    deadline = (
        tip
        + info.vtxo_exit_delta
        + info.htlc_expiry_delta
        + cfg.vtxo_exit_margin
        + cfg.htlc_recv_claim_delta
    )
    if not grant.htlc_vtxos:
        return "no HTLC VTXOs granted"
    for v in grant.htlc_vtxos:
        p = v.policy
        if not isinstance(p, HtlcRecvPolicy):
            return f"vtxo {v.id} is not an HTLC-recv VTXO"
        if p.payment_hash != payment_hash or p.pubkey != pubkey:
            return f"vtxo {v.id} is for another payment hash or key"
        if p.expiry_height < request.htlc_expiry:
            return f"vtxo {v.id} expires at {p.expiry_height}, before the requested height"
        if deadline > p.expiry_height:
            return f"vtxo {v.id} expires at {p.expiry_height}, before the claim deadline {deadline}"
    total = sum(v.amount for v in grant.htlc_vtxos)
    fee = grant.amount - total if grant.amount >= total else invoice_amount - total
    if total + fee < invoice_amount:
        return f"HTLCs of {total} sats plus fee {fee} do not cover the invoice"
    published = info.lightning_receive_fee(invoice_amount)
    if total + published < invoice_amount:
        # bark validates each VTXO's signed chain, which fixes its amount; the sim has no
        # signatures, so the server's published fee is what the HTLCs are held to
        return f"HTLCs of {total} sats are short of the invoice less the fee {published}"
    return None


__all__ = ["PROOF_MIN_EXPIRY_MARGIN", "GrantRequest", "grant_problem", "pin"]

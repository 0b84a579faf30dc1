"""What the lying proxy does to an answer (`world_faults.Fault.REWRITE`): one field of the
server's true answer is rewritten on the way back to the wallet, as bark's test proxy does
(it strips the witnesses of a finish response, for one).

The server has applied the request and keeps its true answer, so a replay under the same key
returns the truth: a kind that checks what it can check and retries survives the lie. Only
answers a wallet can check are rewritten, each the way bark checks it: an amount or a policy
of VTXOs the wallet asked for (bark builds them from its own request), a signature (the
``signed`` flag: the sim has no cryptography), the amount an offboard tx pays, a preimage
(its hash), the hash an invoice is for. Answers nobody can check (a payment's state, which
VTXOs are spent, mailbox contents, plain acknowledgements) are left alone: a server that lies
about those is not a fault a wallet can defend against (docs/simulation.md).
"""

from __future__ import annotations

from typing import Any

import attrs

from ..model import Invoice, Tx, TxOut, Vtxo, digest
from ..services.ark_records import PreparedOffboard, ReceiveGrant
from ..services.lightning_node import PaymentState, PaymentStatus


def _vtxo(v: Vtxo) -> Vtxo:
    return attrs.evolve(v, amount=v.amount - 1)


def _tx(tx: Tx) -> Tx:
    if tx.signed:
        return attrs.evolve(tx, signed=False)  # the witnesses stripped
    [first, *rest] = tx.outputs
    return attrs.evolve(tx, outputs=[TxOut(first.address, first.amount - 1), *rest])


def rewrite(value: Any) -> Any:
    """``value`` with one checkable field rewritten; ``value`` itself when it has none."""
    if isinstance(value, Vtxo):
        return _vtxo(value)
    if isinstance(value, list) and value and all(isinstance(v, Vtxo) for v in value):
        return [_vtxo(value[0]), *value[1:]]
    if isinstance(value, Tx) and value.outputs:
        return _tx(value)
    if isinstance(value, PreparedOffboard) and value.unsigned_tx.outputs:
        return attrs.evolve(value, unsigned_tx=_tx(value.unsigned_tx))
    if isinstance(value, ReceiveGrant) and value.htlc_vtxos:
        return attrs.evolve(value, htlc_vtxos=[_vtxo(value.htlc_vtxos[0]), *value.htlc_vtxos[1:]])
    if isinstance(value, Invoice):
        return attrs.evolve(value, payment_hash=digest("forged", value.payment_hash))
    if isinstance(value, PaymentStatus) and value.state is PaymentState.SUCCEEDED:
        return attrs.evolve(value, preimage=digest("forged", value.preimage or ""))
    return value


__all__ = ["rewrite"]

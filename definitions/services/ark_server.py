"""`ArkServer`: every Ark server RPC the five kinds call, and how they fail.

Each RPC that changes server state takes ``idempotency_key`` (a step's
``ctx.idempotency_key``): a retry with the same key is a replay and returns the first answer.
Refusals raise ``fsm.Rejected(message, code=...)`` with bark's two rejection codes,
`INVALID_ARGUMENT` and `NOT_FOUND` (the server refused and changed nothing);
`ServerUnavailable` is transient (the request may or may not have been applied: retry with the
same key).
"""

from __future__ import annotations

from typing import Protocol

from ..model import Invoice, Offer, Policy, Tx, Vtxo, VtxoRequest
from .ark_records import (
    BoardRequest,
    HtlcSendRequest,
    OffboardRequest,
    PreparedOffboard,
    ReceiveGrant,
    ReceiveRecord,
    ReceiveStatus,
    RecoveryPost,
    RoundResult,
    SendRecord,
    ServerInfo,
)
from .lightning_node import PaymentStatus

INVALID_ARGUMENT = "InvalidArgument"
NOT_FOUND = "NotFound"


class ServerUnavailable(Exception):
    """A transient failure talking to a remote party: the request may or may not have been
    applied. Retry with the same idempotency key."""


class ArkServer(Protocol):
    """The Ark server's RPCs used by the five kinds (bark ``server-rpc``)."""

    async def info(self) -> ServerInfo: ...

    async def request_board_cosign(self, req: BoardRequest, idempotency_key: str) -> Vtxo: ...

    async def register_board_vtxo(self, vtxo: Vtxo, idempotency_key: str) -> None:
        """Accept a board VTXO once its funding tx has the required confirmations (else
        ``Rejected(InvalidArgument)``); repeats are tolerated."""
        ...

    async def register_vtxo_transactions(self, vtxos: list[Vtxo], idempotency_key: str) -> None:
        """Register the tx chains of ``vtxos`` (idempotent)."""
        ...

    async def request_arkoor_cosign(
        self,
        input_ids: list[str],
        outputs: list[VtxoRequest],
        idempotency_key: str,
        recovery: RecoveryPost | None = None,
    ) -> list[Vtxo]:
        """Spend ``input_ids`` into ``outputs`` out of round. The identical spend again is a
        replay; a different spend of the same inputs is ``Rejected(InvalidArgument)``, and so
        is an input at ``ServerInfo.max_arkoor_depth`` or past its expiry. ``recovery``: the
        outputs the server posts to the spender's mailbox with the spend (its change)."""
        ...

    async def spent_vtxos(self, vtxo_ids: list[str]) -> list[str]:
        """Which of ``vtxo_ids`` the server has spent (a read). How a spend whose answer was
        lost and whose retry was refused learns whether it happened before letting its inputs
        go. An unknown VTXO is ``Rejected(NotFound)``."""
        ...

    async def post_to_mailbox(
        self, mailbox_id: str, vtxos: list[Vtxo], idempotency_key: str
    ) -> None: ...

    async def read_mailbox(self, mailbox_id: str) -> list[Vtxo]: ...

    async def prepare_offboard(
        self, req: OffboardRequest, idempotency_key: str
    ) -> PreparedOffboard:
        """Checks, in this order: inputs unspent ("inputs spent"), then fee rate ("fee rate
        is no longer valid"), amount ("does not match expected amount"), destination ("output
        address is blocked") — so the last three prove the inputs were spendable. Opens a
        finish session keyed by the tx's txid (a server restart forgets it)."""
        ...

    async def finish_offboard(self, txid: str, signatures: list[str], idempotency_key: str) -> Tx:
        """Forfeit the inputs, return the signed offboard tx and broadcast it.
        ``Rejected(NotFound)`` when the finish session is gone."""
        ...

    async def request_lightning_pay_htlc_cosign(
        self, req: HtlcSendRequest, idempotency_key: str
    ) -> list[Vtxo]:
        """The HTLC VTXO first, then the change, in request order. Idempotent per hash."""
        ...

    async def initiate_lightning_payment(
        self,
        invoice: Invoice,
        htlc_vtxo_ids: list[str],
        amount: int,
        mailbox_id: str,
        idempotency_key: str,
    ) -> None: ...

    async def check_lightning_payment(self, payment_hash: str) -> PaymentStatus: ...

    async def fetch_bolt12_invoice(self, offer: Offer, amount: int | None) -> Invoice:
        """Ask the offer's node for an invoice (bark's ``fetch_bolt12_invoice``): a new one,
        with a payment hash of its own, at every call (nothing to replay, so no key).
        ``amount`` is the payer's for an offer without one. A refused request (unknown offer,
        wrong amount, expired offer) is ``Rejected``."""
        ...

    async def request_lightning_pay_htlc_revocation(
        self, htlc_vtxo_ids: list[str], revocation_pubkey: str, idempotency_key: str
    ) -> list[Vtxo]:
        """Give the HTLCs back to ``revocation_pubkey`` once the payment failed or the HTLC
        expired. Refused (``InvalidArgument``) while the payment may still succeed, in
        particular while the receive side of an intra-Ark payment is committed."""
        ...

    async def start_lightning_receive(
        self,
        payment_hash: str,
        amount: int,
        cltv_delta: int,
        mailbox_id: str,
        description: str,
        idempotency_key: str,
    ) -> Invoice: ...

    async def check_lightning_receive(self, payment_hash: str) -> ReceiveStatus: ...

    async def prepare_lightning_receive_claim(
        self,
        payment_hash: str,
        user_pubkey: str,
        htlc_expiry: int,
        proof: str | None,
        idempotency_key: str,
    ) -> ReceiveGrant: ...

    async def claim_lightning_receive(
        self,
        payment_hash: str,
        preimage: str,
        htlc_vtxo_ids: list[str],
        destination: Policy,
        idempotency_key: str,
    ) -> list[Vtxo]:
        """Reveal the preimage: the HTLC-recv VTXOs become one VTXO for ``destination``."""
        ...

    async def cancel_lightning_receive(self, payment_hash: str, idempotency_key: str) -> None: ...

    async def list_lightning_receives(self, mailbox_id: str) -> list[ReceiveRecord]:
        """The receives started for ``mailbox_id`` that are neither settled nor canceled."""
        ...

    async def list_lightning_sends(self, mailbox_id: str) -> list[SendRecord]:
        """The sends whose HTLC cosign named ``mailbox_id`` in its recovery post and whose
        HTLC is neither settled nor revoked (cosigned, in flight, or failed)."""
        ...

    async def register_for_round(
        self, input_ids: list[str], outputs: list[VtxoRequest], idempotency_key: str
    ) -> str:
        """Join the next round with ``input_ids`` (live, unexpired, in no other participation)
        for ``outputs`` (the same sum): returns the participation id. Nothing is spent until
        the round runs."""
        ...

    async def round_result(self, participation_id: str) -> RoundResult:
        """How a participation ended, or that its round has not run yet (unknown:
        ``NotFound``)."""
        ...

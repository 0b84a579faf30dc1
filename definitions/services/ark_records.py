"""The records the Ark server's RPCs take and return (bark's ``server-rpc`` messages).

Frozen attrs records, so a kind can keep them in its checkpoint (``fsm.CONVERTER`` stores them
as they are) and the simulated server can store and replay them.
"""

from __future__ import annotations

import enum

import attrs

from ..model import Invoice, Network, Tx, Vtxo, VtxoRequest
from .fees import FeeSchedule


@attrs.frozen
class ServerInfo:
    """What the server publishes (bark's ``ArkInfo``) plus its fee schedule (``fees``: the
    schedule in force when it was read; it changes over time)."""

    network: Network
    server_pubkey: str
    required_board_confirmations: int
    min_board_amount: int
    max_board_inputs: int
    vtxo_expiry_delta: int
    max_offboard_inputs: int
    dust_limit: int
    htlc_send_expiry_delta: int
    vtxo_exit_delta: int
    htlc_expiry_delta: int
    max_htlc_recv_cltv_delta: int
    fees: FeeSchedule
    max_arkoor_depth: int = 5
    """The deepest a VTXO may be to be spent out of round (`model.Vtxo.depth`)."""

    @property
    def offboard_fee_rate(self) -> int:
        return self.fees.offboard_fee_rate

    def offboard_fee(self, n_inputs: int, fee_rate: int | None = None) -> int:
        return self.fees.offboard_fee(n_inputs, fee_rate)

    def board_fee(self, amount: int) -> int:
        return self.fees.board_fee(amount)

    def lightning_send_fee(self, amount: int) -> int:
        return self.fees.lightning_send_fee(amount)

    def lightning_receive_fee(self, amount: int) -> int:
        return self.fees.lightning_receive_fee(amount)


@attrs.frozen
class BoardRequest:
    """``request_board_cosign``: the board output ``funding_tx.outputs[vout]`` (gross amount)
    becomes one VTXO of ``amount - fee`` for ``user_pubkey``. ``fee`` is the wallet's quote
    (`ServerInfo.board_fee`); the server refuses one its schedule no longer gives."""

    funding_tx: Tx
    vout: int
    user_pubkey: str
    expiry_height: int
    fee: int


@attrs.frozen
class RecoveryPost:
    """With ``request_arkoor_cosign``: the outputs (by their index in the request) the server
    posts to the spender's own mailbox ``mailbox_id`` in the spend's transaction, so a wallet
    restored from its seed finds its change (bark's recovery post, made atomic with the spend:
    it cannot be lost between the cosign and the wallet storing the change)."""

    mailbox_id: str
    outputs: list[int]


@attrs.frozen
class OffboardRequest:
    """``prepare_offboard``. ``input_ids`` sorted (the server replays identical requests);
    ``fee_rate`` is the rate committed at start, re-sent verbatim on every prepare."""

    input_ids: list[str]
    destination: str
    net_amount: int
    deduct_fees_from_gross: bool
    fee_rate: int


@attrs.frozen
class PreparedOffboard:
    """The unsigned offboard tx and the server's forfeit nonces (stable across replays)."""

    unsigned_tx: Tx
    forfeit_nonces: list[str]


@attrs.frozen
class HtlcSendRequest:
    """``request_lightning_pay_htlc_cosign``: ``inputs`` become one server-HTLC-send VTXO of
    ``amount + fee`` plus ``change``. ``fee`` is the wallet's quote
    (`ServerInfo.lightning_send_fee`); the server refuses one its schedule no longer gives.

    ``recovery``: as with ``request_arkoor_cosign``, the outputs (indexes into the cosign's
    outputs: 0 is the HTLC, then the change) the server posts to the sender's own mailbox in
    the cosign's transaction. Its mailbox is also the one the server lists the send under
    while it is open (`SendRecord`), and the one it posts a revocation's output to: a wallet
    restored from its seed finds the change, the send in flight, and its money back."""

    input_ids: list[str]
    invoice: Invoice
    amount: int
    htlc_pubkey: str
    htlc_expiry: int
    change: list[VtxoRequest]
    fee: int
    recovery: RecoveryPost | None = None


class ReceiveState(enum.Enum):
    """Server-side state of a Lightning receive (bark's ``LightningReceiveStatus``)."""

    CREATED = "created"
    ACCEPTED = "accepted"
    HTLCS_READY = "htlcs_ready"
    SETTLED = "settled"
    CANCELED = "canceled"


@attrs.frozen
class ReceiveStatus:
    state: ReceiveState
    amount: int
    """What the payer paid (sats), 0 before that."""


@attrs.frozen
class ReceiveGrant:
    """``prepare_lightning_receive_claim``: the HTLC-recv VTXOs (sorted by id) and the amount
    the payer paid; ``amount - sum(vtxos)`` is the receive fee."""

    htlc_vtxos: list[Vtxo]
    amount: int


class RoundState(enum.Enum):
    """Where a round participation stands."""

    PENDING = "pending"
    """Registered; the next round has not run yet."""
    DONE = "done"
    """The round ran: the inputs are spent, the outputs are live."""
    FAILED = "failed"
    """The round could not take it (an input spent or expired meanwhile): nothing happened."""


@attrs.frozen
class RoundResult:
    """A participation's outcome: its state, the round's new VTXOs, or why it failed."""

    state: RoundState
    vtxos: list[Vtxo] = attrs.Factory(list)
    reason: str = ""


@attrs.frozen
class ReceiveRecord:
    """A Lightning receive as the server keeps it for a mailbox: what a wallet restored from
    its seed needs to take the receive up again."""

    invoice: Invoice
    cltv_delta: int
    state: ReceiveState


@attrs.frozen
class SendRecord:
    """A Lightning send as the server keeps it for the mailbox its cosign's recovery post
    named, while its HTLC is neither settled nor revoked: the cosigned request and the HTLC
    VTXOs. What a wallet restored from its seed needs to settle or revoke the send."""

    request: HtlcSendRequest
    htlc_vtxos: list[Vtxo]

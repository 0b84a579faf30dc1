"""The typed services the wallet kinds talk to, derived from bark's wallet actions.

Four remote or local parties, each a `typing.Protocol` so the kinds depend on the shape only
(`definitions.sim` implements all of them; a real wallet would wrap gRPC, bitcoind and its
database):

* `ArkServer`: every server RPC the five kinds call. Each RPC that changes server state takes
  ``idempotency_key`` (a step's ``ctx.idempotency_key``): a retry with the same key is a
  replay and returns the first answer. Refusals raise ``fsm.Rejected(message, code=...)`` with
  bark's two rejection codes, ``"InvalidArgument"`` and ``"NotFound"`` (the server refused and
  changed nothing); `ServerUnavailable` is transient (the request may or may not have been
  applied: retry with the same key).
* `ChainSource`: the bitcoin backend (tip, tx status, broadcast, spends).
* `LightningNode`: the payee/payer on the Lightning side (used by demos and tests, not kinds).
* `WalletStore`: the wallet's own database: VTXOs with checked state transitions, movements
  get-or-create by action id, the paid-invoice and settled-receive fact tables, keys.
  Locking is *not* here: an action holds its VTXOs as fsm resources (`model.vtxo_resource`),
  written in the same transaction as its checkpoint; the store only skips held VTXOs in coin
  selection.

Remote calls are ``async``; the wallet store is local and synchronous.
"""

from __future__ import annotations

import enum
from typing import Protocol

import attrs

from definitions.model import (
    Invoice,
    Movement,
    MovementStatus,
    MovementUpdate,
    Network,
    OutPoint,
    Policy,
    Tx,
    TxOut,
    Vtxo,
    VtxoRequest,
    VtxoState,
)

INVALID_ARGUMENT = "InvalidArgument"
NOT_FOUND = "NotFound"
REJECTION_CODES = (INVALID_ARGUMENT, NOT_FOUND)


class ServerUnavailable(Exception):
    """A transient failure talking to a remote party: the request may or may not have been
    applied. Retry with the same idempotency key."""


class ChainRejected(Exception):
    """The chain backend refused a broadcast.

    ``missing_inputs``: an input is missing or already spent (bark: the board conflict probe's
    "Fatal"); otherwise the reason is something else (bark: "Undecided").
    """

    def __init__(self, message: str, *, missing_inputs: bool) -> None:
        super().__init__(message)
        self.missing_inputs = missing_inputs


class InsufficientFunds(Exception):
    """Coin selection found too little spendable, unheld money."""


class VtxoStateError(Exception):
    """A checked VTXO state transition from a state it does not allow (or of an unknown VTXO)."""


# -- server records ------------------------------------------------------------------------


@attrs.frozen
class ServerInfo:
    """What the server publishes (bark's ``ArkInfo``) plus its fee schedule."""

    network: Network
    server_pubkey: str
    required_board_confirmations: int
    min_board_amount: int
    board_fee: int
    max_board_inputs: int
    vtxo_expiry_delta: int
    offboard_fee_rate: int
    """sats per input and per output of an offboard tx (the sim's fee schedule)."""
    max_offboard_inputs: int
    dust_limit: int
    htlc_send_expiry_delta: int
    lightning_send_fee_base: int
    lightning_send_fee_ppm: int
    lightning_receive_fee: int
    vtxo_exit_delta: int
    htlc_expiry_delta: int
    max_htlc_recv_cltv_delta: int

    def offboard_fee(self, n_inputs: int, fee_rate: int | None = None) -> int:
        """The fee of offboarding ``n_inputs`` VTXOs to one destination at ``fee_rate``."""
        rate = self.offboard_fee_rate if fee_rate is None else fee_rate
        return rate * (n_inputs + 1)

    def lightning_send_fee(self, amount: int) -> int:
        return self.lightning_send_fee_base + amount * self.lightning_send_fee_ppm // 1_000_000


@attrs.frozen
class BoardRequest:
    """``request_board_cosign``: the board output ``funding_tx.outputs[vout]`` (gross amount)
    becomes one VTXO of ``amount - board_fee`` for ``user_pubkey``."""

    funding_tx: Tx
    vout: int
    user_pubkey: str
    expiry_height: int


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
    ``amount + fee`` (fee from `ServerInfo.lightning_send_fee`) plus ``change``."""

    input_ids: list[str]
    invoice: Invoice
    amount: int
    htlc_pubkey: str
    htlc_expiry: int
    change: list[VtxoRequest]


class PaymentState(enum.Enum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    UNKNOWN = "unknown"


@attrs.frozen
class PaymentStatus:
    state: PaymentState
    preimage: str | None = None


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


# -- chain records -------------------------------------------------------------------------


class TxState(enum.Enum):
    CONFIRMED = "confirmed"
    MEMPOOL = "mempool"
    NOT_FOUND = "not_found"


@attrs.frozen
class TxStatus:
    state: TxState
    height: int | None = None
    """The block height, when confirmed."""

    def confirmations(self, tip: int) -> int:
        """tip - height + 1, saturating at 0; 0 when not confirmed (bark's board arithmetic)."""
        if self.state is not TxState.CONFIRMED or self.height is None:
            return 0
        return max(0, tip - self.height + 1)


@attrs.frozen
class SpendInfo:
    """Who spends an outpoint: the spending txid and its height (``None``: in the mempool)."""

    txid: str
    height: int | None


# -- the protocols -------------------------------------------------------------------------


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
        self, input_ids: list[str], outputs: list[VtxoRequest], idempotency_key: str
    ) -> list[Vtxo]:
        """Spend ``input_ids`` into ``outputs`` out of round. The identical spend again is a
        replay; a different spend of the same inputs is ``Rejected(InvalidArgument)``."""
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


class ChainSource(Protocol):
    """The bitcoin backend."""

    async def tip_height(self) -> int: ...

    async def tx_status(self, txid: str) -> TxStatus: ...

    async def get_tx(self, txid: str) -> Tx | None: ...

    async def broadcast(self, tx: Tx) -> None:
        """Accept ``tx`` into the mempool; a tx already known is accepted again silently.
        Raises `ChainRejected` (unsigned, missing or spent inputs, ...)."""
        ...

    async def spent_by(self, outpoint: OutPoint) -> SpendInfo | None: ...


class LightningNode(Protocol):
    """The Lightning network seen from outside the Ark: the payee of sends, payer of receives."""

    async def create_invoice(
        self, amount: int, description: str, idempotency_key: str
    ) -> Invoice: ...

    async def pay_invoice(self, invoice: Invoice, idempotency_key: str) -> None:
        """Pay an invoice of the Ark server (a wallet's receive): the server accepts the HTLC."""
        ...

    async def payment_status(self, payment_hash: str) -> PaymentStatus: ...


class OnchainWallet(Protocol):
    """The wallet's on-chain coins (bark's BDK wallet), used to fund boards."""

    def address(self) -> str: ...

    def balance(self) -> int: ...

    def build_tx(self, outputs: list[TxOut], fee: int, *, signed: bool = True) -> Tx:
        """Select unspent coins for ``outputs + fee``, add change to `address`; ``signed=False``
        gives a PSBT-like tx someone else signs and broadcasts. Raises `InsufficientFunds`."""
        ...


class WalletStore(Protocol):
    """The wallet's local state. Every write commits before returning."""

    def mailbox_id(self) -> str:
        """The wallet's own mailbox (recovery posts, lightning send notifications)."""
        ...

    # keys
    def next_key_index(self) -> int:
        """Reserve and return a fresh key index (persisted: never handed out twice)."""
        ...

    def derive_key(self, index: int) -> str: ...

    def key_index_of(self, pubkey: str) -> int | None:
        """The index of a key this wallet derived, ``None`` for a foreign key."""
        ...

    # vtxos
    def insert_vtxo(self, vtxo: Vtxo, state: VtxoState) -> bool:
        """Insert if absent (``True`` if inserted); an existing VTXO is left untouched."""
        ...

    def get_vtxo(self, vtxo_id: str) -> Vtxo | None: ...

    def vtxo_state(self, vtxo_id: str) -> VtxoState | None: ...

    def set_vtxo_state(
        self, vtxo_ids: list[str], state: VtxoState, *, allowed_from: frozenset[VtxoState]
    ) -> None:
        """Checked transition of all ``vtxo_ids`` at once: a VTXO already in ``state`` is a
        no-op, one in another state not in ``allowed_from`` (or unknown) raises
        `VtxoStateError` and nothing changes."""
        ...

    def vtxos(self, state: VtxoState | None = None) -> list[tuple[Vtxo, VtxoState]]: ...

    def spendable_vtxos(self, exclude: frozenset[str] = frozenset()) -> list[Vtxo]:
        """Spendable plain-pubkey VTXOs not held by any action and not in ``exclude``,
        largest first (then by id)."""
        ...

    def select_coins(self, amount: int, exclude: frozenset[str] = frozenset()) -> list[Vtxo]:
        """The fewest of `spendable_vtxos` (largest first) covering ``amount``."""
        ...

    # unilateral exits
    def start_exit(self, vtxo_id: str) -> bool:
        """Start a unilateral exit of ``vtxo_id`` unless one is running (``True``: started
        now). The exit runs outside the actions; once it completes the VTXO is ``Exited``."""
        ...

    def exiting(self, vtxo_id: str) -> bool:
        """Whether a unilateral exit of ``vtxo_id`` was started."""
        ...

    # movements
    def get_or_create_movement(
        self,
        action_id: str,
        kind: str,
        *,
        intended_balance: int,
        effective_balance: int,
        fee: int,
        consumed: list[str] | None = None,
        produced: list[str] | None = None,
        metadata: dict[str, str] | None = None,
    ) -> Movement:
        """The movement of ``action_id``; created pending with these values the first time,
        returned unchanged afterwards."""
        ...

    def movement(self, movement_id: int) -> Movement | None: ...

    def movement_of(self, action_id: str) -> Movement | None: ...

    def update_movement(self, movement_id: int, update: MovementUpdate) -> Movement: ...

    def finish_movement(
        self, movement_id: int, status: MovementStatus, *, effective_balance: int | None = None
    ) -> Movement:
        """Set a terminal status (idempotent: finishing again with any status keeps the first)."""
        ...

    def movements(self) -> list[Movement]: ...

    # fact tables
    def record_paid_invoice(self, payment_hash: str, preimage: str, amount: int) -> bool:
        """Insert-or-ignore; ``True`` if this call inserted it."""
        ...

    def paid_invoice(self, payment_hash: str) -> str | None:
        """The preimage of a paid invoice, ``None`` if not paid."""
        ...

    def record_settled_receive(self, payment_hash: str, preimage: str, amount: int) -> bool: ...

    def settled_receive(self, payment_hash: str) -> int | None:
        """The settled amount, ``None`` if not settled."""
        ...


class Clock(Protocol):
    def now(self) -> float:
        """Seconds (unix time); the sim's clock only moves when told to."""
        ...


@attrs.frozen
class WalletConfig:
    """The wallet settings bark's kinds read (defaults as in bark, non-mainnet)."""

    network: Network = Network.REGTEST
    offboard_required_confirmations: int = 0
    offboard_lost_tx_grace_period_secs: float = 3600.0
    vtxo_refresh_expiry_threshold: int = 12
    change_vtxo_split_factor: int = 2
    lightning_receive_claim_retries: int = 5
    vtxo_exit_margin: int = 12
    htlc_recv_claim_delta: int = 18


@attrs.frozen
class Services:
    """Everything a wallet kind's step may use (``ctx.services``)."""

    server: ArkServer
    chain: ChainSource
    lightning: LightningNode
    onchain: OnchainWallet
    wallet: WalletStore
    clock: Clock
    config: WalletConfig = attrs.Factory(WalletConfig)


__all__ = [
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "REJECTION_CODES",
    "ArkServer",
    "BoardRequest",
    "ChainRejected",
    "ChainSource",
    "Clock",
    "HtlcSendRequest",
    "InsufficientFunds",
    "LightningNode",
    "OffboardRequest",
    "OnchainWallet",
    "PaymentState",
    "PaymentStatus",
    "PreparedOffboard",
    "ReceiveGrant",
    "ReceiveState",
    "ReceiveStatus",
    "ServerInfo",
    "ServerUnavailable",
    "Services",
    "SpendInfo",
    "TxState",
    "TxStatus",
    "VtxoStateError",
    "WalletConfig",
    "WalletStore",
]

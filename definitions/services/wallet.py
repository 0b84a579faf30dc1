"""The wallet's own, local parties: its database (`WalletStore`) and its on-chain coins
(`OnchainWallet`, bark's BDK wallet). Both are synchronous: nothing remote.

`WalletStore` holds VTXOs with checked state transitions, movements get-or-create by action id,
the paid-invoice and settled-receive fact tables, keys. Locking is *not* here: an action holds
its VTXOs as fsm resources (`model.vtxo_resource`), written in the same transaction as its
checkpoint; the store only skips held VTXOs in coin selection.
"""

from __future__ import annotations

from typing import Protocol

from ..model import (
    ArkAddress,
    Movement,
    MovementStatus,
    MovementUpdate,
    Network,
    OutPoint,
    Tx,
    TxOut,
    Vtxo,
    VtxoState,
)


class InsufficientFunds(Exception):
    """Coin selection found too little spendable, unheld money."""


class VtxoStateError(Exception):
    """A checked VTXO state transition from a state it does not allow (or of an unknown VTXO)."""


class OnchainWallet(Protocol):
    """The wallet's on-chain coins (bark's BDK wallet), used to fund boards."""

    def address(self) -> str: ...

    def balance(self) -> int: ...

    def build_tx(self, outputs: list[TxOut], fee: int, *, signed: bool = True) -> Tx:
        """Select unspent coins for ``outputs + fee``, add change to `address`; ``signed=False``
        gives a PSBT-like tx someone else signs and broadcasts. Raises `InsufficientFunds`."""
        ...

    def build_cpfp(self, anchor: OutPoint, fee: int) -> Tx:
        """A signed child spending the fee ``anchor`` of an unconfirmed tx and coins of the
        wallet's, paying ``fee`` for both (CPFP), change to `address`. Raises
        `InsufficientFunds` when the wallet's coins do not cover the fee."""
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

    def derive_preimage(self, index: int) -> str:
        """The Lightning preimage of the receive that reserved key ``index``: derived from
        the seed, so a wallet restored from it can claim its open receives."""
        ...

    def reserve_keys_through(self, index: int) -> None:
        """Mark keys ``0..index`` used (a restored wallet never hands one out again)."""
        ...

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

    def vtxos(self, state: VtxoState | None = None) -> list[tuple[Vtxo, VtxoState]]:
        """Every VTXO in ``state`` (all when ``None``), as stored: a held ``SPENDABLE`` VTXO
        is listed too, though it is locked (`locked_vtxos`)."""
        ...

    def locked_vtxos(self) -> list[Vtxo]:
        """``SPENDABLE`` VTXOs an action holds: bark's ``Locked{Action}``. Not spendable (coin
        selection skips them) and not known to be unspent: the holder's spend may have
        happened on the server with its answer lost (an offboard parked in
        ``split_refused``, an arkoor send in ``cosign_refused``), and only the holder, which
        asks the server, decides whether they are spent or go back to spendable."""
        ...

    def spendable_vtxos(self, exclude: frozenset[str] = frozenset()) -> list[Vtxo]:
        """Spendable plain-pubkey VTXOs not held by any action and not in ``exclude``,
        largest first (then by id)."""
        ...

    def select_coins(
        self,
        amount: int,
        exclude: frozenset[str] = frozenset(),
        *,
        max_depth: int | None = None,
        tip: int | None = None,
    ) -> list[Vtxo]:
        """The fewest of `spendable_vtxos` (largest first) covering ``amount``, for an
        out-of-round spend: VTXOs at ``max_depth`` (the server's ``max_arkoor_depth``) or
        expired at ``tip`` are skipped, as the server refuses them (bark: they need a
        refresh first). `InsufficientFunds` says how much was skipped and why."""
        ...

    def new_address(self, network: Network) -> ArkAddress:
        """A fresh key of the wallet and its mailbox: where another wallet pays it (arkoor
        payments arrive in the mailbox, `mailbox_sync.sync_mailbox` takes them in)."""
        ...

    def address_keys(self) -> set[str]:
        """The keys handed out by `new_address`: only VTXOs paying one of them are payments
        to take in from the mailbox (the rest there are the wallet's own recovery posts)."""
        ...

    # unilateral exits
    def start_exit(self, vtxo_id: str) -> bool:
        """Request a unilateral exit of ``vtxo_id`` unless one was (``True``: requested now).
        The exit runs outside the requesting action, as an `exit` action of its own."""
        ...

    def exiting(self, vtxo_id: str) -> bool:
        """Whether a unilateral exit of ``vtxo_id`` was started."""
        ...

    def exit_requests(self) -> list[str]:
        """Every VTXO whose exit was started, in order (played out by the `exit` kind)."""
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
        attempt: str = "",
    ) -> Movement:
        """The movement of ``action_id``'s ``attempt``; created pending with these values the
        first time, returned unchanged afterwards. ``attempt`` tells apart the incarnations of
        an action id used again on purpose (a payment hash paid again after a revoked
        attempt): each has a movement of its own."""
        ...

    def movement(self, movement_id: int) -> Movement | None: ...

    def movement_of(self, action_id: str) -> Movement | None:
        """The movement of ``action_id``'s latest attempt."""
        ...

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

"""Plain records the wallet kinds and the services exchange.

No cryptography: ids, txids, public keys and payment hashes are deterministic lowercase hex
strings (sha256 of their content), so the same inputs always give the same ids, exactly the
property bark's idempotency relies on ("re-cosigning with the same inputs and the same change
key yields the same spending txid"). Every record is a frozen attrs class of ints, strs, lists
and other records, so `fsm.CONVERTER` stores it in a checkpoint as is.
"""

from __future__ import annotations

import enum
import hashlib

import attrs


def digest(*parts: str | int) -> str:
    """sha256 (lowercase hex) of ``parts``: the sim's stand-in for every hash and id."""
    h = hashlib.sha256()
    for part in parts:
        h.update(str(part).encode())
        h.update(b"\x00")
    return h.hexdigest()


def payment_hash_of(preimage: str) -> str:
    """The payment hash of a hex preimage, as Lightning defines it (sha256 of the bytes)."""
    return hashlib.sha256(bytes.fromhex(preimage)).hexdigest()


@attrs.frozen(order=True)
class OutPoint:
    """A transaction output: ``txid:vout`` in text form (bark's encoding of VTXO ids too)."""

    txid: str
    vout: int

    def __str__(self) -> str:
        return f"{self.txid}:{self.vout}"

    @classmethod
    def parse(cls, text: str) -> OutPoint:
        txid, _, vout = text.rpartition(":")
        if not txid or not vout.isdigit():
            raise ValueError(f"not an outpoint (txid:vout): {text!r}")
        return cls(txid, int(vout))


@attrs.frozen
class TxOut:
    """An on-chain output: an address (any string: wallet, board script, destination) and sats."""

    address: str
    amount: int


@attrs.frozen
class Tx:
    """An on-chain transaction.

    ``txid`` covers inputs and outputs only, never ``signed``: like a PSBT's unsigned txid it
    is known (and stable) before the signatures exist. Only a ``signed`` tx can be broadcast.
    """

    txid: str
    inputs: list[OutPoint]
    outputs: list[TxOut]
    signed: bool

    @classmethod
    def build(cls, inputs: list[OutPoint], outputs: list[TxOut], *, signed: bool) -> Tx:
        parts = [str(i) for i in inputs] + [f"{o.address}={o.amount}" for o in outputs]
        return cls(digest("tx", *parts), list(inputs), list(outputs), signed)

    def with_signatures(self) -> Tx:
        return attrs.evolve(self, signed=True)

    def outpoint(self, vout: int) -> OutPoint:
        return OutPoint(self.txid, vout)


@attrs.frozen
class PubkeyPolicy:
    """A plain VTXO: spendable by ``pubkey`` (with the server's cosignature)."""

    pubkey: str


@attrs.frozen
class ServerHtlcSendPolicy:
    """An outgoing Lightning HTLC: the server takes it with the preimage of ``payment_hash``;
    ``pubkey`` (the wallet's HTLC key) gets it back by revocation or after ``expiry_height``."""

    pubkey: str
    payment_hash: str
    expiry_height: int


@attrs.frozen
class HtlcRecvPolicy:
    """An incoming Lightning HTLC: ``pubkey`` takes it by revealing the preimage of
    ``payment_hash`` before ``expiry_height``; after that it goes back to the server."""

    pubkey: str
    payment_hash: str
    expiry_height: int


Policy = PubkeyPolicy | ServerHtlcSendPolicy | HtlcRecvPolicy


@attrs.frozen
class Vtxo:
    """A virtual UTXO.

    ``id`` is ``<txid>:<vout>`` of the (virtual) transaction that created it; ``anchor_txid``
    the on-chain transaction its chain hangs from (for a board: the funding tx). ``depth``
    counts the out-of-round spends between the anchor and this VTXO: its unilateral exit
    broadcasts ``depth + 1`` transactions one after the other (`exit_path`), so the server
    caps it (``ServerInfo.max_arkoor_depth``).
    """

    id: str
    amount: int
    expiry_height: int
    policy: Policy
    anchor_txid: str
    depth: int = 0

    @property
    def pubkey(self) -> str:
        """The owner key: who spends it (or gets it back, for HTLC policies)."""
        return self.policy.pubkey

    @property
    def resource(self) -> str:
        """The fsm resource name an action holds while it uses this VTXO."""
        return vtxo_resource(self.id)


BOARD_PREFIX = "board:"


def board_address(pubkey: str) -> str:
    """The on-chain address a board funding tx pays (the board script of ``pubkey``)."""
    return f"{BOARD_PREFIX}{pubkey}"


def vtxo_resource(vtxo_id: str) -> str:
    """``vtxo.<id>``: the resource name that stands for bark's ``Locked{Action{id}}``."""
    return f"vtxo.{vtxo_id}"


@attrs.frozen
class VtxoRequest:
    """An output a wallet asks the server to cosign: amount and policy (no id yet)."""

    amount: int
    policy: Policy


def spend_outputs(
    kind: str,
    input_ids: list[str],
    outputs: list[VtxoRequest],
    expiry_height: int,
    anchor: str,
    depth: int = 0,
) -> list[Vtxo]:
    """The VTXOs an out-of-round spend of ``input_ids`` into ``outputs`` creates (at
    ``depth``: one more than the deepest input's; 0 for a VTXO hanging from its anchor).

    Deterministic: the same sorted inputs and outputs give the same virtual txid, so a retried
    cosign produces byte-identical VTXOs (the server recognises it as a replay).
    """
    parts = sorted(input_ids) + [f"{o.amount}/{o.policy!r}" for o in outputs]
    txid = digest(kind, *parts)
    return [
        Vtxo(f"{txid}:{vout}", o.amount, expiry_height, o.policy, anchor, depth)
        for vout, o in enumerate(outputs)
    ]


def round_participation_id(input_ids: list[str], outputs: list[VtxoRequest]) -> str:
    """The natural id of a round participation: the same inputs for the same outputs are the
    same participation (so a wallet can ask about one whose registration answer it lost)."""
    parts = sorted(input_ids) + [f"{o.amount}/{o.policy!r}" for o in outputs]
    return digest("round-part", *parts)


EXIT_PREFIX = "exit:"
EXIT_HOP_PREFIX = "exit-hop:"


def exit_address(vtxo_id: str, exit_delta: int) -> str:
    """The output the last exit tx of ``vtxo_id`` creates: the owner may spend it only
    ``exit_delta`` blocks after it confirmed (the script's relative timelock, which the
    simulated chain reads from the address)."""
    return f"{EXIT_PREFIX}{exit_delta}:{vtxo_id}"


def exit_timelock(address: str) -> int | None:
    """The relative timelock of an exit output's address (``None``: not an exit output)."""
    if not address.startswith(EXIT_PREFIX):
        return None
    return int(address.removeprefix(EXIT_PREFIX).split(":", 1)[0])


def exited_vtxo(address: str) -> str | None:
    """The VTXO an output of an exit tx belongs to (``None``: not an exit tx's output)."""
    for prefix in (EXIT_PREFIX, EXIT_HOP_PREFIX):
        if address.startswith(prefix):
            return address.removeprefix(prefix).split(":", 1)[1]
    return None


def exit_path(vtxo: Vtxo, exit_delta: int) -> list[Tx]:
    """The signed transactions of ``vtxo``'s unilateral exit, parent first: ``depth + 1`` of
    them, each spending the one before (the first hangs from the anchor, already on chain in
    the real protocol: here it has no inputs), the last paying `exit_address`. They pay no
    fee themselves (signed long before anyone knows the fee rate): each has a zero-value fee
    anchor (output `ANCHOR_VOUT`, `anchor_address`) that a child spends with a coin of the
    wallet's to pay for both (CPFP, bark's exit system); the chain mines none without it."""
    txs: list[Tx] = []
    for hop in range(vtxo.depth + 1):
        last = hop == vtxo.depth
        address = exit_address(vtxo.id, exit_delta) if last else f"{EXIT_HOP_PREFIX}{hop}:{vtxo.id}"
        inputs = [txs[-1].outpoint(0)] if txs else []
        outputs = [TxOut(address, vtxo.amount), TxOut(anchor_address(vtxo.id, hop), 0)]
        txs.append(Tx.build(inputs, outputs, signed=True))
    return txs


ANCHOR_PREFIX = "anchor:"
ANCHOR_VOUT = 1
"""The fee anchor's output index in an exit tx (the path's own output is 0)."""


def anchor_address(vtxo_id: str, hop: int) -> str:
    """The zero-value fee anchor of exit tx ``hop`` of ``vtxo_id``: anyone may spend it, so
    its child can pay the fee the tx does not (a pay-to-anchor output)."""
    return f"{ANCHOR_PREFIX}{hop}:{vtxo_id}"


def fee_anchor(tx: Tx) -> OutPoint | None:
    """The fee anchor of ``tx`` (``None``: it has none, it pays its own fee)."""
    if len(tx.outputs) > ANCHOR_VOUT and tx.outputs[ANCHOR_VOUT].address.startswith(ANCHOR_PREFIX):
        return tx.outpoint(ANCHOR_VOUT)
    return None


class Network(enum.Enum):
    REGTEST = "regtest"
    SIGNET = "signet"
    BITCOIN = "bitcoin"


@attrs.frozen
class Invoice:
    """A Lightning invoice: ``encoded`` is its string form.

    A BOLT11 invoice stand-in, or, with ``offer_id``, a BOLT12 invoice: one the payee issued
    for an invoice request made from its offer, signed by the offer's node (``signature``,
    `bolt12_signature`), which is how a payer tells it was issued for that offer.
    """

    payment_hash: str
    amount: int
    expires_at: float
    network: Network
    description: str = ""
    offer_id: str | None = None
    signature: str | None = None

    @property
    def encoded(self) -> str:
        prefix = "lnsim1" if self.offer_id is None else "lnisim1"
        return f"{prefix}{self.network.value}{self.amount}x{self.payment_hash}"


@attrs.frozen
class Offer:
    """A BOLT12 offer: a reusable payment code. Paying it fetches an invoice from its node
    (each fetch a new invoice, with a payment hash of its own); ``amount`` 0 lets the payer
    choose the amount."""

    offer_id: str
    node_id: str
    amount: int
    network: Network
    description: str = ""
    expires_at: float | None = None

    @property
    def encoded(self) -> str:
        return f"lnosim1{self.network.value}{self.amount}x{self.offer_id}"


def bolt12_signature(node_id: str, offer_id: str, payment_hash: str, amount: int) -> str:
    """The offer node's signature over a BOLT12 invoice (no cryptography in the sim: a digest
    a proxy rewriting the invoice cannot make match again, as it cannot sign)."""
    return digest("bolt12-invoice", node_id, offer_id, payment_hash, amount)


@attrs.frozen
class ArkAddress:
    """Where an arkoor payment goes: the recipient's key and the mailboxes to deliver to."""

    pubkey: str
    mailbox_ids: list[str]
    network: Network = Network.REGTEST


class VtxoState(enum.Enum):
    """A wallet VTXO's state. Bark's ``Locked`` is not a state here: it is an fsm resource
    (`vtxo_resource`) held by the action using the VTXO, released with the action's row."""

    SPENDABLE = "spendable"
    SPENT = "spent"
    EXITED = "exited"


class MovementStatus(enum.Enum):
    PENDING = "pending"
    SUCCESSFUL = "successful"
    FAILED = "failed"
    CANCELED = "canceled"


@attrs.frozen
class Movement:
    """The wallet's user-facing history record of one operation.

    ``intended_balance`` is what the user asked for, ``effective_balance`` what actually
    moved (negative = out of the wallet); ``action_id`` links it to the action that created it
    (unique, giving get-or-create semantics).
    """

    id: int
    kind: str
    status: MovementStatus
    intended_balance: int
    effective_balance: int
    fee: int
    consumed: list[str] = attrs.Factory(list)
    produced: list[str] = attrs.Factory(list)
    metadata: dict[str, str] = attrs.Factory(dict)
    action_id: str | None = None


@attrs.frozen
class MovementUpdate:
    """Changes to a movement; ``None`` leaves a field as it is, lists are added to (no
    duplicates), metadata keys are set."""

    status: MovementStatus | None = None
    effective_balance: int | None = None
    fee: int | None = None
    consumed: list[str] = attrs.Factory(list)
    produced: list[str] = attrs.Factory(list)
    metadata: dict[str, str] = attrs.Factory(dict)


def change_pieces(change: int, payment: int, split_factor: int) -> list[int]:
    """Bark's change split (shared by arkoor send, lightning send and send-onchain).

    No change: no pieces. Change larger than the payment: ``split_factor`` equal pieces (the
    remainder added to the last), so one payment does not leave one deep VTXO chain; otherwise
    one piece. Stored on the action so a retry reuses the same split.
    """
    if change <= 0:
        return []
    n = max(1, split_factor) if change > payment else 1
    base = change // n
    return [base] * (n - 1) + [change - base * (n - 1)]

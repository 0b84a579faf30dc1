"""`ServerState`, the whole simulated server's state: `server_sends.ServerSends` (the Ark core
and Lightning sends) plus the receive half: invoice, the payer's HTLC, grant, claim, cancel
and the expiry of unclaimed grants, including intra-Ark payments, where the payer is a send of
this same server (the claim settles it).
"""

from __future__ import annotations

import orjson

from ..model import (
    HtlcRecvPolicy,
    Invoice,
    PubkeyPolicy,
    Vtxo,
    VtxoRequest,
    digest,
    payment_hash_of,
    spend_outputs,
)
from ..services.ark_records import ReceiveGrant, ReceiveRecord, ReceiveState, ReceiveStatus
from ..services.ark_server import NOT_FOUND
from ..services.lightning_node import PaymentState, PaymentStatus
from .ark_state import LIVE, Applied, rejected
from .db import dump, load
from .ledger import Flow
from .server_sends import COMMITTED, INTRA_ARK, LN_SEND_SCHEMA, ServerSends

LN_RECEIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_ln_recv (
    payment_hash TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    invoice TEXT NOT NULL,
    status TEXT NOT NULL,
    paid INTEGER NOT NULL DEFAULT 0,
    payer TEXT,
    grant_body TEXT,
    claim TEXT,
    preimage TEXT
)
"""

LN_SERVER_SCHEMA = ";".join([LN_SEND_SCHEMA, LN_RECEIVE_SCHEMA])


class ServerState(ServerSends):
    """The whole simulated server (Ark core + Lightning sends and receives)."""

    def start_receive(
        self, payment_hash: str, amount: int, cltv_delta: int, description: str, request: str
    ) -> Applied[Invoice]:
        effect = f"ln_recv_start:{payment_hash}"
        row = self.db.one(
            "SELECT request, invoice FROM srv_ln_recv WHERE payment_hash = ?", (payment_hash,)
        )
        if row is not None:
            if row[0] != request:
                raise rejected(f"a receive for {payment_hash} already exists")
            invoice: Invoice = load(row[1], Invoice)
            return Applied(invoice, effect, f"start receive {payment_hash} (again)", False)
        info = self.info()
        if amount <= 0:
            raise rejected("amount must be positive")
        if cltv_delta > info.max_htlc_recv_cltv_delta:
            raise rejected(f"cltv delta {cltv_delta} above {info.max_htlc_recv_cltv_delta}")
        expires = self.clock.now() + 3600.0
        invoice = Invoice(payment_hash, amount, expires, info.network, description)
        self.db.run(
            "INSERT INTO srv_ln_recv (payment_hash, request, invoice, status) VALUES (?, ?, ?, ?)",
            (payment_hash, request, dump(invoice), ReceiveState.CREATED.value),
        )
        return Applied(invoice, effect, f"start receive {payment_hash} of {amount}")

    def receive_status(self, payment_hash: str) -> ReceiveStatus:
        row = self.db.one(
            "SELECT status, paid FROM srv_ln_recv WHERE payment_hash = ?", (payment_hash,)
        )
        if row is None:
            raise rejected(f"no receive {payment_hash}", NOT_FOUND)
        return ReceiveStatus(ReceiveState(row[0]), int(row[1]))

    def receives_of(self, mailbox_id: str) -> list[ReceiveRecord]:
        """Open receives (not settled or canceled) started for ``mailbox_id``."""
        out = []
        for request, invoice, status in self.db.all(
            "SELECT request, invoice, status FROM srv_ln_recv ORDER BY rowid"
        ):
            _, _, cltv_delta, mailbox, _ = orjson.loads(request)
            state = ReceiveState(status)
            if mailbox == mailbox_id and state not in (ReceiveState.SETTLED, ReceiveState.CANCELED):
                out.append(ReceiveRecord(load(invoice, Invoice), int(cltv_delta), state))
        return out

    def accept_payment(self, invoice: Invoice, key: str) -> None:
        """An external payer's HTLC for a receive arrives (idempotent)."""
        with self.db.transaction():
            status = self._recv_status(invoice.payment_hash)
            if status is None:
                raise rejected(f"no receive {invoice.payment_hash}", NOT_FOUND)
            if status != ReceiveState.CREATED.value:
                return
            if self.clock.now() > invoice.expires_at:
                raise rejected(f"invoice {invoice.payment_hash} has expired")
            self.db.run(
                "UPDATE srv_ln_recv SET status = ?, paid = ?, payer = ? WHERE payment_hash = ?",
                (ReceiveState.ACCEPTED.value, invoice.amount, key, invoice.payment_hash),
            )

    def payer_status(self, payment_hash: str) -> PaymentStatus:
        """The external payer's view of its payment to a receive."""
        row = self.db.one(
            "SELECT status, preimage FROM srv_ln_recv WHERE payment_hash = ?", (payment_hash,)
        )
        if row is None:
            return PaymentStatus(PaymentState.UNKNOWN)
        if row[0] == ReceiveState.SETTLED.value:
            return PaymentStatus(PaymentState.SUCCEEDED, row[1])
        if row[0] == ReceiveState.CANCELED.value:
            return PaymentStatus(PaymentState.FAILED)
        return PaymentStatus(PaymentState.PENDING)

    def grant(
        self, payment_hash: str, user_pubkey: str, htlc_expiry: int, key: str
    ) -> Applied[ReceiveGrant]:
        row = self.db.one(
            "SELECT status, paid, grant_body FROM srv_ln_recv WHERE payment_hash = ?",
            (payment_hash,),
        )
        effect = f"ln_recv_grant:{payment_hash}"
        if row is None or row[0] == ReceiveState.CANCELED.value:
            raise rejected(f"no live receive {payment_hash}", NOT_FOUND)
        if row[2] is not None:
            prior: ReceiveGrant = load(row[2], ReceiveGrant)
            return Applied(prior, effect, f"grant {payment_hash} (again)", False)
        if row[0] != ReceiveState.ACCEPTED.value:
            raise rejected(f"receive {payment_hash} has not been paid")
        paid = int(row[1])
        fee = self.info().lightning_receive_fee(paid)
        [htlc] = spend_outputs(
            "ln_recv",
            [payment_hash],
            [VtxoRequest(paid - fee, HtlcRecvPolicy(user_pubkey, payment_hash, htlc_expiry))],
            self.chain.tip() + self.info().vtxo_expiry_delta,
            digest("ln_recv_anchor", payment_hash),
        )
        grant = ReceiveGrant([htlc], paid)
        self.insert_vtxos([htlc], LIVE)
        self.db.run(
            "UPDATE srv_ln_recv SET status = ?, grant_body = ? WHERE payment_hash = ?",
            (ReceiveState.HTLCS_READY.value, dump(grant), payment_hash),
        )
        self.ledger.flow(key, Flow.LN_IN, paid, f"ln receive {payment_hash}")
        self.ledger.flow(key, Flow.SERVER_FEE, fee, f"ln receive {payment_hash}")
        return Applied(grant, effect, f"grant {payment_hash}: {paid - fee} of {paid}")

    def claim(
        self, payment_hash: str, preimage: str, htlc_ids: list[str], destination: object
    ) -> Applied[list[Vtxo]]:
        if payment_hash_of(preimage) != payment_hash:
            raise rejected("preimage does not match the payment hash")
        row = self.db.one(
            "SELECT status, grant_body, claim, payer FROM srv_ln_recv WHERE payment_hash = ?",
            (payment_hash,),
        )
        effect = f"ln_recv_claim:{payment_hash}"
        if row is None or row[1] is None:
            raise rejected(f"no granted receive {payment_hash}", NOT_FOUND)
        if row[2] is not None:
            prior: list[Vtxo] = load(row[2], list[Vtxo])
            return Applied(prior, effect, f"claim {payment_hash} (again)", False)
        if row[0] != ReceiveState.HTLCS_READY.value:
            raise rejected(f"receive {payment_hash} is {row[0]}", NOT_FOUND)
        grant: ReceiveGrant = load(row[1], ReceiveGrant)
        if sorted(htlc_ids) != sorted(v.id for v in grant.htlc_vtxos):
            raise rejected("claim must spend exactly the granted HTLCs")
        if not isinstance(destination, PubkeyPolicy):
            raise rejected("claim destination must be a plain pubkey policy")
        spender = digest("ln_claim", payment_hash)
        inputs, _ = self.live_inputs(sorted(htlc_ids), spender)
        request = VtxoRequest(sum(v.amount for v in inputs), destination)
        outputs = self.outputs_of(spender, [request], inputs)
        self.spend(sorted(htlc_ids), spender)
        self.insert_vtxos(outputs, LIVE)
        self.db.run(
            "UPDATE srv_ln_recv SET status = ?, claim = ?, preimage = ? WHERE payment_hash = ?",
            (ReceiveState.SETTLED.value, dump(outputs), preimage, payment_hash),
        )
        if row[3] == INTRA_ARK and self._send(payment_hash) is not None:
            self._settle_send(payment_hash, preimage)
        return Applied(outputs, effect, f"claim {payment_hash}")

    def cancel_receive(self, payment_hash: str) -> Applied[None]:
        status = self._recv_status(payment_hash)
        effect = f"ln_recv_cancel:{payment_hash}"
        if status is None:
            raise rejected(f"no receive {payment_hash}", NOT_FOUND)
        if status == ReceiveState.CANCELED.value:
            return Applied(None, effect, f"cancel {payment_hash} (again)", False)
        if status in COMMITTED:
            raise rejected(f"receive {payment_hash} is {status}; cannot cancel")
        self._cancel_recv(payment_hash)
        return Applied(None, effect, f"cancel {payment_hash}")

    def expire_receives(self) -> None:
        """After a block: take back granted, unclaimed HTLC-recv VTXOs past their expiry, and
        return the money to the payer (reversing the receive's flows)."""
        tip = self.chain.tip()
        rows = self.db.all(
            "SELECT payment_hash, paid, grant_body FROM srv_ln_recv WHERE status = ?",
            (ReceiveState.HTLCS_READY.value,),
        )
        for payment_hash, paid, body in rows:
            grant: ReceiveGrant = load(body, ReceiveGrant)
            expiries = [
                v.policy.expiry_height
                for v in grant.htlc_vtxos
                if isinstance(v.policy, HtlcRecvPolicy)
            ]
            if not expiries or tip <= min(expiries):
                continue
            key = f"server.expire.{payment_hash}"
            with self.db.transaction():
                self.spend([v.id for v in grant.htlc_vtxos], f"ln_expire:{payment_hash}")
                self._cancel_recv(payment_hash)
                fee = int(paid) - sum(v.amount for v in grant.htlc_vtxos)
                self.ledger.flow(key, Flow.LN_IN, -int(paid), f"expired {payment_hash}")
                self.ledger.flow(key, Flow.SERVER_FEE, -fee, f"expired {payment_hash}")
                self.ledger.record(
                    key, "expire_lightning_receive", "", f"ln_recv_expire:{payment_hash}",
                    f"expire {payment_hash}", "null", applied=True,
                )  # fmt: skip

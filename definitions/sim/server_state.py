"""`ServerState`, the whole simulated server's state: `ark_state.ArkState` plus the Lightning
half, sends (HTLC cosign, payment, revocation) and receives (invoice, grant, claim), including
intra-Ark payments, where the payee is a receive of this same server.

The anti-drain rule of the reference is enforced: a send's HTLCs cannot be revoked while the
receive side of an intra-Ark payment is committed (its HTLC-recv VTXOs granted).
"""

from __future__ import annotations

import attrs

from ..model import (
    HtlcRecvPolicy,
    Invoice,
    PubkeyPolicy,
    ServerHtlcSendPolicy,
    Vtxo,
    VtxoRequest,
    digest,
    payment_hash_of,
    spend_outputs,
)
from ..services.ark_records import HtlcSendRequest, ReceiveGrant, ReceiveState, ReceiveStatus
from ..services.ark_server import NOT_FOUND
from ..services.lightning_node import PaymentState, PaymentStatus
from .ark_state import LIVE, Applied, ArkState, rejected
from .db import dump, load
from .ledger import Flow, request_digest

LN_SERVER_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_ln_send (
    payment_hash TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    outputs TEXT NOT NULL,
    amount INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    htlc_expiry INTEGER NOT NULL,
    status TEXT NOT NULL,
    preimage TEXT,
    revoked TEXT
);
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

COSIGNED = "cosigned"
INITIATED = "initiated"
SUCCEEDED = "succeeded"
FAILED = "failed"
REVOKED = "revoked"
INTRA_ARK = "ark"
COMMITTED = (ReceiveState.HTLCS_READY.value, ReceiveState.SETTLED.value)


@attrs.frozen
class _Send:
    request: HtlcSendRequest
    outputs: list[Vtxo]
    fee: int
    status: str
    preimage: str | None
    revoked: list[Vtxo] | None


class ServerState(ArkState):
    """The whole simulated server (Ark core + Lightning)."""

    # -- lightning send ------------------------------------------------------------------

    def _send(self, payment_hash: str) -> _Send | None:
        row = self.db.one(
            "SELECT request, outputs, fee, status, preimage, revoked FROM srv_ln_send "
            "WHERE payment_hash = ?",
            (payment_hash,),
        )
        if row is None:
            return None
        return _Send(
            load(row[0], HtlcSendRequest),
            load(row[1], list[Vtxo]),
            int(row[2]),
            str(row[3]),
            row[4],
            None if row[5] is None else load(row[5], list[Vtxo]),
        )

    def _set_send(self, payment_hash: str, status: str, **extra: str) -> None:
        sets = ", ".join(["status = ?", *(f"{k} = ?" for k in extra)])
        self.db.run(
            f"UPDATE srv_ln_send SET {sets} WHERE payment_hash = ?",
            (status, *extra.values(), payment_hash),
        )

    def htlc_cosign(self, req: HtlcSendRequest) -> Applied[list[Vtxo]]:
        h = req.invoice.payment_hash
        request = dump(req)
        prior = self._send(h)
        effect = f"ln_send_cosign:{h}:{request_digest(request)}"
        if prior is not None and dump(prior.request) == request and prior.status != REVOKED:
            return Applied(prior.outputs, effect, f"htlc cosign {h} (again)", False)
        if prior is not None and prior.status == SUCCEEDED:
            raise rejected(f"invoice {h} is already paid")
        if prior is not None and prior.status not in (FAILED, REVOKED):
            raise rejected(f"a payment of {h} is already in progress")
        if req.amount <= 0:
            raise rejected("payment amount must be positive")
        fee = self.info().lightning_send_fee(req.amount)
        htlc = VtxoRequest(
            req.amount + fee, ServerHtlcSendPolicy(req.htlc_pubkey, h, req.htlc_expiry)
        )
        spender = digest("ln_send", h, request)
        inputs, _ = self.live_inputs(sorted(req.input_ids), spender)
        if sum(v.amount for v in inputs) != htlc.amount + sum(c.amount for c in req.change):
            raise rejected("inputs do not cover exactly the HTLC, its fee and the change")
        outputs = self.outputs_of(spender, [htlc, *req.change], inputs)
        self.spend([v.id for v in inputs], spender)
        self.insert_vtxos(outputs, LIVE)
        self.db.run(
            "INSERT OR REPLACE INTO srv_ln_send (payment_hash, request, outputs, amount, fee, "
            "htlc_expiry, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (h, request, dump(outputs), req.amount, fee, req.htlc_expiry, COSIGNED),
        )
        return Applied(outputs, effect, f"htlc cosign {h}")

    def initiate(self, invoice: Invoice, htlc_ids: list[str], amount: int) -> Applied[None]:
        h = invoice.payment_hash
        send = self._send(h)
        effect = f"ln_send_initiate:{h}:{min(htlc_ids, default='')}"  # one per HTLC attempt
        if send is None or sorted(htlc_ids) != sorted(v.id for v in send.outputs[:1]):
            raise rejected(f"no HTLCs for payment {h}", NOT_FOUND)
        if send.status != COSIGNED:
            return Applied(None, effect, f"initiate {h} (again)", False)
        if self.clock.now() > invoice.expires_at:
            raise rejected(f"invoice {h} has expired")
        self._set_send(h, INITIATED)
        recv = self._recv_status(h)
        if recv == ReceiveState.CREATED.value:
            self.db.run(
                "UPDATE srv_ln_recv SET status = ?, paid = ?, payer = ? WHERE payment_hash = ?",
                (ReceiveState.ACCEPTED.value, amount, INTRA_ARK, h),
            )
        return Applied(None, effect, f"initiate payment {h} of {amount}")

    def payment_status(self, payment_hash: str) -> PaymentStatus:
        """The send's status; polls the route and settles or fails it when decided."""
        with self.db.transaction():
            send = self._send(payment_hash)
            if send is None:
                return PaymentStatus(PaymentState.UNKNOWN)
            if send.status == SUCCEEDED:
                return PaymentStatus(PaymentState.SUCCEEDED, send.preimage)
            if send.status in (FAILED, REVOKED):
                return PaymentStatus(PaymentState.FAILED)
            if send.status == COSIGNED:
                return PaymentStatus(PaymentState.PENDING)
            recv = self.db.one(
                "SELECT status, preimage, payer FROM srv_ln_recv WHERE payment_hash = ?",
                (payment_hash,),
            )
            if recv is not None and recv[2] == INTRA_ARK:
                if recv[0] == ReceiveState.CANCELED.value:
                    self._set_send(payment_hash, FAILED)
                    return PaymentStatus(PaymentState.FAILED)
                return PaymentStatus(PaymentState.PENDING)
            if self.chain.tip() > send.request.htlc_expiry:
                self._set_send(payment_hash, FAILED)
                return PaymentStatus(PaymentState.FAILED)
            routed = self.ln.route(payment_hash)
            if routed.state is PaymentState.SUCCEEDED and routed.preimage is not None:
                self._settle_send(payment_hash, routed.preimage)
            elif routed.state is PaymentState.FAILED:
                self._set_send(payment_hash, FAILED)
            return routed

    def _settle_send(self, payment_hash: str, preimage: str) -> None:
        send = self._send(payment_hash)
        assert send is not None
        key = f"server.settle.{payment_hash}"
        self.spend([send.outputs[0].id], f"ln_settle:{payment_hash}")
        self._set_send(payment_hash, SUCCEEDED, preimage=preimage)
        self.ledger.flow(key, Flow.LN_OUT, send.request.amount, f"ln send {payment_hash}")
        self.ledger.flow(key, Flow.SERVER_FEE, send.fee, f"ln send {payment_hash}")
        self.ledger.record(
            key, "settle_lightning_payment", "", f"ln_send_settle:{payment_hash}",
            f"settle {payment_hash}", "null", applied=True,
        )  # fmt: skip

    def revoke(self, htlc_ids: list[str], revocation_pubkey: str) -> Applied[list[Vtxo]]:
        vtxos = [row[0] for vid in htlc_ids if (row := self.vtxo(vid)) is not None]
        policies = {v.policy for v in vtxos}
        if len(vtxos) != len(htlc_ids) or len(policies) != 1:
            raise rejected("unknown HTLC vtxos", NOT_FOUND)
        [policy] = policies
        if not isinstance(policy, ServerHtlcSendPolicy):
            raise rejected("not lightning send HTLCs")
        h = policy.payment_hash
        send = self._send(h)
        if send is None:
            raise rejected(f"no payment {h}", NOT_FOUND)
        effect = f"ln_send_revoke:{h}:{send.outputs[0].id}"
        if send.status == REVOKED and send.revoked is not None:
            return Applied(send.revoked, effect, f"revoke {h} (again)", False)
        if send.status == SUCCEEDED:
            raise rejected(f"payment {h} succeeded; nothing to revoke")
        recv = self._linked_recv(h)
        if recv in COMMITTED:
            raise rejected(f"the receive side of {h} is committed; cannot revoke")
        expired = self.chain.tip() > policy.expiry_height
        if send.status == INITIATED and not expired:
            raise rejected(f"payment {h} is still in flight")
        if recv is not None:
            self._cancel_recv(h)
        request = VtxoRequest(sum(v.amount for v in vtxos), PubkeyPolicy(revocation_pubkey))
        spender = digest("ln_revoke", h, *sorted(htlc_ids))
        inputs, _ = self.live_inputs(sorted(htlc_ids), spender)
        outputs = self.outputs_of(spender, [request], inputs)
        self.spend(sorted(htlc_ids), spender)
        self.insert_vtxos(outputs, LIVE)
        self._set_send(h, REVOKED, revoked=dump(outputs))
        return Applied(outputs, effect, f"revoke {h}")

    # -- lightning receive ---------------------------------------------------------------

    def _linked_recv(self, payment_hash: str) -> str | None:
        """The status of the receive an intra-Ark send of this hash pays (None: none does;
        a receive and a send that only share the hash are separate things)."""
        row = self.db.one(
            "SELECT status FROM srv_ln_recv WHERE payment_hash = ? AND payer = ?",
            (payment_hash, INTRA_ARK),
        )
        return None if row is None else str(row[0])

    def _recv_status(self, payment_hash: str) -> str | None:
        row = self.db.one("SELECT status FROM srv_ln_recv WHERE payment_hash = ?", (payment_hash,))
        return None if row is None else str(row[0])

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
        fee = self.info().lightning_receive_fee
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

    def _cancel_recv(self, payment_hash: str) -> None:
        """Cancel the receive; an intra-Ark send paying it fails with it, no other send."""
        linked = self._linked_recv(payment_hash) is not None
        self.db.run(
            "UPDATE srv_ln_recv SET status = ? WHERE payment_hash = ?",
            (ReceiveState.CANCELED.value, payment_hash),
        )
        send = self._send(payment_hash)
        if linked and send is not None and send.status == INITIATED:
            self._set_send(payment_hash, FAILED)

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

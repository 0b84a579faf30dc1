"""`ServerSends`, the send half of the simulated server's Lightning state on top of
`ark_state.ArkState`: a send's HTLC cosign, its payment (initiate, status polling, settling)
and its revocation, the invoice of a BOLT12 offer, and the reads of the receive side an
intra-Ark send needs (the receive it pays, cancelling it).

The anti-drain rule of the reference is enforced here: a send's HTLCs cannot be revoked while
the receive side of an intra-Ark payment is committed (its HTLC-recv VTXOs granted). The
receive half is `server_state.ServerState`, the whole server.
"""

from __future__ import annotations

import attrs

from ..model import (
    Invoice,
    Offer,
    PubkeyPolicy,
    ServerHtlcSendPolicy,
    Vtxo,
    VtxoRequest,
    digest,
)
from ..services.ark_records import HtlcSendRequest, ReceiveState, SendRecord
from ..services.ark_server import NOT_FOUND
from ..services.lightning_node import PaymentState, PaymentStatus
from .ark_state import LIVE, Applied, ArkState, rejected
from .db import dump, load
from .ledger import Flow, request_digest
from .lightning_node import OfferRefused, UnknownOffer

LN_SEND_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_ln_send (
    payment_hash TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    outputs TEXT NOT NULL,
    amount INTEGER NOT NULL,
    fee INTEGER NOT NULL,
    htlc_expiry INTEGER NOT NULL,
    status TEXT NOT NULL,
    preimage TEXT,
    revoked TEXT,
    reason TEXT
)
"""

COSIGNED = "cosigned"
INITIATED = "initiated"
SUCCEEDED = "succeeded"
FAILED = "failed"
REVOKED = "revoked"
INTRA_ARK = "ark"
HTLC_EXPIRED = "the HTLC expired before the payment finished"
RECEIVE_CANCELED = "the receive it paid was canceled"
COMMITTED = (ReceiveState.HTLCS_READY.value, ReceiveState.SETTLED.value)


@attrs.frozen
class _Send:
    request: HtlcSendRequest
    outputs: list[Vtxo]
    fee: int
    status: str
    preimage: str | None
    revoked: list[Vtxo] | None
    reason: str | None


class ServerSends(ArkState):
    """The Ark core plus Lightning sends (and the links of intra-Ark sends to receives)."""

    # -- lightning send ------------------------------------------------------------------

    def _send(self, payment_hash: str) -> _Send | None:
        row = self.db.one(
            "SELECT request, outputs, fee, status, preimage, revoked, reason FROM srv_ln_send "
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
            row[6],
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
        if req.fee != fee:
            raise rejected(f"lightning send fee {req.fee} is no longer valid")
        htlc = VtxoRequest(
            req.amount + fee, ServerHtlcSendPolicy(req.htlc_pubkey, h, req.htlc_expiry)
        )
        spender = digest("ln_send", h, request)
        inputs, _ = self.live_inputs(sorted(req.input_ids), spender)
        self.check_depth(inputs)
        if sum(v.amount for v in inputs) != htlc.amount + sum(c.amount for c in req.change):
            raise rejected("inputs do not cover exactly the HTLC, its fee and the change")
        recovery = req.recovery
        if recovery is not None and not set(recovery.outputs) <= set(range(1 + len(req.change))):
            raise rejected(
                f"recovery post names outputs {recovery.outputs} of {1 + len(req.change)}"
            )
        outputs = self.outputs_of(spender, [htlc, *req.change], inputs)
        self.spend([v.id for v in inputs], spender)
        self.insert_vtxos(outputs, LIVE)
        if recovery is not None:  # with the spend: the change cannot be lost in between
            self.post(recovery.mailbox_id, [outputs[i] for i in sorted(set(recovery.outputs))])
        self.db.run(
            "INSERT OR REPLACE INTO srv_ln_send (payment_hash, request, outputs, amount, fee, "
            "htlc_expiry, status) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (h, request, dump(outputs), req.amount, fee, req.htlc_expiry, COSIGNED),
        )
        return Applied(outputs, effect, f"htlc cosign {h}")

    def sends_of(self, mailbox_id: str) -> list[SendRecord]:
        """The open sends (neither settled nor revoked) whose cosign's recovery post named
        ``mailbox_id``: the ones whose HTLC is still the sender's to settle or revoke."""
        out = []
        for (h,) in self.db.all(
            "SELECT payment_hash FROM srv_ln_send WHERE status NOT IN (?, ?) ORDER BY rowid",
            (SUCCEEDED, REVOKED),
        ):
            send = self._send(str(h))
            assert send is not None
            recovery = send.request.recovery
            if recovery is not None and recovery.mailbox_id == mailbox_id:
                out.append(SendRecord(send.request, send.outputs[:1]))
        return out

    def fetch_offer_invoice(self, offer: Offer, amount: int | None) -> Invoice:
        """bark's ``fetch_bolt12_invoice``: the server's node asks the offer's node for an
        invoice (a new one each time); its refusals are the server's."""
        if offer.network is not self.info().network:
            raise rejected(f"offer is for {offer.network.value}")
        try:
            return self.ln.fetch_invoice(offer, amount)
        except UnknownOffer as exc:
            raise rejected(str(exc), NOT_FOUND) from exc
        except OfferRefused as exc:
            raise rejected(str(exc)) from exc

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
            return Applied(None, effect, f"initiate payment {h} of {amount} (intra-Ark)")
        started = self.ln.start_payment(h, send.request.amount)
        if started.state is PaymentState.FAILED:
            self._set_send(h, FAILED, reason=started.error or "payment failed")
            return Applied(None, effect, f"initiate payment {h}: failed ({started.error})")
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
                return PaymentStatus(PaymentState.FAILED, error=send.reason)
            if send.status == COSIGNED:
                return PaymentStatus(PaymentState.PENDING)
            recv = self.db.one(
                "SELECT status, preimage, payer FROM srv_ln_recv WHERE payment_hash = ?",
                (payment_hash,),
            )
            if recv is not None and recv[2] == INTRA_ARK:
                if recv[0] == ReceiveState.CANCELED.value:
                    self._set_send(payment_hash, FAILED, reason=RECEIVE_CANCELED)
                    return PaymentStatus(PaymentState.FAILED, error=RECEIVE_CANCELED)
                return PaymentStatus(PaymentState.PENDING)
            if self.chain.tip() > send.request.htlc_expiry:
                self.ln.abandon(payment_hash, HTLC_EXPIRED)
                self._set_send(payment_hash, FAILED, reason=HTLC_EXPIRED)
                return PaymentStatus(PaymentState.FAILED, error=HTLC_EXPIRED)
            routed = self.ln.route(payment_hash)
            if routed.state is PaymentState.SUCCEEDED and routed.preimage is not None:
                self._settle_send(payment_hash, routed.preimage)
            elif routed.state is PaymentState.FAILED:
                self._set_send(payment_hash, FAILED, reason=routed.error or "payment failed")
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
        if send.status == INITIATED:  # expired: the node's parts are failed back
            self.ln.abandon(h, HTLC_EXPIRED)
        request = VtxoRequest(sum(v.amount for v in vtxos), PubkeyPolicy(revocation_pubkey))
        spender = digest("ln_revoke", h, *sorted(htlc_ids))
        inputs, _ = self.live_inputs(sorted(htlc_ids), spender)
        outputs = self.outputs_of(spender, [request], inputs)
        self.spend(sorted(htlc_ids), spender)
        self.insert_vtxos(outputs, LIVE)
        if send.request.recovery is not None:  # the money back, where a restore looks
            self.post(send.request.recovery.mailbox_id, outputs)
        self._set_send(h, REVOKED, revoked=dump(outputs))
        return Applied(outputs, effect, f"revoke {h}")

    # -- the receive side a send reads or fails ------------------------------------------

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

    def _cancel_recv(self, payment_hash: str) -> None:
        """Cancel the receive; an intra-Ark send paying it fails with it, no other send."""
        linked = self._linked_recv(payment_hash) is not None
        self.db.run(
            "UPDATE srv_ln_recv SET status = ? WHERE payment_hash = ?",
            (ReceiveState.CANCELED.value, payment_hash),
        )
        send = self._send(payment_hash)
        if linked and send is not None and send.status == INITIATED:
            self._set_send(payment_hash, FAILED, reason=RECEIVE_CANCELED)

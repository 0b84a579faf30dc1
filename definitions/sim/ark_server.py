"""`SimArkServer`: the `ArkServer` a wallet talks to, with faults, ledger and replays.

Every state-changing call goes through `SimArkServer._call`:

1. the fault gate draws: ``DROP_REQUEST`` raises `ServerUnavailable` before anything happens,
   a rejection fault raises ``fsm.Rejected`` with its code, ``RESTART`` forgets the sessions
   and raises `ServerUnavailable`;
2. in one transaction: if the ledger knows the idempotency key, the stored response is
   returned (a replay, counted); else the request is applied and recorded with its response;
3. ``LOSE_RESPONSE`` raises `ServerUnavailable` *after* the commit: applied, answer lost.

The proxy may also lie: ``FAKE_SUCCESS`` answers a bare acknowledgement (a call that returns
nothing) without forwarding it, ``REWRITE`` rewrites a field of the true answer after the
commit (`lies.rewrite`; a replay returns the truth). Reads go through the same gate (a lost
read is just a transient error; a rewritten one lies).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar, cast

import fsm

from ..model import Invoice, Offer, Policy, Tx, Vtxo, VtxoRequest
from ..services.ark_records import (
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
from ..services.ark_server import INVALID_ARGUMENT, NOT_FOUND, ServerUnavailable
from ..services.lightning_node import PaymentStatus
from .ark_state import Applied
from .db import dump, load
from .ledger import request_digest
from .lies import rewrite
from .server_rounds import register_for_round, round_result
from .server_state import ServerState
from .world_faults import Fault, FaultGate

T = TypeVar("T")


class SimArkServer:
    def __init__(self, state: ServerState, gate: FaultGate) -> None:
        self.state = state
        self.gate = gate

    def _gate(self, rpc: str) -> Fault | None:
        fault = self.gate.draw(rpc)
        if fault is Fault.DROP_REQUEST:
            raise ServerUnavailable(f"{rpc}: request dropped")
        if fault is Fault.REJECT_INVALID_ARGUMENT:
            raise fsm.Rejected(f"{rpc}: refused (injected)", code=INVALID_ARGUMENT)
        if fault is Fault.REJECT_NOT_FOUND:
            raise fsm.Rejected(f"{rpc}: not found (injected)", code=NOT_FOUND)
        if fault is Fault.RESTART:
            self.state.restart()
            raise ServerUnavailable(f"{rpc}: server restarting")
        return fault

    def _call(
        self, rpc: str, key: str, request: list[Any], tp: Any, apply: Callable[[], Applied[T]]
    ) -> T:
        fault = self._gate(rpc)
        if fault is Fault.FAKE_SUCCESS and tp is type(None):
            return cast(T, None)  # an acknowledgement, never forwarded
        digest = request_digest(dump(request))
        db = self.state.db
        with db.transaction():
            stored = self.state.ledger.replay(key, rpc, digest)
            if stored is not None:
                value: T = load(stored, tp)
            else:
                done = apply()
                value = done.value
                self.state.ledger.record(
                    key, rpc, digest, done.effect_id, done.summary, dump(value),
                    applied=done.applied,
                )  # fmt: skip
        if fault is Fault.LOSE_RESPONSE:
            raise ServerUnavailable(f"{rpc}: response lost")
        if fault is Fault.REWRITE:
            lie: T = rewrite(value)
            return lie
        return value

    def _read(self, rpc: str, read: Callable[[], T]) -> T:
        fault = self._gate(rpc)
        value = read()
        if fault is Fault.LOSE_RESPONSE:
            raise ServerUnavailable(f"{rpc}: response lost")
        if fault is Fault.REWRITE:
            lie: T = rewrite(value)
            return lie
        return value

    # -- ArkServer -----------------------------------------------------------------------

    async def info(self) -> ServerInfo:
        return self._read("info", self.state.info)

    async def request_board_cosign(self, req: BoardRequest, idempotency_key: str) -> Vtxo:
        return self._call(
            "request_board_cosign", idempotency_key, [req], Vtxo,
            lambda: self.state.board_cosign(req),
        )  # fmt: skip

    async def register_board_vtxo(self, vtxo: Vtxo, idempotency_key: str) -> None:
        self._call(
            "register_board_vtxo", idempotency_key, [vtxo], type(None),
            lambda: self.state.register_board(vtxo, idempotency_key),
        )  # fmt: skip

    async def register_vtxo_transactions(self, vtxos: list[Vtxo], idempotency_key: str) -> None:
        self._call(
            "register_vtxo_transactions", idempotency_key, vtxos, type(None),
            lambda: self.state.register(vtxos),
        )  # fmt: skip

    async def request_arkoor_cosign(
        self,
        input_ids: list[str],
        outputs: list[VtxoRequest],
        idempotency_key: str,
        recovery: RecoveryPost | None = None,
    ) -> list[Vtxo]:
        request: list[Any] = [input_ids, outputs] + ([] if recovery is None else [recovery])
        return self._call(
            "request_arkoor_cosign", idempotency_key, request, list[Vtxo],
            lambda: self.state.arkoor_cosign(input_ids, outputs, recovery),
        )  # fmt: skip

    async def spent_vtxos(self, vtxo_ids: list[str]) -> list[str]:
        return self._read("spent_vtxos", lambda: self.state.spent_of(vtxo_ids))

    async def post_to_mailbox(
        self, mailbox_id: str, vtxos: list[Vtxo], idempotency_key: str
    ) -> None:
        self._call(
            "post_to_mailbox", idempotency_key, [mailbox_id, vtxos], type(None),
            lambda: self.state.post(mailbox_id, vtxos),
        )  # fmt: skip

    async def read_mailbox(self, mailbox_id: str) -> list[Vtxo]:
        return self._read("read_mailbox", lambda: self.state.mailbox(mailbox_id))

    async def prepare_offboard(
        self, req: OffboardRequest, idempotency_key: str
    ) -> PreparedOffboard:
        return self._call(
            "prepare_offboard", idempotency_key, [req], PreparedOffboard,
            lambda: self.state.prepare_offboard(req),
        )  # fmt: skip

    async def finish_offboard(self, txid: str, signatures: list[str], idempotency_key: str) -> Tx:
        return self._call(
            "finish_offboard", idempotency_key, [txid, signatures], Tx,
            lambda: self.state.finish_offboard(txid, signatures, idempotency_key),
        )  # fmt: skip

    async def request_lightning_pay_htlc_cosign(
        self, req: HtlcSendRequest, idempotency_key: str
    ) -> list[Vtxo]:
        return self._call(
            "request_lightning_pay_htlc_cosign", idempotency_key, [req], list[Vtxo],
            lambda: self.state.htlc_cosign(req),
        )  # fmt: skip

    async def initiate_lightning_payment(
        self,
        invoice: Invoice,
        htlc_vtxo_ids: list[str],
        amount: int,
        mailbox_id: str,
        idempotency_key: str,
    ) -> None:
        self._call(
            "initiate_lightning_payment", idempotency_key,
            [invoice, htlc_vtxo_ids, amount, mailbox_id], type(None),
            lambda: self.state.initiate(invoice, htlc_vtxo_ids, amount),
        )  # fmt: skip

    async def check_lightning_payment(self, payment_hash: str) -> PaymentStatus:
        return self._read(
            "check_lightning_payment", lambda: self.state.payment_status(payment_hash)
        )

    async def fetch_bolt12_invoice(self, offer: Offer, amount: int | None) -> Invoice:
        return self._read(
            "fetch_bolt12_invoice", lambda: self.state.fetch_offer_invoice(offer, amount)
        )

    async def request_lightning_pay_htlc_revocation(
        self, htlc_vtxo_ids: list[str], revocation_pubkey: str, idempotency_key: str
    ) -> list[Vtxo]:
        return self._call(
            "request_lightning_pay_htlc_revocation", idempotency_key,
            [htlc_vtxo_ids, revocation_pubkey], list[Vtxo],
            lambda: self.state.revoke(htlc_vtxo_ids, revocation_pubkey),
        )  # fmt: skip

    async def start_lightning_receive(
        self,
        payment_hash: str,
        amount: int,
        cltv_delta: int,
        mailbox_id: str,
        description: str,
        idempotency_key: str,
    ) -> Invoice:
        request = [payment_hash, amount, cltv_delta, mailbox_id, description]
        return self._call(
            "start_lightning_receive", idempotency_key, request, Invoice,
            lambda: self.state.start_receive(
                payment_hash, amount, cltv_delta, description, dump(request)
            ),
        )  # fmt: skip

    async def check_lightning_receive(self, payment_hash: str) -> ReceiveStatus:
        return self._read(
            "check_lightning_receive", lambda: self.state.receive_status(payment_hash)
        )

    async def prepare_lightning_receive_claim(
        self,
        payment_hash: str,
        user_pubkey: str,
        htlc_expiry: int,
        proof: str | None,
        idempotency_key: str,
    ) -> ReceiveGrant:
        return self._call(
            "prepare_lightning_receive_claim", idempotency_key,
            [payment_hash, user_pubkey, htlc_expiry, proof], ReceiveGrant,
            lambda: self.state.grant(payment_hash, user_pubkey, htlc_expiry, idempotency_key),
        )  # fmt: skip

    async def claim_lightning_receive(
        self,
        payment_hash: str,
        preimage: str,
        htlc_vtxo_ids: list[str],
        destination: Policy,
        idempotency_key: str,
    ) -> list[Vtxo]:
        return self._call(
            "claim_lightning_receive", idempotency_key,
            [payment_hash, preimage, htlc_vtxo_ids, destination], list[Vtxo],
            lambda: self.state.claim(payment_hash, preimage, htlc_vtxo_ids, destination),
        )  # fmt: skip

    async def cancel_lightning_receive(self, payment_hash: str, idempotency_key: str) -> None:
        self._call(
            "cancel_lightning_receive", idempotency_key, [payment_hash], type(None),
            lambda: self.state.cancel_receive(payment_hash),
        )  # fmt: skip

    async def register_for_round(
        self, input_ids: list[str], outputs: list[VtxoRequest], idempotency_key: str
    ) -> str:
        return self._call(
            "register_for_round", idempotency_key, [input_ids, outputs], str,
            lambda: register_for_round(self.state, input_ids, outputs),
        )  # fmt: skip

    async def round_result(self, participation_id: str) -> RoundResult:
        return self._read("round_result", lambda: round_result(self.state, participation_id))

    async def list_lightning_receives(self, mailbox_id: str) -> list[ReceiveRecord]:
        return self._read("list_lightning_receives", lambda: self.state.receives_of(mailbox_id))

    async def list_lightning_sends(self, mailbox_id: str) -> list[SendRecord]:
        return self._read("list_lightning_sends", lambda: self.state.sends_of(mailbox_id))

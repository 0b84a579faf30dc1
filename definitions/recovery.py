"""Mailbox recovery: a wallet restored from its seed (its keys, mailbox id and preimages
derive from it) finds its VTXOs, its open Lightning receives and its Lightning sends in
flight again on the server.

What the server keeps for a mailbox: the VTXOs posted to it (by other wallets paying this
one; by this wallet itself: a registered board, bark's recovery post; and by the server, with
the spend: an arkoor send's change, an offboard split's outputs and a lightning send's change,
which the cosign request names in its `RecoveryPost`, and a revoked HTLC's output), the
Lightning receives started for it (`list_lightning_receives`) and the Lightning sends whose
HTLC cosign named it and whose HTLC is neither settled nor revoked (`list_lightning_sends`).
Since the change is posted with the spend, a wallet lost while a send was in flight
(cosigned, its change only in the lost checkpoint) finds the change here.

`recover_from_mailbox` scans the seed's keys (up to `GAP_LIMIT` unused indexes past the
last one found), stores every posted VTXO of those keys as the server sees it (live:
spendable, spent: spent), marks the keys used so no new key repeats one, takes every
open receive whose preimage the seed gives up again as a `lightning_receive` action (it
then goes on from wherever the server's side stands: waiting for the payment, or claiming),
and every open send whose HTLC key the seed gives as a `lightning_send` action holding its
HTLC (`_take_up_send`): it goes on from ``htlc_received`` (asking the server to pay, which is
a no-op for a payment already initiated), and so settles it when the server gives the
preimage, or revokes it to the seed's key after the HTLC key (the one every send reserves
there) when the payment failed or the HTLC nears its expiry. No money is lost either way.

Idempotent: a VTXO known to the wallet is left alone, a receive or send whose action is live
is not started again, so a recovery cut short is run again. Server errors propagate.

Not recovered: the delivery of an arkoor payment in flight, the movements' history (a send
taken up makes its own movement, consuming inputs the restored wallet never stored), a
send's opt-in to exit its HTLC (``allow_exit_of_htlcs``: off after a restore), the facts of
payments settled before the loss.
"""

from __future__ import annotations

import attrs

import fsm

from .lightning_receive import LightningReceive, LightningReceiveKind, lightning_receive_id
from .lightning_send import LightningSend, LightningSendKind, lightning_send_id
from .model import ServerHtlcSendPolicy, Vtxo, VtxoState, payment_hash_of
from .services import Services
from .services.ark_records import ReceiveRecord, SendRecord
from .services.ark_server import NOT_FOUND

GAP_LIMIT = 50
"""Unused key indexes scanned past the last one found before the scan stops."""


@attrs.frozen
class Recovered:
    """What a recovery found: the VTXOs stored, the receives and sends taken up (their
    action ids)."""

    vtxos: list[Vtxo]
    receives: list[str]
    sends: list[str] = attrs.Factory(list)


class _Keys:
    """The seed's keys and preimages by index, derived as far as the gap limit asks."""

    def __init__(self, services: Services) -> None:
        self.wallet = services.wallet
        self.by_key: dict[str, int] = {}
        self.by_hash: dict[str, int] = {}
        self.last_found = -1

    def _extend(self) -> None:
        while len(self.by_key) <= self.last_found + GAP_LIMIT:
            i = len(self.by_key)
            self.by_key[self.wallet.derive_key(i)] = i
            self.by_hash[payment_hash_of(self.wallet.derive_preimage(i))] = i

    def found(self, index: int | None) -> int | None:
        """Mark ``index`` used (``None``: nothing found)."""
        if index is not None:
            self.last_found = max(self.last_found, index)
        return index

    def key(self, pubkey: str) -> int | None:
        self._extend()
        return self.found(self.by_key.get(pubkey))

    def preimage_index(self, payment_hash: str) -> int | None:
        self._extend()
        return self.found(self.by_hash.get(payment_hash))


async def _server_state(services: Services, vtxo: Vtxo) -> VtxoState | None:
    """Spendable if live, spent if spent, ``None`` if the server does not know it."""
    try:
        spent = await services.server.spent_vtxos([vtxo.id])
    except fsm.Rejected as exc:
        if exc.code == NOT_FOUND:
            return None
        raise
    return VtxoState.SPENT if spent else VtxoState.SPENDABLE


async def recover_from_mailbox(executor: fsm.Executor[Services]) -> Recovered:
    """Find the wallet's VTXOs and open receives on the server again (see the module)."""
    services = executor.services
    wallet = services.wallet
    keys = _Keys(services)
    stored: list[Vtxo] = []
    for vtxo in await services.server.read_mailbox(wallet.mailbox_id()):
        if keys.key(vtxo.pubkey) is None or wallet.get_vtxo(vtxo.id) is not None:
            continue
        state = await _server_state(services, vtxo)
        if state is not None and wallet.insert_vtxo(vtxo, state):
            stored.append(vtxo)
    receives = await services.server.list_lightning_receives(wallet.mailbox_id())
    taken = [r for r in receives if keys.preimage_index(r.invoice.payment_hash) is not None]
    sends = await services.server.list_lightning_sends(wallet.mailbox_id())
    ours = [(r, i) for r in sends if (i := _htlc_key_index(keys, r)) is not None]
    if keys.last_found >= 0:
        wallet.reserve_keys_through(keys.last_found)
    started = [await _take_up(executor, keys, r) for r in taken]
    resumed = [await _take_up_send(executor, r, i) for r, i in ours]
    return Recovered(
        stored, [s for s in started if s is not None], [s for s in resumed if s is not None]
    )


async def _take_up(executor: fsm.Executor[Services], keys: _Keys, r: ReceiveRecord) -> str | None:
    """Start the receive's action again (its data from the server's record and the seed)."""
    action_id = lightning_receive_id(r.invoice.payment_hash)
    if executor.store.row(action_id) is not None:
        return None
    index = keys.preimage_index(r.invoice.payment_hash)
    assert index is not None  # only receives the seed gives a preimage for are taken up
    preimage = keys.wallet.derive_preimage(index)
    data = LightningReceive(r.invoice, preimage, r.cltv_delta, index)
    await executor.start(LightningReceiveKind.create(data), again=True)
    return action_id


def _htlc_key_index(keys: _Keys, r: SendRecord) -> int | None:
    """The seed's index of the send's HTLC key, if the record is a send of this wallet's
    (its one HTLC the server made for the request); the key after it, where the send
    revokes to, is marked used with it."""
    req = r.request
    policy = ServerHtlcSendPolicy(req.htlc_pubkey, req.invoice.payment_hash, req.htlc_expiry)
    if [(v.policy, v.amount) for v in r.htlc_vtxos] != [(policy, req.amount + req.fee)]:
        return None
    index = keys.key(req.htlc_pubkey)
    if index is not None:
        keys.found(index + 1)
    return index


async def _take_up_send(executor: fsm.Executor[Services], r: SendRecord, index: int) -> str | None:
    """Start the send's action again at ``htlc_received``, holding its HTLC (stored first:
    never selectable, it is no plain VTXO), its data from the server's record and the seed."""
    req = r.request
    action_id = lightning_send_id(req.invoice.payment_hash)
    if executor.store.row(action_id) is not None:
        return None
    wallet = executor.services.wallet
    [htlc] = r.htlc_vtxos
    wallet.insert_vtxo(htlc, VtxoState.SPENDABLE)
    data = LightningSend(
        invoice=req.invoice,
        amount=req.amount,
        fee=req.fee,
        input_ids=sorted(req.input_ids),
        change_pieces=[c.amount for c in req.change],
        htlc_key=req.htlc_pubkey,
        revocation_key=wallet.derive_key(index + 1),
        htlc_expiry=req.htlc_expiry,
        htlc_ids=[htlc.id],
        mailbox_id=wallet.mailbox_id(),
    )
    action = LightningSendKind.create(data, LightningSendKind.htlc_received)
    await executor.start(action, resources=[htlc.resource], again=True)
    return action_id


__all__ = ["GAP_LIMIT", "Recovered", "recover_from_mailbox"]

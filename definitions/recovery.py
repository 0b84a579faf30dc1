"""Mailbox recovery: a wallet restored from its seed (its keys, mailbox id and preimages
derive from it) finds its VTXOs and its open Lightning receives again on the server.

What the server keeps for a mailbox: the VTXOs posted to it (by other wallets paying this
one; by this wallet itself: a registered board, bark's recovery post; and by the server, with
the spend: an arkoor send's change and an offboard split's outputs, which the cosign request
names in its `RecoveryPost`), and the Lightning receives started for it
(`list_lightning_receives`). Since the change is posted with the spend, a wallet lost while a
send was in flight (cosigned, its change only in the lost checkpoint) finds the change here.
`recover_from_mailbox` scans the seed's keys (up to `GAP_LIMIT` unused indexes past the
last one found), stores every posted VTXO of those keys as the server sees it (live:
spendable, spent: spent), marks the keys used so no new key repeats one, and takes every
open receive whose preimage the seed gives up again as a `lightning_receive` action (it
then goes on from wherever the server's side stands: waiting for the payment, or claiming).

Idempotent: a VTXO known to the wallet is left alone, a receive whose action is live is not
started again, so a recovery cut short is run again. Server errors propagate.

Not recovered: VTXOs never posted to the mailbox (a lightning send's change: its HTLC cosign
carries no recovery post), a lightning send in flight (its HTLC is the server's until it
settles or is revoked), the delivery of an arkoor payment in flight, the movements' history.
"""

from __future__ import annotations

import attrs

import fsm

from .lightning_receive import LightningReceive, LightningReceiveKind, lightning_receive_id
from .model import Vtxo, VtxoState, payment_hash_of
from .services import Services
from .services.ark_records import ReceiveRecord
from .services.ark_server import NOT_FOUND

GAP_LIMIT = 50
"""Unused key indexes scanned past the last one found before the scan stops."""


@attrs.frozen
class Recovered:
    """What a recovery found: the VTXOs stored, the receives taken up (their action ids)."""

    vtxos: list[Vtxo]
    receives: list[str]


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

    def _found(self, index: int | None) -> int | None:
        if index is not None:
            self.last_found = max(self.last_found, index)
        return index

    def key(self, pubkey: str) -> int | None:
        self._extend()
        return self._found(self.by_key.get(pubkey))

    def preimage_index(self, payment_hash: str) -> int | None:
        self._extend()
        return self._found(self.by_hash.get(payment_hash))


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
    if keys.last_found >= 0:
        wallet.reserve_keys_through(keys.last_found)
    started = [await _take_up(executor, keys, r) for r in taken]
    return Recovered(stored, [s for s in started if s is not None])


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


__all__ = ["GAP_LIMIT", "Recovered", "recover_from_mailbox"]

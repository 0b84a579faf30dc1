"""The wallet's invariants over the world, the wallet store and the fsm store
(docs/simulation.md). They complement `fsm.testing.check_invariants`, which checks fsm's own
rows for any kind; these know what a wallet's money must do.

`check_wallet_invariants` returns one readable line per violation (empty: all good):

1. **exactly once**: no idempotency key applied its effect more than once, and no effect
   (``effect_id``) was applied under two keys;
2. **spent and spendable**: every VTXO the wallet shows as spendable (``SPENDABLE`` and held
   by no action) is live on the server (or a board the server has cosigned but not registered
   yet); a locked one (held: bark's ``Locked{Action}``) may be spent already, by its holder's
   spend whose answer was lost, but must be known to the server;
3. **conservation** of the world's money (formula in `Balance`), and no VTXO swept before
   its expiry;
4. **nothing lost when idle**: with no live action, every live plain VTXO the server says the
   wallet owns is spendable (or exited) in the wallet, unless it pays one of the wallet's
   addresses: a payment from another wallet waits in the mailbox until the next
   `mailbox_sync.sync_mailbox`, or never arrives (every mailbox refused its delivery: the
   payer's send ends ``undelivered``, its movement failed; the payee cannot know of it);
5. **no orphaned resource**: every fsm resource is held by an action that still has its row.

`check_world_invariants` checks several wallets on one server, each with its own fsm store:
1 and 3 once for the world (3 with every wallet's VTXOs counted as the wallets'), 2, 4 and 5
per wallet, and across wallets that no key belongs to two wallets and no VTXO is spendable in
two (money created between them).
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

import fsm

from ..model import BOARD_PREFIX, EXIT_PREFIX, OutPoint, PubkeyPolicy, VtxoState
from .ark_state import BOARD_PENDING, LIVE, SWEPT
from .exits import exits_in_flight
from .ledger import Flow
from .sweeps import early_sweeps
from .wallet_store import SqliteWalletStore
from .world import World

WALLET_PREFIX = "wallet:"
TRACKED = (WALLET_PREFIX, BOARD_PREFIX, EXIT_PREFIX)


@attrs.frozen
class Balance:
    """The terms of the conservation formula, all in sats::

        funding + ln_in == live_vtxos + exits_in_flight + onchain + boards_in_flight
                           + ln_out + offboard_out + server_fees + swept
                           + onchain_out + onchain_fees

    ``live_vtxos`` splits into ``wallet_spendable`` (incl. VTXOs held by live actions),
    ``wallet_in_flight`` (live, owned by wallet keys, not spendable in the wallet: HTLCs, change
    still in a checkpoint) and ``others`` (owned by other keys: arkoor payments sent away).
    ``exits_in_flight``: VTXOs exited on chain whose exit output is not claimed yet.
    ``swept``: expired VTXOs the server took back (`sim.sweeps`).
    """

    funding: int
    ln_in: int
    wallet_spendable: int
    wallet_in_flight: int
    others: int
    exits_in_flight: int
    onchain: int
    boards_in_flight: int
    ln_out: int
    offboard_out: int
    server_fees: int
    swept: int
    onchain_out: int
    onchain_fees: int

    @property
    def sources(self) -> int:
        return self.funding + self.ln_in

    @property
    def uses(self) -> int:
        return (
            self.wallet_spendable
            + self.wallet_in_flight
            + self.others
            + self.exits_in_flight
            + self.onchain
            + self.boards_in_flight
            + self.ln_out
            + self.offboard_out
            + self.server_fees
            + self.swept
            + self.onchain_out
            + self.onchain_fees
        )


def balance(world: World, *wallets: SqliteWalletStore) -> Balance:
    """The terms, with the VTXOs of every wallet in ``wallets`` counted as the wallets'."""
    flows = world.ledger.totals()
    keys = {k for w in wallets for k in w.pubkeys()}
    spendable = {v.id for w in wallets for v, _ in w.vtxos(VtxoState.SPENDABLE)}
    mine = in_flight = others = 0
    for vtxo, status in world.server.vtxos():
        if status != LIVE:
            continue
        if vtxo.pubkey not in keys:
            others += vtxo.amount
        elif vtxo.id in spendable:
            mine += vtxo.amount
        else:
            in_flight += vtxo.amount
    registered_boards = {
        (str(txid), int(vout))
        for txid, vout in world.db.all(
            "SELECT b.funding_txid, b.vout FROM srv_board b JOIN srv_vtxo v ON v.id = b.vtxo_id "
            "WHERE v.status != ?",
            (BOARD_PENDING,),
        )
    }
    onchain = sum(o.amount for _, o in world.chain.unspent(WALLET_PREFIX))
    boards = sum(
        o.amount
        for op, o in world.chain.unspent(BOARD_PREFIX)
        if (op.txid, op.vout) not in registered_boards
    )
    onchain_out = onchain_fees = 0
    for tx, fee in world.chain.effective():
        if any(_tracked(world, op) for op in tx.inputs):
            onchain_fees += fee
            onchain_out += sum(o.amount for o in tx.outputs if not o.address.startswith(TRACKED))
    return Balance(
        funding=flows[Flow.FUNDING],
        ln_in=flows[Flow.LN_IN],
        wallet_spendable=mine,
        wallet_in_flight=in_flight,
        others=others,
        exits_in_flight=exits_in_flight(world.db, world.chain),
        onchain=onchain,
        boards_in_flight=boards,
        ln_out=flows[Flow.LN_OUT],
        offboard_out=flows[Flow.OFFBOARD_OUT],
        server_fees=flows[Flow.SERVER_FEE],
        swept=flows[Flow.SWEPT],
        onchain_out=onchain_out,
        onchain_fees=onchain_fees,
    )


def _tracked(world: World, op: OutPoint) -> bool:
    out = world.chain.output(op)
    return out is not None and out.address.startswith(TRACKED)


def check_wallet_invariants(world: World, wallet: SqliteWalletStore, store: fsm.Store) -> list[str]:
    return check_world_invariants(world, [(wallet, store)])


def check_world_invariants(
    world: World, wallets: Sequence[tuple[SqliteWalletStore, fsm.Store]]
) -> list[str]:
    """Every invariant over the wallets on ``world``'s server, each with its fsm store; a
    problem of one wallet is prefixed with its name when there are several."""
    problems = [
        *_exactly_once(world),
        *early_sweeps(world.db),
        *_conservation(world, [w for w, _ in wallets]),
    ]
    for wallet, store in wallets:
        own = [
            *_spent_and_spendable(world, wallet),
            *_nothing_lost_when_idle(world, wallet, store),
            *_no_orphaned_resources(store),
        ]
        problems += [f"{wallet.name}: {p}" if len(wallets) > 1 else p for p in own]
    return problems + _across_wallets([w for w, _ in wallets])


def _across_wallets(wallets: list[SqliteWalletStore]) -> list[str]:
    """A key of two wallets, or a VTXO spendable in two, would count money twice."""
    problems = []
    key_owner: dict[str, str] = {}
    vtxo_owner: dict[str, str] = {}
    for wallet in wallets:
        for key in sorted(wallet.pubkeys()):
            if key in key_owner:
                problems.append(f"key {key} belongs to {key_owner[key]} and {wallet.name}")
            key_owner.setdefault(key, wallet.name)
        for vtxo, _ in wallet.vtxos(VtxoState.SPENDABLE):
            if vtxo.id in vtxo_owner:
                problems.append(
                    f"vtxo {vtxo.id} is spendable in {vtxo_owner[vtxo.id]} and {wallet.name}"
                )
            vtxo_owner.setdefault(vtxo.id, wallet.name)
    return problems


def _exactly_once(world: World) -> list[str]:
    problems = [
        f"idempotency key {key!r} ({rpc}) applied its effect {n} times"
        for key, rpc, n in world.db.all("SELECT key, rpc, applied FROM ledger WHERE applied > 1")
    ]
    for effect, n, keys in world.db.all(
        "SELECT effect_id, SUM(applied), GROUP_CONCAT(key, ', ') FROM ledger "
        "GROUP BY effect_id HAVING SUM(applied) > 1"
    ):
        problems.append(f"effect {effect} applied {n} times (keys {keys})")
    return problems


def _spent_and_spendable(world: World, wallet: SqliteWalletStore) -> list[str]:
    """A locked VTXO spent on the server is its holder's business while the holder lives (it
    asks the server before letting go); once released it is spendable again, and checked.
    A VTXO the server swept after its expiry is lost to the wallet by Ark's rule, not by a
    wallet's error (selection skips it; `early_sweeps` checks the server kept the rule)."""
    problems = []
    for vtxo, _ in wallet.vtxos(VtxoState.SPENDABLE):
        row = world.server.vtxo(vtxo.id)
        if row is None:
            problems.append(f"vtxo {vtxo.id} is spendable in the wallet, unknown to the server")
        elif row[1] not in (LIVE, BOARD_PENDING, SWEPT) and not wallet.held(vtxo.id):
            problems.append(
                f"vtxo {vtxo.id} is spendable in the wallet but {row[1]} on the server "
                f"(by {row[2]})"
            )
    return problems


def _conservation(world: World, wallets: list[SqliteWalletStore]) -> list[str]:
    b = balance(world, *wallets)
    if b.sources == b.uses:
        return []
    return [f"money not conserved: funding + ln_in = {b.sources} != {b.uses} = uses ({b})"]


def _nothing_lost_when_idle(world: World, wallet: SqliteWalletStore, store: fsm.Store) -> list[str]:
    if store.rows():
        return []
    keys = wallet.pubkeys()
    addresses = wallet.address_keys()
    problems = []
    for vtxo, status in world.server.vtxos():
        if status != LIVE or vtxo.pubkey not in keys or not isinstance(vtxo.policy, PubkeyPolicy):
            continue
        state = wallet.vtxo_state(vtxo.id)
        if state is None and vtxo.pubkey in addresses:
            continue  # paid to an address: waiting in the mailbox, or never delivered
        if state not in (VtxoState.SPENDABLE, VtxoState.EXITED):
            problems.append(
                f"vtxo {vtxo.id} ({vtxo.amount} sats) is the wallet's on the server but "
                f"{state.value if state else 'missing'} in the wallet, with no action in flight"
            )
    return problems


def _no_orphaned_resources(store: fsm.Store) -> list[str]:
    live = {row.id for row in store.rows()}
    return [
        f"resource {name} is held by {holder}, which has no row (finished or missing)"
        for name, holder in sorted(store.all_resources().items())
        if holder not in live
    ]

"""The simulated world as one object: server, chain, Lightning node, clock, faults, ledger.

Its state lives in ``<folder>/world.sqlite`` (it outlives the wallet process, as a remote
server would). Several wallets share the one server: each has a name, its own store
(``<folder>/wallet.sqlite`` for the default wallet, ``<folder>/wallet-<name>.sqlite`` for
another), its own keys and mailbox (derived from the name) and its own on-chain address, and
the caller gives each its own fsm store and executor (`World.services`). `make_world`
creates or reopens the world; the seed and the fault configuration are stored on creation
and reused on reopening.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import attrs

import fsm

from ..model import OutPoint, PubkeyPolicy, Tx, TxOut, Vtxo, VtxoState, digest
from ..services import Services, WalletConfig
from ..services.fees import FeeSchedule
from ..services.wallet import InsufficientFunds, WalletStore
from .ark_server import SimArkServer
from .ark_state import LIVE, SERVER_SCHEMA
from .chain import CHAIN_SCHEMA, ChainState, SimChain
from .clock import SimClock
from .db import META_SCHEMA, Db, dump, load
from .exits import watch_exits
from .fee_schedule import FEES_SCHEMA, fees_in_force, set_fees
from .ledger import LEDGER_SCHEMA, Flow, Ledger
from .lightning_node import LIGHTNING_SCHEMA, LightningNodeState, SimLightningNode
from .server_rounds import ROUNDS_SCHEMA, run_round
from .server_state import LN_SERVER_SCHEMA, ServerState
from .sweeps import sweep_expired
from .wallet_store import SqliteWalletStore
from .world_faults import FAULTS_SCHEMA, Fault, FaultGate, Faults

WORLD_SCHEMA = ";".join(
    [
        META_SCHEMA,
        FAULTS_SCHEMA,
        LEDGER_SCHEMA,
        CHAIN_SCHEMA,
        LIGHTNING_SCHEMA,
        SERVER_SCHEMA,
        LN_SERVER_SCHEMA,
        FEES_SCHEMA,
        ROUNDS_SCHEMA,
    ]
)
WALLET_NAME = "wallet"
FUNDING_EXPIRY_DELTA = 500


def wallet_address(wallet_name: str) -> str:
    """The on-chain address of a wallet's coins (the sim tracks ``wallet:*`` addresses)."""
    return f"wallet:{wallet_name}"


class SimOnchainWallet:
    """`OnchainWallet` over the simulated chain: the unspent outputs to one address."""

    def __init__(self, chain: ChainState, address: str) -> None:
        self.chain = chain
        self._address = address

    def address(self) -> str:
        return self._address

    def balance(self) -> int:
        return sum(o.amount for _, o in self.chain.unspent(self._address))

    def _coins(self, need: int) -> tuple[list[OutPoint], int]:
        coins: list[OutPoint] = []
        total = 0
        for op, out in sorted(self.chain.unspent(self._address), key=lambda c: str(c[0])):
            if total >= need:
                break
            coins.append(op)
            total += out.amount
        if total < need:
            raise InsufficientFunds(f"need {need} sats on chain, have {total}")
        return coins, total

    def build_tx(self, outputs: list[TxOut], fee: int, *, signed: bool = True) -> Tx:
        need = sum(o.amount for o in outputs) + fee
        coins, total = self._coins(need)
        change = [TxOut(self._address, total - need)] if total > need else []
        return Tx.build(coins, [*outputs, *change], signed=signed)

    def build_cpfp(self, anchor: OutPoint, fee: int) -> Tx:
        coins, total = self._coins(fee)
        return Tx.build([anchor, *coins], [TxOut(self._address, total - fee)], signed=True)


class World:
    def __init__(self, folder: Path, seed: int, faults: Faults | None) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.db = Db(folder / "world.sqlite", WORLD_SCHEMA)
        with self.db.transaction():
            stored_seed = int(self.db.meta("seed", str(seed)))
            if stored_seed != seed:
                raise ValueError(f"world in {folder} was made with seed {stored_seed}, not {seed}")
            self.db.set_meta("seed", str(seed))
            stored = self.db.meta("faults", "")
            if faults is None:
                faults = load(stored, Faults) if stored else Faults()
            self.db.set_meta("faults", dump(faults))
        self.seed = seed
        self.gate = FaultGate(self.db, seed, faults)
        self.clock = SimClock(self.db)
        self.ledger = Ledger(self.db)
        self.chain = ChainState(self.db, self.gate)
        self.lightning = LightningNodeState(self.db, self.gate, self.clock)
        self.server = ServerState(self.db, self.ledger, self.chain, self.lightning, self.clock)
        self.rpc = SimArkServer(self.server, self.gate)

    @property
    def faults(self) -> Faults:
        return self.gate.faults

    def close(self) -> None:
        self.db.close()

    # -- the wallet side -----------------------------------------------------------------

    def wallet_store(
        self,
        holder_of: Callable[[str], object | None] | None = None,
        name: str = WALLET_NAME,
    ) -> SqliteWalletStore:
        """The store of wallet ``name`` (its own file; keys and mailbox derived from it)."""
        file = "wallet.sqlite" if name == WALLET_NAME else f"wallet-{name}.sqlite"
        path = self.folder / file
        if holder_of is None:
            return SqliteWalletStore(path, name)
        return SqliteWalletStore(path, name, holder_of)

    def onchain_wallet(self, name: str = WALLET_NAME) -> SimOnchainWallet:
        return SimOnchainWallet(self.chain, wallet_address(name))

    def services(
        self, fsm_store: fsm.Store, config: WalletConfig | None = None, name: str = WALLET_NAME
    ) -> Services:
        """Everything the kinds of wallet ``name`` need, its store asking ``fsm_store`` (that
        wallet's own: one per wallet, as each runs its own executor) what is held."""
        return Services(
            server=self.rpc,
            chain=SimChain(self.chain),
            lightning=SimLightningNode(self.lightning, self.server),
            onchain=self.onchain_wallet(name),
            wallet=self.wallet_store(fsm_store.holder_of, name),
            clock=self.clock,
            config=config or WalletConfig(),
        )

    # -- driving the world ---------------------------------------------------------------

    def mine(self, blocks: int = 1) -> int:
        """Mine ``blocks`` blocks one by one (chain faults drawn per block); after each, the
        server marks the VTXOs whose exit txs confirmed as exited, sweeps the expired ones
        (`sim.sweeps`), and takes back expired, unclaimed Lightning receive HTLCs. Returns
        the tip."""
        for _ in range(blocks):
            with self.db.transaction():
                height = self.chain.mine(1)
                watch_exits(self.db, self.chain, self.ledger, height)
                sweep_expired(self.db, self.chain, self.ledger, height)
            self.server.expire_receives()
        return self.chain.tip()

    def run_round(self) -> int:
        """The server runs a round now (`sim.server_rounds`): every pending participation
        is settled. Returns the round's number."""
        return run_round(self.server)

    def advance_time(self, seconds: float) -> float:
        return self.clock.advance(seconds)

    def restart_server(self) -> None:
        self.server.restart()

    def script_fault(self, rpc: str, fault: Fault, times: int = 1) -> None:
        self.gate.script(rpc, fault, times)

    def set_fees(self, schedule: FeeSchedule, since: float | None = None) -> None:
        """Put the server's fee schedule ``schedule`` in force from ``since`` (default: now)
        on; an earlier schedule stays in force until then."""
        with self.db.transaction():
            set_fees(self.db, schedule, self.clock.now() if since is None else since)

    def set_offboard_fee_rate(self, rate: int) -> None:
        """Change only the offboard fee rate, from now on."""
        now = self.clock.now()
        self.set_fees(attrs.evolve(fees_in_force(self.db, now), offboard_fee_rate=rate), now)

    # -- funding -------------------------------------------------------------------------

    def _funding_tag(self) -> str:
        n = int(self.db.meta("fund_counter", "0"))
        self.db.set_meta("fund_counter", str(n + 1))
        return f"world.fund.{n}"

    def fund_vtxos(self, wallet: WalletStore, amounts: list[int], depth: int = 0) -> list[Vtxo]:
        """Give the wallet registered, spendable VTXOs of ``amounts`` (one fresh key each), as
        if each came out of ``depth`` out-of-round spends."""
        created = []
        for amount in amounts:
            pubkey = wallet.derive_key(wallet.next_key_index())
            with self.db.transaction():
                tag = self._funding_tag()
                vtxo = Vtxo(
                    f"{digest('funding', self.seed, tag)}:0",
                    amount,
                    self.chain.tip() + FUNDING_EXPIRY_DELTA,
                    PubkeyPolicy(pubkey),
                    digest("funding-anchor", tag),
                    depth,
                )
                self.server.insert_vtxos([vtxo], LIVE, registered=True)
                self.ledger.flow(tag, Flow.FUNDING, amount, f"vtxo {vtxo.id}")
            wallet.insert_vtxo(vtxo, VtxoState.SPENDABLE)
            created.append(vtxo)
        return created

    def fund_onchain(self, amount: int, name: str = WALLET_NAME) -> OutPoint:
        """Give wallet ``name``'s on-chain address a confirmed coin of ``amount`` (for boards)."""
        with self.db.transaction():
            tag = self._funding_tag()
            outpoint = self.chain.mint(wallet_address(name), amount, tag)
            self.ledger.flow(tag, Flow.FUNDING, amount, f"coin {outpoint}")
        return outpoint


def make_world(folder: Path, seed: int, faults: Faults | None = None) -> World:
    """Create the world in ``folder``, or reopen it (``faults=None`` keeps the stored ones)."""
    return World(Path(folder), seed, faults)


__all__ = ["SimOnchainWallet", "World", "make_world", "wallet_address"]

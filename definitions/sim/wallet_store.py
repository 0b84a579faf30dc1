"""`SqliteWalletStore`: the wallet's local state on SQLite (its own file, apart from the world).

Idempotency tools of the reference (section 1.10, 4): VTXO insert-if-absent, checked state
transitions that accept "already in the target state", movements get-or-create keyed by action
id (unique), insert-or-ignore fact tables, persisted key counter. Whether a VTXO is in use is
asked of ``holder_of`` (pass ``fsm.Store.holder_of``): an action holds ``vtxo.<id>`` as an fsm
resource, so a crash can never leave a VTXO locked by a finished action.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..model import (
    ArkAddress,
    Movement,
    MovementStatus,
    MovementUpdate,
    Network,
    PubkeyPolicy,
    Vtxo,
    VtxoState,
    digest,
    vtxo_resource,
)
from ..services.wallet import InsufficientFunds, VtxoStateError
from .db import META_SCHEMA, Db, dump, load

WALLET_SCHEMA = (
    META_SCHEMA
    + """
CREATE TABLE IF NOT EXISTS w_vtxo (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    amount INTEGER NOT NULL,
    plain INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS w_key (idx INTEGER PRIMARY KEY, pubkey TEXT UNIQUE NOT NULL);
CREATE TABLE IF NOT EXISTS w_address (pubkey TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS w_movement (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action_id TEXT,
    attempt TEXT NOT NULL DEFAULT '',
    body TEXT NOT NULL,
    UNIQUE (action_id, attempt)
);
CREATE TABLE IF NOT EXISTS w_paid_invoice (
    payment_hash TEXT PRIMARY KEY, preimage TEXT NOT NULL, amount INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS w_settled_receive (
    payment_hash TEXT PRIMARY KEY, preimage TEXT NOT NULL, amount INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS w_exit (vtxo_id TEXT PRIMARY KEY)
"""
)

TERMINAL = frozenset({MovementStatus.SUCCESSFUL, MovementStatus.FAILED, MovementStatus.CANCELED})


def _never_held(_: str) -> object | None:
    return None


class SqliteWalletStore:
    """A `WalletStore`. ``name`` seeds the wallet's keys and mailbox id."""

    def __init__(
        self,
        path: Path,
        name: str = "wallet",
        holder_of: Callable[[str], object | None] = _never_held,
    ) -> None:
        self.db = Db(path, WALLET_SCHEMA)
        self.name = name
        self.holder_of = holder_of

    def close(self) -> None:
        self.db.close()

    def held(self, vtxo_id: str) -> bool:
        return self.holder_of(vtxo_resource(vtxo_id)) is not None

    def mailbox_id(self) -> str:
        return digest("mailbox", self.name)

    # -- keys ----------------------------------------------------------------------------

    def derive_key(self, index: int) -> str:
        return digest("wallet-key", self.name, index)

    def next_key_index(self) -> int:
        with self.db.transaction():
            row = self.db.one("SELECT COALESCE(MAX(idx) + 1, 0) FROM w_key")
            index = int(row[0]) if row else 0
            self.db.run(
                "INSERT INTO w_key (idx, pubkey) VALUES (?, ?)", (index, self.derive_key(index))
            )
        return index

    def derive_preimage(self, index: int) -> str:
        return digest("wallet-preimage", self.name, index)

    def reserve_keys_through(self, index: int) -> None:
        with self.db.transaction():
            for i in range(index + 1):
                self.db.run(
                    "INSERT OR IGNORE INTO w_key (idx, pubkey) VALUES (?, ?)",
                    (i, self.derive_key(i)),
                )

    def key_index_of(self, pubkey: str) -> int | None:
        row = self.db.one("SELECT idx FROM w_key WHERE pubkey = ?", (pubkey,))
        return None if row is None else int(row[0])

    def pubkeys(self) -> set[str]:
        return {str(p) for (p,) in self.db.all("SELECT pubkey FROM w_key")}

    def new_address(self, network: Network = Network.REGTEST) -> ArkAddress:
        with self.db.transaction():
            pubkey = self.derive_key(self.next_key_index())
            self.db.run("INSERT INTO w_address (pubkey) VALUES (?)", (pubkey,))
        return ArkAddress(pubkey, [self.mailbox_id()], network)

    def address_keys(self) -> set[str]:
        """The keys handed out in addresses: what others pay to, through the mailbox (the
        invariants let a payment to one wait there until the wallet syncs)."""
        return {str(p) for (p,) in self.db.all("SELECT pubkey FROM w_address")}

    # -- vtxos ---------------------------------------------------------------------------

    def insert_vtxo(self, vtxo: Vtxo, state: VtxoState) -> bool:
        with self.db.transaction():
            cur = self.db.run(
                "INSERT OR IGNORE INTO w_vtxo (id, body, amount, plain, state) "
                "VALUES (?, ?, ?, ?, ?)",
                (
                    vtxo.id,
                    dump(vtxo),
                    vtxo.amount,
                    int(isinstance(vtxo.policy, PubkeyPolicy)),
                    state.value,
                ),
            )
        return cur.rowcount == 1

    def get_vtxo(self, vtxo_id: str) -> Vtxo | None:
        row = self.db.one("SELECT body FROM w_vtxo WHERE id = ?", (vtxo_id,))
        return None if row is None else _vtxo(row[0])

    def vtxo_state(self, vtxo_id: str) -> VtxoState | None:
        row = self.db.one("SELECT state FROM w_vtxo WHERE id = ?", (vtxo_id,))
        return None if row is None else VtxoState(row[0])

    def set_vtxo_state(
        self, vtxo_ids: list[str], state: VtxoState, *, allowed_from: frozenset[VtxoState]
    ) -> None:
        with self.db.transaction():
            for vid in vtxo_ids:
                current = self.vtxo_state(vid)
                if current is state:
                    continue
                if current is None or current not in allowed_from:
                    raise VtxoStateError(
                        f"vtxo {vid}: cannot go from {current and current.value} to "
                        f"{state.value} (allowed from {sorted(s.value for s in allowed_from)})"
                    )
                self.db.run("UPDATE w_vtxo SET state = ? WHERE id = ?", (state.value, vid))

    def vtxos(self, state: VtxoState | None = None) -> list[tuple[Vtxo, VtxoState]]:
        rows = self.db.all("SELECT body, state FROM w_vtxo ORDER BY id")
        out = [(_vtxo(body), VtxoState(s)) for body, s in rows]
        return [(v, s) for v, s in out if state is None or s is state]

    def locked_vtxos(self) -> list[Vtxo]:
        return [v for v, _ in self.vtxos(VtxoState.SPENDABLE) if self.held(v.id)]

    def spendable_vtxos(self, exclude: frozenset[str] = frozenset()) -> list[Vtxo]:
        rows = self.db.all(
            "SELECT id, body FROM w_vtxo WHERE state = ? AND plain = 1 ORDER BY amount DESC, id",
            (VtxoState.SPENDABLE.value,),
        )
        return [_vtxo(body) for vid, body in rows if vid not in exclude and not self.held(vid)]

    def select_coins(
        self,
        amount: int,
        exclude: frozenset[str] = frozenset(),
        *,
        max_depth: int | None = None,
        tip: int | None = None,
    ) -> list[Vtxo]:
        chosen: list[Vtxo] = []
        total = deep = expired = 0
        for vtxo in self.spendable_vtxos(exclude):
            if total >= amount:
                break
            if tip is not None and vtxo.expiry_height <= tip:
                expired += vtxo.amount
            elif max_depth is not None and vtxo.depth >= max_depth:
                deep += vtxo.amount
            else:
                chosen.append(vtxo)
                total += vtxo.amount
        if total < amount:
            raise InsufficientFunds(_short(amount, total, deep, expired, max_depth))
        return chosen

    # -- unilateral exits ----------------------------------------------------------------

    def start_exit(self, vtxo_id: str) -> bool:
        """Records the exit as requested; the `exit` kind plays it out on chain
        (`exit.start_requested_exits` starts one per request)."""
        with self.db.transaction():
            cur = self.db.run("INSERT OR IGNORE INTO w_exit (vtxo_id) VALUES (?)", (vtxo_id,))
        return cur.rowcount == 1

    def exiting(self, vtxo_id: str) -> bool:
        return self.db.one("SELECT 1 FROM w_exit WHERE vtxo_id = ?", (vtxo_id,)) is not None

    def exit_requests(self) -> list[str]:
        return [str(v) for (v,) in self.db.all("SELECT vtxo_id FROM w_exit ORDER BY rowid")]

    # -- movements -----------------------------------------------------------------------

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
        with self.db.transaction():
            row = self.db.one(
                "SELECT body FROM w_movement WHERE action_id = ? AND attempt = ?",
                (action_id, attempt),
            )
            if row is not None:
                return _movement(row[0])
            cur = self.db.run(
                "INSERT INTO w_movement (action_id, attempt, body) VALUES (?, ?, '')",
                (action_id, attempt),
            )
            movement = Movement(
                int(cur.lastrowid or 0),
                kind,
                MovementStatus.PENDING,
                intended_balance,
                effective_balance,
                fee,
                sorted(consumed or []),
                sorted(produced or []),
                dict(metadata or {}),
                action_id,
            )
            self._save(movement)
        return movement

    def movement(self, movement_id: int) -> Movement | None:
        row = self.db.one("SELECT body FROM w_movement WHERE id = ?", (movement_id,))
        return None if row is None else _movement(row[0])

    def movement_of(self, action_id: str) -> Movement | None:
        row = self.db.one(
            "SELECT body FROM w_movement WHERE action_id = ? ORDER BY id DESC LIMIT 1",
            (action_id,),
        )
        return None if row is None else _movement(row[0])

    def update_movement(self, movement_id: int, update: MovementUpdate) -> Movement:
        with self.db.transaction():
            m = self._require(movement_id)
            changed = Movement(
                m.id,
                m.kind,
                m.status if update.status is None else update.status,
                m.intended_balance,
                m.effective_balance
                if update.effective_balance is None
                else update.effective_balance,
                m.fee if update.fee is None else update.fee,
                sorted(set(m.consumed) | set(update.consumed)),
                sorted(set(m.produced) | set(update.produced)),
                {**m.metadata, **update.metadata},
                m.action_id,
            )
            self._save(changed)
        return changed

    def finish_movement(
        self, movement_id: int, status: MovementStatus, *, effective_balance: int | None = None
    ) -> Movement:
        if status not in TERMINAL:
            raise ValueError(f"{status.value} is not a terminal movement status")
        with self.db.transaction():
            m = self._require(movement_id)
            if m.status in TERMINAL:
                return m
            return self.update_movement(
                movement_id, MovementUpdate(status=status, effective_balance=effective_balance)
            )

    def movements(self) -> list[Movement]:
        return [_movement(b) for (b,) in self.db.all("SELECT body FROM w_movement ORDER BY id")]

    def _require(self, movement_id: int) -> Movement:
        m = self.movement(movement_id)
        if m is None:
            raise KeyError(f"no movement {movement_id}")
        return m

    def _save(self, m: Movement) -> None:
        self.db.run("UPDATE w_movement SET body = ? WHERE id = ?", (dump(m), m.id))

    # -- fact tables ---------------------------------------------------------------------

    def record_paid_invoice(self, payment_hash: str, preimage: str, amount: int) -> bool:
        return self._fact("w_paid_invoice", payment_hash, preimage, amount)

    def paid_invoice(self, payment_hash: str) -> str | None:
        row = self.db.one(
            "SELECT preimage FROM w_paid_invoice WHERE payment_hash = ?", (payment_hash,)
        )
        return None if row is None else str(row[0])

    def record_settled_receive(self, payment_hash: str, preimage: str, amount: int) -> bool:
        return self._fact("w_settled_receive", payment_hash, preimage, amount)

    def settled_receive(self, payment_hash: str) -> int | None:
        row = self.db.one(
            "SELECT amount FROM w_settled_receive WHERE payment_hash = ?", (payment_hash,)
        )
        return None if row is None else int(row[0])

    def _fact(self, table: str, payment_hash: str, preimage: str, amount: int) -> bool:
        with self.db.transaction():
            cur = self.db.run(
                f"INSERT OR IGNORE INTO {table} (payment_hash, preimage, amount) VALUES (?, ?, ?)",
                (payment_hash, preimage, amount),
            )
        return cur.rowcount == 1


def _short(amount: int, total: int, deep: int, expired: int, max_depth: int | None) -> str:
    """Why the coins do not cover ``amount``: what was skipped says what to do about it."""
    why = [f"need {amount} sats, {total} spendable and free"]
    if deep:
        why.append(
            f"{deep} more at the arkoor depth limit ({max_depth}): refresh them in a round "
            "(or exit them) first"
        )
    if expired:
        why.append(f"{expired} more expired (the server sweeps them: lost to the wallet)")
    return "; ".join(why)


def _vtxo(body: str) -> Vtxo:
    vtxo: Vtxo = load(body, Vtxo)
    return vtxo


def _movement(body: str) -> Movement:
    movement: Movement = load(body, Movement)
    return movement

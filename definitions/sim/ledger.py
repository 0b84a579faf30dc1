"""The ledger of effects: what the simulated server and chain applied, under which key.

One row per idempotency key: the RPC, the action id (the key minus its step suffix), the
natural identity of the effect (``effect_id``: e.g. ``arkoor:<txid>``), whether this key's
call applied it (``applied`` 1) or found it already applied under another key (0: a natural
replay), how many calls came with this key (``attempts``), and the response, which is what a
replay with the same key returns. The ``flow`` table records every amount entering or leaving
the world, for the conservation invariant (see docs/simulation.md).
"""

from __future__ import annotations

import enum
import hashlib

import attrs

import fsm
from fsm.ids import INCARNATION_MARK, action_of_key

from ..services.ark_server import INVALID_ARGUMENT
from .db import Db

LEDGER_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    key TEXT PRIMARY KEY,
    rpc TEXT NOT NULL,
    action_id TEXT NOT NULL,
    effect_id TEXT NOT NULL,
    summary TEXT NOT NULL,
    request_digest TEXT NOT NULL,
    response TEXT NOT NULL,
    applied INTEGER NOT NULL,
    attempts INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ledger_effect ON ledger (effect_id);
CREATE TABLE IF NOT EXISTS flow (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    amount INTEGER NOT NULL,
    note TEXT NOT NULL
)
"""


class Flow(enum.Enum):
    """Money crossing the boundary of the wallet's world (signed amounts; reversals negative)."""

    FUNDING = "funding"
    """Minted by the funding helpers: initial VTXOs and on-chain coins."""
    LN_IN = "ln_in"
    """Paid in by a Lightning payer, counted when the server grants the HTLC-recv VTXOs."""
    LN_OUT = "ln_out"
    """Paid out to a Lightning payee, counted when the payment succeeds."""
    OFFBOARD_OUT = "offboard_out"
    """Paid to an offboard destination, counted when the inputs are forfeited (finish)."""
    SERVER_FEE = "server_fee"
    """Fees the server keeps (board, offboard, lightning send and receive)."""
    SWEPT = "swept"
    """VTXOs the server took back after their expiry (`sim.sweeps`): lost to their owner."""


@attrs.frozen
class LedgerEntry:
    key: str
    rpc: str
    action_id: str
    effect_id: str
    summary: str
    applied: int
    attempts: int


def action_of(key: str) -> str:
    """The action id inside an fsm idempotency key ``<action id>~<incarnation>.<seq>``.

    A step that makes several state-changing calls keys each one
    ``<action id>~<incarnation>.<seq>.<call>`` (``<call>`` not all digits, e.g. ``outputs`` or
    ``mailbox-0``): the ledger refuses one key for two different requests, and these are still
    the same action's. Keys of rows from before incarnations (``<action id>.<seq>``) are read
    too.
    """
    if INCARNATION_MARK in key:
        return action_of_key(key)
    head, sep, tail = key.rpartition(".")
    if sep and not tail.isdigit():
        inner, sep, seq = head.rpartition(".")
        return inner if sep and seq.isdigit() else key
    return head if sep else key


def request_digest(request: str) -> str:
    return hashlib.sha256(request.encode()).hexdigest()


class Ledger:
    def __init__(self, db: Db) -> None:
        self.db = db

    def replay(self, key: str, rpc: str, digest: str) -> str | None:
        """The stored response if ``key`` was applied before (counting this attempt).

        A key reused for a different RPC or request is refused: it would otherwise silently
        return the answer to another question.
        """
        row = self.db.one("SELECT rpc, request_digest, response FROM ledger WHERE key = ?", (key,))
        if row is None:
            return None
        if row[0] != rpc or row[1] != digest:
            raise fsm.Rejected(
                f"idempotency key {key!r} was used for a different request ({row[0]})",
                code=INVALID_ARGUMENT,
            )
        self.db.run("UPDATE ledger SET attempts = attempts + 1 WHERE key = ?", (key,))
        return str(row[2])

    def record(
        self,
        key: str,
        rpc: str,
        digest: str,
        effect_id: str,
        summary: str,
        response: str,
        *,
        applied: bool,
    ) -> None:
        self.db.run(
            "INSERT INTO ledger (key, rpc, action_id, effect_id, summary, request_digest, "
            "response, applied, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)",
            (key, rpc, action_of(key), effect_id, summary, digest, response, int(applied)),
        )

    def flow(self, key: str, kind: Flow, amount: int, note: str) -> None:
        self.db.run(
            "INSERT INTO flow (key, kind, amount, note) VALUES (?, ?, ?, ?)",
            (key, kind.value, amount, note),
        )

    def entries(self) -> list[LedgerEntry]:
        rows = self.db.all(
            "SELECT key, rpc, action_id, effect_id, summary, applied, attempts FROM ledger "
            "ORDER BY rowid"
        )
        return [LedgerEntry(*r) for r in rows]

    def entry(self, key: str) -> LedgerEntry | None:
        row = self.db.one(
            "SELECT key, rpc, action_id, effect_id, summary, applied, attempts FROM ledger "
            "WHERE key = ?",
            (key,),
        )
        return None if row is None else LedgerEntry(*row)

    def totals(self) -> dict[Flow, int]:
        sums = dict(self.db.all("SELECT kind, SUM(amount) FROM flow GROUP BY kind"))
        return {f: int(sums.get(f.value, 0)) for f in Flow}

"""The Ark half of the simulated server's state: VTXO set, boards, arkoor, mailbox, offboard
sessions.

The server comes in layers, one module each: `ArkState` (here) is the synchronous core
(each method applies one request inside the caller's transaction and says what it did: an
`Applied`); `server_sends.ServerSends` adds Lightning sends, `server_state.ServerState` the
receives, and is the whole server;
`ark_server.SimArkServer` is the `ArkServer` the wallet sees: faults, ledger and replays wrap
every call there.
"""

from __future__ import annotations

from typing import Generic, TypeVar

import attrs

import fsm

from ..model import PubkeyPolicy, Tx, TxOut, Vtxo, VtxoRequest, board_address, digest, spend_outputs
from ..services.ark_records import (
    BoardRequest,
    OffboardRequest,
    PreparedOffboard,
    RecoveryPost,
    ServerInfo,
)
from ..services.ark_server import INVALID_ARGUMENT, NOT_FOUND
from ..services.chain import TxState
from .chain import ChainState
from .clock import SimClock
from .db import Db, dump, load
from .fee_schedule import DEFAULT_FEES, fees_in_force
from .ledger import Flow, Ledger
from .lightning_node import LightningNodeState

T = TypeVar("T")

SERVER_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_vtxo (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    amount INTEGER NOT NULL,
    owner TEXT NOT NULL,
    plain INTEGER NOT NULL,
    status TEXT NOT NULL,
    spent_by TEXT,
    registered INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS srv_board (
    vtxo_id TEXT PRIMARY KEY,
    funding_txid TEXT NOT NULL,
    vout INTEGER NOT NULL,
    gross INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS srv_mailbox (
    mailbox_id TEXT NOT NULL,
    vtxo_id TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (mailbox_id, vtxo_id)
);
CREATE TABLE IF NOT EXISTS srv_offboard_session (
    txid TEXT PRIMARY KEY,
    request TEXT NOT NULL,
    prepared TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS srv_offboard (
    txid TEXT PRIMARY KEY,
    signed_tx TEXT NOT NULL
)
"""

BOARD_PENDING = "board_pending"
LIVE = "live"
SPENT = "spent"
EXITED = "exited"
"""An exit tx of the VTXO confirmed: the server can no longer spend it (`sim.exits`)."""
SWEPT = "swept"
"""Expired and taken back by the server (`sim.sweeps`): nobody can spend or exit it."""
BLOCKED_PREFIX = "blocked"


def default_info() -> ServerInfo:
    from ..model import Network

    return ServerInfo(
        network=Network.REGTEST,
        server_pubkey=digest("server-pubkey"),
        required_board_confirmations=2,
        min_board_amount=1_000,
        max_board_inputs=10,
        vtxo_expiry_delta=500,
        max_offboard_inputs=20,
        dust_limit=330,
        htlc_send_expiry_delta=60,
        vtxo_exit_delta=12,
        htlc_expiry_delta=6,
        max_htlc_recv_cltv_delta=100,
        fees=DEFAULT_FEES,
    )


@attrs.frozen
class Applied(Generic[T]):
    """What one request did: its answer, the natural identity of its effect, a summary, and
    whether it applied the effect now (``False``: the effect existed already, a replay)."""

    value: T
    effect_id: str
    summary: str
    applied: bool = True


def rejected(message: str, code: str = INVALID_ARGUMENT) -> fsm.Rejected:
    return fsm.Rejected(message, code=code)


class ArkState:
    def __init__(
        self, db: Db, ledger: Ledger, chain: ChainState, ln: LightningNodeState, clock: SimClock
    ) -> None:
        self.db = db
        self.ledger = ledger
        self.chain = chain
        self.ln = ln
        self.clock = clock

    # -- info and the VTXO set -----------------------------------------------------------

    def info(self) -> ServerInfo:
        """The published info with the fee schedule in force now."""
        return attrs.evolve(default_info(), fees=fees_in_force(self.db, self.clock.now()))

    def insert_vtxos(self, vtxos: list[Vtxo], status: str, *, registered: bool = False) -> None:
        for v in vtxos:
            self.db.run(
                "INSERT OR IGNORE INTO srv_vtxo (id, body, amount, owner, plain, status, "
                "registered) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    v.id,
                    dump(v),
                    v.amount,
                    v.pubkey,
                    int(isinstance(v.policy, PubkeyPolicy)),
                    status,
                    int(registered),
                ),
            )

    def vtxo(self, vtxo_id: str) -> tuple[Vtxo, str, str | None] | None:
        row = self.db.one("SELECT body, status, spent_by FROM srv_vtxo WHERE id = ?", (vtxo_id,))
        if row is None:
            return None
        vtxo: Vtxo = load(row[0], Vtxo)
        return vtxo, str(row[1]), row[2]

    def vtxos(self) -> list[tuple[Vtxo, str]]:
        rows = self.db.all("SELECT body, status FROM srv_vtxo ORDER BY rowid")
        return [(load(body, Vtxo), str(status)) for body, status in rows]

    def live_inputs(self, ids: list[str], spender: str) -> tuple[list[Vtxo], bool]:
        """The VTXOs ``ids``, all live, or all already spent by ``spender`` (``True``: a
        replay). Unknown: ``NotFound``; spent by anything else: ``InvalidArgument``."""
        if len(set(ids)) != len(ids):
            raise rejected("duplicate inputs")
        found = []
        spent_here = 0
        for vid in ids:
            row = self.vtxo(vid)
            if row is None:
                raise rejected(f"unknown vtxo {vid}", NOT_FOUND)
            vtxo, status, spent_by = row
            if status == SPENT and spent_by == spender:
                spent_here += 1
            elif status == SWEPT:
                raise rejected(f"vtxo {vid} expired at height {vtxo.expiry_height}: swept")
            elif status != LIVE:
                raise rejected(f"vtxo {vid} is {status}" + (f" by {spent_by}" if spent_by else ""))
            elif vtxo.expiry_height <= self.chain.tip():
                raise rejected(f"vtxo {vid} expired at height {vtxo.expiry_height}")
            found.append(vtxo)
        if spent_here not in (0, len(ids)):
            raise rejected("some inputs are already spent")
        return found, bool(ids) and spent_here == len(ids)

    def spent_of(self, ids: list[str]) -> list[str]:
        """The VTXOs of ``ids`` that are spent; an unknown one is ``NotFound``."""
        spent = []
        for vid in ids:
            row = self.vtxo(vid)
            if row is None:
                raise rejected(f"unknown vtxo {vid}", NOT_FOUND)
            if row[1] == SPENT:
                spent.append(vid)
        return spent

    def spend(self, ids: list[str], by: str) -> None:
        for vid in ids:
            self.db.run(
                "UPDATE srv_vtxo SET status = ?, spent_by = ? WHERE id = ? AND status = ?",
                (SPENT, by, vid, LIVE),
            )

    def outputs_of(
        self, spender: str, requests: list[VtxoRequest], inputs: list[Vtxo]
    ) -> list[Vtxo]:
        expiry = min(v.expiry_height for v in inputs)
        depth = max(v.depth for v in inputs) + 1
        anchor = inputs[0].anchor_txid
        return spend_outputs(spender, [v.id for v in inputs], requests, expiry, anchor, depth)

    def check_depth(self, inputs: list[Vtxo]) -> None:
        """A spend the wallet chooses may not make VTXOs deeper than the server's limit (their
        exit would take too many transactions): such inputs must be refreshed, or exited."""
        limit = self.info().max_arkoor_depth
        for v in inputs:
            if v.depth >= limit:
                raise rejected(f"vtxo {v.id} is at depth {v.depth}, the maximum is {limit}")

    # -- board ---------------------------------------------------------------------------

    def board_cosign(self, req: BoardRequest) -> Applied[Vtxo]:
        info = self.info()
        if not 0 <= req.vout < len(req.funding_tx.outputs):
            raise rejected(f"funding tx has no output {req.vout}")
        out = req.funding_tx.outputs[req.vout]
        if out.address != board_address(req.user_pubkey):
            raise rejected("funding output does not pay the board script")
        if out.amount < info.min_board_amount:
            raise rejected(f"board amount {out.amount} below minimum {info.min_board_amount}")
        if len(req.funding_tx.inputs) > info.max_board_inputs:
            raise rejected("too many funding inputs")
        if req.fee != info.board_fee(out.amount):
            raise rejected(f"board fee {req.fee} is no longer valid")
        outpoint = req.funding_tx.outpoint(req.vout)
        [vtxo] = spend_outputs(
            "board",
            [str(outpoint)],
            [VtxoRequest(out.amount - req.fee, PubkeyPolicy(req.user_pubkey))],
            req.expiry_height,
            req.funding_tx.txid,
        )
        known = self.vtxo(vtxo.id) is not None
        self.insert_vtxos([vtxo], BOARD_PENDING)
        self.db.run(
            "INSERT OR IGNORE INTO srv_board (vtxo_id, funding_txid, vout, gross) "
            "VALUES (?, ?, ?, ?)",
            (vtxo.id, req.funding_tx.txid, req.vout, out.amount),
        )
        return Applied(vtxo, f"board_cosign:{vtxo.id}", f"cosign board {vtxo.id}", not known)

    def register_board(self, vtxo: Vtxo, key: str) -> Applied[None]:
        row = self.vtxo(vtxo.id)
        board = self.db.one(
            "SELECT funding_txid, gross FROM srv_board WHERE vtxo_id = ?", (vtxo.id,)
        )
        if row is None or board is None:
            raise rejected(f"unknown board vtxo {vtxo.id}", NOT_FOUND)
        effect = f"board_register:{vtxo.id}"
        if row[1] != BOARD_PENDING:
            return Applied(None, effect, f"register board {vtxo.id} (again)", False)
        need = self.info().required_board_confirmations
        confs = self.chain.status(str(board[0])).confirmations(self.chain.tip())
        if confs < need:
            raise rejected(f"board funding tx has {confs} confirmations, {need} required")
        self.db.run("UPDATE srv_vtxo SET status = ?, registered = 1 WHERE id = ?", (LIVE, vtxo.id))
        self.ledger.flow(key, Flow.SERVER_FEE, int(board[1]) - vtxo.amount, f"board {vtxo.id}")
        return Applied(None, effect, f"register board {vtxo.id}")

    # -- arkoor, registration, mailbox ---------------------------------------------------

    def arkoor_cosign(
        self,
        input_ids: list[str],
        outputs: list[VtxoRequest],
        recovery: RecoveryPost | None = None,
    ) -> Applied[list[Vtxo]]:
        spender = digest("arkoor", *sorted(input_ids), *(dump(o) for o in outputs))
        inputs, replay = self.live_inputs(sorted(input_ids), spender)
        self.check_depth(inputs)
        if sum(v.amount for v in inputs) != sum(o.amount for o in outputs):
            raise rejected("arkoor outputs do not add up to the inputs")
        if any(o.amount <= 0 for o in outputs):
            raise rejected("arkoor output amounts must be positive")
        if recovery is not None and not set(recovery.outputs) <= set(range(len(outputs))):
            raise rejected(f"recovery post names outputs {recovery.outputs} of {len(outputs)}")
        created = self.outputs_of(spender, outputs, inputs)
        if not replay:
            self.spend([v.id for v in inputs], spender)
            self.insert_vtxos(created, LIVE)
        if recovery is not None:  # insert-or-ignore: a replay posts nothing new
            self.post(recovery.mailbox_id, [created[i] for i in sorted(set(recovery.outputs))])
        return Applied(
            created, f"arkoor:{spender}", f"arkoor {len(inputs)}->{len(created)}", not replay
        )

    def register(self, vtxos: list[Vtxo]) -> Applied[None]:
        changed = 0
        for v in vtxos:
            if self.vtxo(v.id) is None:
                raise rejected(f"unknown vtxo {v.id}", NOT_FOUND)
            cur = self.db.run(
                "UPDATE srv_vtxo SET registered = 1 WHERE id = ? AND registered = 0", (v.id,)
            )
            changed += cur.rowcount
        ids = sorted(v.id for v in vtxos)
        effect = f"register:{digest(*ids)}"
        return Applied(None, effect, f"register {len(ids)} vtxos", changed > 0)

    def post(self, mailbox_id: str, vtxos: list[Vtxo]) -> Applied[None]:
        """Deliver ``vtxos`` to a mailbox. Only VTXOs the server made are delivered, as they
        are: a recipient (another wallet on this server) takes in what its mailbox holds."""
        for v in vtxos:
            row = self.vtxo(v.id)
            if row is None:
                raise rejected(f"unknown vtxo {v.id}", NOT_FOUND)
            if row[0] != v:
                raise rejected(f"vtxo {v.id} is not the one the server made")
        posted = 0
        for v in vtxos:
            cur = self.db.run(
                "INSERT OR IGNORE INTO srv_mailbox (mailbox_id, vtxo_id, body) VALUES (?, ?, ?)",
                (mailbox_id, v.id, dump(v)),
            )
            posted += cur.rowcount
        ids = sorted(v.id for v in vtxos)
        effect = f"mailbox:{mailbox_id}:{digest(*ids)}"
        return Applied(None, effect, f"post {len(ids)} vtxos", posted > 0)

    def mailbox(self, mailbox_id: str) -> list[Vtxo]:
        rows = self.db.all(
            "SELECT body FROM srv_mailbox WHERE mailbox_id = ? ORDER BY rowid", (mailbox_id,)
        )
        return [load(body, Vtxo) for (body,) in rows]

    # -- offboard ------------------------------------------------------------------------

    def prepare_offboard(self, req: OffboardRequest) -> Applied[PreparedOffboard]:
        request = dump(req)
        session = self.db.one(
            "SELECT prepared FROM srv_offboard_session WHERE request = ?", (request,)
        )
        if session is not None:
            prepared: PreparedOffboard = load(session[0], PreparedOffboard)
            effect = f"offboard_prepare:{prepared.unsigned_tx.txid}"
            return Applied(prepared, effect, "prepare offboard (session exists)", False)
        inputs, _ = self.live_inputs(list(req.input_ids), spender="")
        info = self.info()
        if req.fee_rate != info.offboard_fee_rate:
            raise rejected("fee rate is no longer valid")
        total = sum(v.amount for v in inputs)
        fee = info.offboard_fee(len(inputs), req.fee_rate)
        expected = total - fee if req.deduct_fees_from_gross else req.net_amount
        if req.net_amount != expected or req.net_amount + fee != total:
            raise rejected("offboard amount does not match expected amount")
        if req.net_amount < info.dust_limit:
            raise rejected("offboard amount is dust")
        if req.destination.startswith(BLOCKED_PREFIX):
            raise rejected("output address is blocked")
        # After a restart an identical request opens the same session again (same coin, same
        # tx): a natural replay of the first prepare, not a second effect.
        tag = f"offboard:{digest(request)}"
        again = self.chain.tx(digest("mint", tag, "server", req.net_amount)) is not None
        coin = self.chain.mint("server", req.net_amount, tag=tag)
        tx = Tx.build([coin], [TxOut(req.destination, req.net_amount)], signed=False)
        nonces = [digest("nonce", tx.txid, v.id) for v in inputs]
        prepared = PreparedOffboard(tx, nonces)
        self.db.run(
            "INSERT OR REPLACE INTO srv_offboard_session (txid, request, prepared) "
            "VALUES (?, ?, ?)",
            (tx.txid, request, dump(prepared)),
        )
        summary = f"prepare offboard {tx.txid}" + (" (after a restart)" if again else "")
        return Applied(prepared, f"offboard_prepare:{tx.txid}", summary, not again)

    def finish_offboard(self, txid: str, signatures: list[str], key: str) -> Applied[Tx]:
        session = self.db.one(
            "SELECT request, prepared FROM srv_offboard_session WHERE txid = ?", (txid,)
        )
        if session is None:
            raise rejected(f"no offboard session for {txid}", NOT_FOUND)
        req: OffboardRequest = load(session[0], OffboardRequest)
        prepared: PreparedOffboard = load(session[1], PreparedOffboard)
        effect = f"offboard_finish:{txid}"
        done = self.db.one("SELECT signed_tx FROM srv_offboard WHERE txid = ?", (txid,))
        if done is not None:
            signed: Tx = load(done[0], Tx)
            return Applied(signed, effect, f"finish offboard {txid} (again)", False)
        if len(signatures) != len(req.input_ids):
            raise rejected("one forfeit signature per input required")
        inputs, _ = self.live_inputs(list(req.input_ids), spender=txid)
        self.spend([v.id for v in inputs], txid)
        fee = sum(v.amount for v in inputs) - req.net_amount
        self.ledger.flow(key, Flow.OFFBOARD_OUT, req.net_amount, f"offboard {txid}")
        self.ledger.flow(key, Flow.SERVER_FEE, fee, f"offboard {txid}")
        signed = prepared.unsigned_tx.with_signatures()
        self.db.run(
            "INSERT INTO srv_offboard (txid, signed_tx) VALUES (?, ?)", (txid, dump(signed))
        )
        if self.chain.status(txid).state is TxState.NOT_FOUND:
            self.chain.broadcast(signed)
        return Applied(signed, effect, f"finish offboard {txid}")

    def restart(self) -> None:
        """Forget every session (what a server restart loses)."""
        with self.db.transaction():
            self.db.run("DELETE FROM srv_offboard_session")

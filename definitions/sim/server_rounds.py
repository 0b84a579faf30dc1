"""Rounds on the simulated server: wallets register VTXOs for the next round, the round
(`World.run_round`, which a test or the demo calls, as the server's schedule would) spends
them and issues fresh VTXOs: depth 0, a new expiry (tip + ``vtxo_expiry_delta``), anchored
in the round. This is how a wallet refreshes VTXOs near expiry or too deep to spend.

A participation is registered under its natural id (the digest of its inputs and outputs),
so a retried registration is a replay; an input may be in one pending participation only.
A round takes every pending participation whose inputs are still live and unexpired; the
others fail, with their reason, and spend nothing. The round charges no fee (the fee
schedule has none for refreshes).
"""

from __future__ import annotations

from ..model import VtxoRequest, digest, round_participation_id, spend_outputs
from ..services.ark_records import RoundResult, RoundState
from ..services.ark_server import NOT_FOUND
from .ark_state import LIVE, SWEPT, Applied, ArkState, rejected
from .db import dump, load

ROUNDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS srv_round_part (
    id TEXT PRIMARY KEY,
    inputs TEXT NOT NULL,
    outputs TEXT NOT NULL,
    state TEXT NOT NULL,
    result TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS srv_round (n INTEGER PRIMARY KEY, height INTEGER NOT NULL)
"""


def register_for_round(
    state: ArkState, input_ids: list[str], outputs: list[VtxoRequest]
) -> Applied[str]:
    ids = sorted(input_ids)
    part_id = round_participation_id(ids, outputs)
    effect = f"round_register:{part_id}"
    if state.db.one("SELECT 1 FROM srv_round_part WHERE id = ?", (part_id,)) is not None:
        return Applied(part_id, effect, f"register {part_id} (again)", False)
    inputs, _ = state.live_inputs(ids, part_id)
    if not inputs:
        raise rejected("a round participation needs inputs")
    if sum(v.amount for v in inputs) != sum(o.amount for o in outputs):
        raise rejected("round outputs do not add up to the inputs")
    if any(o.amount <= 0 for o in outputs):
        raise rejected("round output amounts must be positive")
    for other, body in state.db.all(
        "SELECT id, inputs FROM srv_round_part WHERE state = ?", (RoundState.PENDING.value,)
    ):
        taken = set(load(body, list[str])) & set(ids)
        if taken:
            raise rejected(f"vtxo {min(taken)} is already registered for the round ({other})")
    state.db.run(
        "INSERT INTO srv_round_part (id, inputs, outputs, state) VALUES (?, ?, ?, ?)",
        (part_id, dump(ids), dump(outputs), RoundState.PENDING.value),
    )
    return Applied(part_id, effect, f"register {len(ids)} vtxos for the round")


def round_result(state: ArkState, part_id: str) -> RoundResult:
    row = state.db.one("SELECT state, result FROM srv_round_part WHERE id = ?", (part_id,))
    if row is None:
        raise rejected(f"unknown round participation {part_id}", NOT_FOUND)
    if row[0] == RoundState.PENDING.value:
        return RoundResult(RoundState.PENDING)
    result: RoundResult = load(row[1], RoundResult)
    return result


def run_round(state: ArkState) -> int:
    """Run a round now: settle every pending participation. Returns the round's number."""
    with state.db.transaction():
        row = state.db.one("SELECT COALESCE(MAX(n) + 1, 0) FROM srv_round")
        n = int(row[0]) if row else 0
        tip = state.chain.tip()
        state.db.run("INSERT INTO srv_round (n, height) VALUES (?, ?)", (n, tip))
        anchor = digest("round", n)
        expiry = tip + state.info().vtxo_expiry_delta
        pending = state.db.all(
            "SELECT id, inputs, outputs FROM srv_round_part WHERE state = ? ORDER BY rowid",
            (RoundState.PENDING.value,),
        )
        for part_id, inputs_body, outputs_body in pending:
            ids: list[str] = load(inputs_body, list[str])
            result = _settle(state, str(part_id), ids, outputs_body, expiry, anchor)
            state.db.run(
                "UPDATE srv_round_part SET state = ?, result = ? WHERE id = ?",
                (result.state.value, dump(result), part_id),
            )
            state.ledger.record(
                f"server.round.{n}.{part_id}", "run_round", "", f"round:{part_id}",
                f"round {n}: {result.state.value}", dump(result), applied=True,
            )  # fmt: skip
    return n


def _settle(
    state: ArkState, part_id: str, ids: list[str], outputs_body: str, expiry: int, anchor: str
) -> RoundResult:
    tip = state.chain.tip()
    for vid in ids:
        row = state.vtxo(vid)
        if row is not None and (row[1] == SWEPT or row[0].expiry_height <= tip):
            return RoundResult(RoundState.FAILED, reason=f"vtxo {vid} expired")
        if row is None or row[1] != LIVE:
            return RoundResult(RoundState.FAILED, reason=f"vtxo {vid} is no longer live")
    outputs: list[VtxoRequest] = load(outputs_body, list[VtxoRequest])
    vtxos = spend_outputs("round", ids, outputs, expiry, anchor)
    state.spend(ids, f"round:{part_id}")
    state.insert_vtxos(vtxos, LIVE, registered=True)
    return RoundResult(RoundState.DONE, vtxos)


__all__ = ["ROUNDS_SCHEMA", "register_for_round", "round_result", "run_round"]

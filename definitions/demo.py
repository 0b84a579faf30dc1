"""``fsm demo``: a wallet runs a mix of the five bark kinds against a faulty simulated world.

The wallet's actions live in a SQLite file (``--db``, default ``./fsm-demo.sqlite``), the
simulated world beside it (``<db>.world/``), with a second wallet on the same server, the
peer (``demo_plan.Peer``: its wallet store and its fsm store ``fsm-peer.sqlite`` in the
world's folder, its own executor), which the arkoor sends and half the lightning sends pay.
Beside its payments the wallet keeps itself up (`demo_upkeep`): a VTXO at the depth limit
is refreshed in a round of the server's, and another leaves the Ark by a unilateral exit
whose transactions' fees it pays by CPFP from its on-chain coins.
Each round starts the planned actions not yet started, pays the receives' invoices, drives
every live action of both wallets once, lets the peer take in its mailbox, has the server
run a round, then mines a block and moves the clock 30 s. At the end: a summary per kind
(both wallets' actions), a line on the rounds, the refresh and the exit, and the invariant
check across both wallets.

The server charges the tiered fee schedule (`sim.fee_schedule.TIERED_FEES`) and raises its
fees three rounds in (`set_demo_fees`), so some quotes go stale between start and use.

``--kill-after N`` SIGKILLs the process right after its N-th committed step; running the demo
again on the same files resumes: what was started is recorded in the demo's own table
(``demo_meta``, in the same file), so nothing is started twice, and the executor finishes the
live actions from their checkpoints. Exit 0 only when every action ended and the invariants
hold; 1 with a one-line reason otherwise; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import sqlite3
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import attrs

import fsm
from fsm.cli import Command, CommandError

from .demo_plan import PEER, SPECS, KindSpec, Peer, peer_store_path
from .demo_upkeep import (
    UPKEEP_KINDS,
    fund_upkeep,
    start_upkeep,
    upkeep_line,
    upkeep_started,
    upkeep_starts,
)
from .lightning_receive import LightningReceiveKind
from .lightning_receive_ops import read_receive
from .mailbox_sync import sync_mailbox
from .services import Services
from .services.ark_server import ServerUnavailable
from .sim import Faults, World, check_world_invariants, make_world
from .sim.fee_schedule import TIERED_FEES
from .sim.wallet_store import SqliteWalletStore

MAX_ROUNDS = 200
START_ATTEMPTS = 5
FUNDING_VTXO = 20_000
FUNDING_COIN = 20_000


def faults_for(rate: float) -> Faults:
    """One knob for the whole world: mostly transient faults, a few rejections."""
    return Faults(
        drop_request=rate / 3,
        lose_response=rate / 3,
        reject_invalid_argument=rate / 20,
        reject_not_found=rate / 20,
        restart=rate / 10,
        evict=rate / 2,
        conflict=rate / 5,
        ln_fail=rate,
        ln_max_pending_polls=2,
    )


FEE_CHANGE_AFTER = 90.0
"""Seconds into the run when the server's fees go up (three rounds): quotes made before and
used after are refused as stale, and the kinds fail them with the server's reason."""


def set_demo_fees(world: World) -> None:
    """The tiered schedule from the start, and dearer fees (higher offboard rate, a larger
    lightning send base) from `FEE_CHANGE_AFTER` on."""
    world.set_fees(TIERED_FEES)
    dearer = attrs.evolve(
        TIERED_FEES,
        offboard_fee_rate=TIERED_FEES.offboard_fee_rate + 20,
        lightning_send=[attrs.evolve(t, base=t.base + 5) for t in TIERED_FEES.lightning_send],
    )
    world.set_fees(dearer, since=world.clock.now() + FEE_CHANGE_AFTER)


class Meta:
    """The demo's own small table, in the wallet's database: what survives a SIGKILL."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
        self.db.execute("CREATE TABLE IF NOT EXISTS demo_meta (key TEXT PRIMARY KEY, value TEXT)")

    def get(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM demo_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set(self, key: str, value: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO demo_meta VALUES (?, ?)", (key, value))

    def add(self, key: str, n: int) -> None:
        self.set(key, str(int(self.get(key) or 0) + n))


class Progress:
    """Counts committed steps (for ``--kill-after``) and shows where the run is."""

    def __init__(self, kill_after: int | None) -> None:
        self.kill_after = kill_after
        self.commits = 0
        self.tty = sys.stdout.isatty()
        self.status = ""

    def on_commit(self, action_id: str, entry: Any) -> None:
        self.commits += 1
        if self.kill_after is not None and self.commits >= self.kill_after:
            self.line(f"killing myself (SIGKILL) after {self.commits} committed steps")
            os.kill(os.getpid(), signal.SIGKILL)
        if self.tty:
            to = entry.to_state or entry.outcome
            sys.stdout.write(f"\r\033[K{self.status} | {action_id[:24]} {entry.from_state}->{to}")
            sys.stdout.flush()

    def line(self, text: str) -> None:
        sys.stdout.write(("\r\033[K" if self.tty else "") + text + "\n")
        sys.stdout.flush()


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.db = Path(args.db)
        self.meta = Meta(self.db)
        stored = self.meta.get("config")
        config = {"actions": args.actions, "seed": args.seed, "faults": args.faults}
        if stored is None:
            self.meta.set("config", json.dumps(config))
        else:
            config = json.loads(stored)
        self.resuming = stored is not None
        self.n: int = config["actions"]
        self.seed: int = config["seed"]
        self.store = fsm.Store.sqlite(self.db)
        folder = self.db.parent / f"{self.db.name}.world"
        fresh = not folder.exists()
        faults = faults_for(config["faults"]) if fresh else None
        try:
            self.world: World = make_world(folder, self.seed, faults)
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        if fresh:
            set_demo_fees(self.world)
        self.svc: Services = self.world.services(self.store)
        self.specs = SPECS
        self.progress = Progress(args.kill_after)
        kinds = [spec.kind for spec in self.specs] + list(UPKEEP_KINDS)
        self.ex = self._executor(self.store, self.svc, kinds)
        self.peer_store = fsm.Store.sqlite(peer_store_path(folder))
        peer_svc = self.world.services(self.peer_store, name=PEER)
        self.peer = Peer(
            peer_svc, self._executor(self.peer_store, peer_svc, [LightningReceiveKind])
        )

    def _executor(
        self, store: fsm.Store, svc: Services, kinds: list[type[Any]]
    ) -> fsm.Executor[Services]:
        return fsm.Executor(
            store,
            svc,
            kinds=kinds,
            clock=self.world.clock.now,
            sleep=self._sleep,
            on_commit=self.progress.on_commit,
        )

    def stores(self) -> tuple[fsm.Store, fsm.Store]:
        return self.store, self.peer_store

    async def _sleep(self, seconds: float) -> None:
        self.world.advance_time(seconds)

    def spec(self, i: int) -> KindSpec:
        return self.specs[i % len(self.specs)]

    def fund(self) -> None:
        if self.meta.get("funded"):
            return
        per_kind = Counter(self.spec(i).name for i in range(self.n))
        vtxos = per_kind["arkoor_send"] + per_kind["lightning_send"] + per_kind["offboard"] + 1
        self.world.fund_vtxos(self.svc.wallet, [FUNDING_VTXO] * vtxos)
        for _ in range(per_kind["board"]):
            self.world.fund_onchain(FUNDING_COIN)
        fund_upkeep(self.world, self.svc, self.meta)
        self.meta.set("funded", "1")

    async def start_planned(self) -> None:
        # One board at a time: the sim's on-chain wallet picks coins without knowing about
        # funding txs not broadcast yet (or evicted), and two boards must not fund from one coin.
        boards = sum(1 for r in self.store.rows() if r.kind == "board")
        for i in range(self.n):
            if self.meta.get(f"started.{i}") is not None:
                continue
            spec = self.spec(i)
            if spec.name == "board":
                boards += 1
                if boards > 1:
                    continue
            rng = random.Random(f"{self.seed}:{i}")
            try:
                action, resources = await spec.start(self.svc, self.peer, i, rng)
                await self.ex.start(action, resources=resources)
            except Exception as exc:  # any refusal: try again next round, then give up
                self.meta.add(f"start_attempts.{i}", 1)
                if int(self.meta.get(f"start_attempts.{i}") or 0) >= START_ATTEMPTS:
                    self.meta.set(f"started.{i}", f"!{type(exc).__name__}: {exc}")
                continue
            self.meta.set(f"started.{i}", action.id)

    async def pay_receives(self) -> None:
        for i in range(self.n):
            action_id = self.meta.get(f"started.{i}") or ""
            if not action_id.startswith("ln_recv.") or self.meta.get(f"paid.{i}"):
                continue
            found = read_receive(self.store, action_id.removeprefix("ln_recv."))
            if found is not None:
                # A refusal (expired invoice) is fine: the receive then ends as expired.
                with contextlib.suppress(fsm.Rejected):
                    await self.svc.lightning.pay_invoice(found[1].invoice, f"demo.payer.{i}")
            self.meta.set(f"paid.{i}", "1")

    def all_started(self) -> bool:
        planned = all(self.meta.get(f"started.{i}") is not None for i in range(self.n))
        return planned and upkeep_started(self.meta)

    async def upkeep(self) -> None:
        """Start the refresh and the exit (before the plan: no payment takes their VTXOs);
        a start refused by a fault is tried again next round."""
        with contextlib.suppress(ServerUnavailable, fsm.Rejected):
            await start_upkeep(self.svc, self.ex, self.meta)

    async def peer_sync(self) -> None:
        """The peer takes in what was paid to it; a failed sync is run again next round."""
        with contextlib.suppress(ServerUnavailable, fsm.Rejected):
            await sync_mailbox(self.peer.services)

    def live(self) -> Counter[str]:
        return Counter(r.kind for store in self.stores() for r in store.rows())

    async def run(self) -> int:
        live = self.live()
        for kind, count in live.items():
            self.meta.add(f"resumes.{kind}", count)
        if self.resuming:
            self.progress.line(f"resuming: {sum(live.values())} live action(s) found in {self.db}")
        self.fund()
        rounds = 0
        while rounds < MAX_ROUNDS:
            rounds += 1
            await self.upkeep()
            await self.start_planned()
            await self.pay_receives()
            await self.ex.resume_all()
            await self.peer.executor.resume_all()
            await self.peer_sync()
            remaining = sum(self.live().values())
            self.progress.status = f"round {rounds}: {remaining} in flight"
            if not self.progress.tty:
                self.progress.line(f"{self.progress.status}, {self.progress.commits} steps")
            if remaining == 0 and self.all_started():
                break
            self.world.run_round()
            self.world.mine(1)
            self.world.advance_time(30.0)
        return self.summary(rounds)

    def summary(self, rounds: int) -> int:
        rows: dict[str, Counter[str]] = {s.name: Counter() for s in self.specs}
        for i in range(self.n):
            started = self.meta.get(f"started.{i}") or "!"
            rows[self.spec(i).name]["not started" if started.startswith("!") else "started"] += 1
        for t in (t for store in self.stores() for t in store.transitions()):
            c = rows.setdefault(str(t.kind), Counter())
            if t.outcome in ("done", "failed"):
                c[str(t.outcome)] += 1
            if t.via in ("retry", "rejection"):
                c[str(t.via)] += 1
        # The peer's receives are started by the plan's lightning sends, not by entries.
        peer_receives = {t.action_id for t in self.peer_store.transitions()}
        rows[LightningReceiveKind.name]["started"] += len(peer_receives)
        for name in (k.name for k in UPKEEP_KINDS):
            rows.setdefault(name, Counter())["started"] += upkeep_starts(self.meta, name)
        live = self.live()
        headers = ["KIND", "STARTED", "DONE", "FAILED", "LIVE", "RETRIES", "REJECTIONS", "RESUMES"]
        table = [headers]
        for kind, c in rows.items():
            resumes = self.meta.get(f"resumes.{kind}") or "0"
            cells = [c["started"], c["done"], c["failed"], live[kind], c["retry"], c["rejection"]]
            table.append([kind, *map(str, cells), resumes])
        widths = [max(len(r[k]) for r in table) for k in range(len(headers))]
        out = sys.stdout
        self.progress.line(f"finished after {rounds} round(s), {self.progress.commits} steps")
        for r in table:
            out.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)) + "\n")
        wallets = [(self.svc.wallet, self.store), (self.peer.services.wallet, self.peer_store)]
        problems = check_world_invariants(self.world, _sim_wallets(wallets))
        peer = self.peer.services.wallet
        spendable = sum(v.amount for v in peer.spendable_vtxos())
        self.progress.line(f"peer wallet: {spendable} sats spendable")
        self.progress.line(upkeep_line(self.world, self.svc, self.meta))
        out.write(f"invariants: {'ok' if not problems else f'{len(problems)} problem(s)'}\n")
        for p in problems:
            out.write(f"  {p}\n")
        out.write(f"database: {self.db}  (try: fsm diagram lightning_receive --db {self.db})\n")
        out.flush()
        if problems:
            raise CommandError(f"invariant check failed: {problems[0]}")
        if live:
            raise CommandError(f"{sum(live.values())} action(s) not finished after {rounds} rounds")
        return 0


def _sim_wallets(
    wallets: list[tuple[Any, fsm.Store]],
) -> list[tuple[SqliteWalletStore, fsm.Store]]:
    """The demo's wallets are the sim's stores (its services type them as the protocol)."""
    out = []
    for wallet, store in wallets:
        assert isinstance(wallet, SqliteWalletStore)
        out.append((wallet, store))
    return out


def _at_least(low: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def configure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", default="fsm-demo.sqlite", metavar="PATH", help="the wallet's file")
    p.add_argument("--actions", type=_at_least(1), default=20, metavar="N", help="how many")
    p.add_argument("--seed", type=int, default=1, metavar="S", help="the world's seed")
    p.add_argument("--faults", type=_rate, default=0.1, metavar="R", help="fault rate 0..1")
    p.add_argument(
        "--kill-after", type=_at_least(1), metavar="N", help="SIGKILL after N committed steps"
    )


def run(args: argparse.Namespace) -> int:
    # Retries and rejections are the point of the demo: count them, do not log each one.
    logging.getLogger("fsm").setLevel(logging.ERROR)
    return asyncio.run(Demo(args).run())


COMMAND = Command("run the bark wallet kinds against a faulty simulated world", configure, run)

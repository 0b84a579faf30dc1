"""Test rig for the board and offboard kinds: a simulated world, a real fsm SQLite store and
an executor on the world's clock; plus a double-stepper that runs each step twice from the
same state through the interpreter (bark's BARK_DOUBLE_DRIVE_ACTIONS, without the executor)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import fsm
from fsm.testing.steps import run_twice, step_context
from fsm_bark.board import BoardKind
from fsm_bark.offboard import OffboardKind
from fsm_bark.services import WalletConfig
from fsm_bark.sim import Faults, check_wallet_invariants, make_world

KINDS = [BoardKind, OffboardKind]
HERE = Path(__file__).parent
CHILD = HERE / "onchain_child.py"


class Rig:
    def __init__(
        self, folder: Path, *, seed: int = 1, faults: Faults | None = None, **config: Any
    ) -> None:
        self.folder = folder
        self.world = make_world(folder / "world", seed, faults)
        self.store = fsm.Store.sqlite(folder / "fsm.sqlite")
        self.svc = self.world.services(self.store, WalletConfig(**config))
        self.wallet = self.svc.wallet
        self.ex = fsm.Executor(
            self.store, self.svc, kinds=KINDS, clock=self.world.clock.now, sleep=self.sleep
        )

    async def sleep(self, seconds: float) -> None:
        self.world.advance_time(seconds)

    async def start(self, started: tuple[Any, list[str]]) -> str:
        action, resources = started
        assert await self.ex.start(action, resources=resources)
        return str(action.id)

    async def drive(self, action_id: str) -> fsm.DriveResult:
        return await self.ex.drive(action_id)

    def row(self, action_id: str) -> Any:
        return self.store.row(action_id)

    def data(self, action_id: str) -> Any:
        return self.load(action_id).data

    def load(self, action_id: str) -> Any:
        row = self.store.row(action_id)
        assert row is not None, f"no live action {action_id}"
        codec = self.ex.registry.get(row.kind)
        return codec.load(row.state, row.version, self.store.payload_of(action_id))

    def held(self) -> dict[str, str]:
        return dict(self.store.all_resources())

    def invariants(self) -> list[str]:
        return check_wallet_invariants(
            self.world, self.world.wallet_store(self.store.holder_of), self.store
        )

    def applied(self) -> list[tuple[str, int]]:
        return [(e.effect_id, e.applied) for e in self.world.ledger.entries()]

    def close(self) -> None:
        self.store.close()
        self.world.close()


class DoubleStepper:
    """Drives one action through the interpreter alone, running every step twice from the
    same state with the same idempotency key and checking both runs agree and the second
    applied nothing new. Resources are kept in a set (the executor is not involved)."""

    def __init__(self, rig: Rig, action: Any, resources: list[str]) -> None:
        self.rig = rig
        self.action = action
        self.held = set(resources)
        self.seq = 0
        self.states: list[str] = [action.state]

    def _ctx(self) -> fsm.StepContext[Any]:
        held = set(self.held)
        now = self.rig.world.clock.now()
        return step_context(self.rig.svc, self.action.id, seq=self.seq, now=now, held=held)

    async def step(self) -> fsm.Outcome:
        ledger: list[Any] = []
        runs = await run_twice(self.action, self._ctx, lambda: ledger.append(self.rig.applied()))
        first, second, ctx1, ctx2 = runs.first, runs.second, runs.first_ctx, runs.second_ctx
        assert type(first) is type(second), (self.action.state, first, second)
        if isinstance(first, fsm.Next | fsm.Park):
            assert first.state == second.state, (self.action.state, first, second)
        assert self.rig.applied() == ledger[0], f"second run of {self.action.state} applied effects"
        assert ctx1.resource_changes() == ctx2.resource_changes()
        acquired, released = ctx2.resource_changes()
        self.held |= set(acquired)
        self.held -= set(released)
        if isinstance(second, fsm.Next | fsm.Park):
            if isinstance(second, fsm.Next) or second.state != self.action:
                self.seq += 1
                self.states.append(second.state.state)
            self.action = second.state
        return second

    async def until_park(self) -> fsm.Outcome:
        while True:
            outcome = await self.step()
            if not isinstance(outcome, fsm.Next):
                return outcome


def run_child(folder: Path, scenario: str, kill_after: int) -> subprocess.CompletedProcess[str]:
    """Run `onchain_child.py` on ``folder``; it SIGKILLs itself after its Nth commit."""
    return subprocess.run(
        [sys.executable, str(CHILD), str(folder), scenario, str(kill_after)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

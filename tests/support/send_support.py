"""Shared set-up for the arkoor send and lightning send tests (and their crash child).

`Wallet` wires a simulated world to an fsm store and an executor whose clock is the world's
clock and whose sleep advances it, so retries and polls take no real time. `double_drive`
is bark's re-entrancy checker (reference 1.9): it walks an action to its end through the
interpreter, running every step twice from the same state with the same idempotency key,
and checks that both runs give the same outcome and that the second applies no new effect.
"""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import fsm
from fsm.testing.steps import run_twice, step_context
from fsm_bark.arkoor_send import ArkoorSendKind
from fsm_bark.lightning_send import LightningSendKind
from fsm_bark.model import ArkAddress, digest
from fsm_bark.services import Services, WalletConfig
from fsm_bark.sim import Faults, World, check_wallet_invariants, make_world
from fsm_bark.sim.wallet_store import SqliteWalletStore

KINDS = [ArkoorSendKind, LightningSendKind]


class Wallet:
    def __init__(
        self,
        folder: Path,
        seed: int = 1,
        faults: Faults | None = None,
        config: WalletConfig | None = None,
    ) -> None:
        self.world: World = make_world(folder / "world", seed, faults)
        self.store = fsm.Store.sqlite(folder / "actions.sqlite")
        self.services: Services = self.world.services(self.store, config)
        self.executor: fsm.Executor[Services] = fsm.Executor(
            self.store,
            self.services,
            kinds=KINDS,
            clock=self.world.clock.now,
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.world.advance_time(seconds)

    @property
    def wallet(self) -> SqliteWalletStore:
        store = self.services.wallet
        assert isinstance(store, SqliteWalletStore)
        return store

    def problems(self) -> list[str]:
        return check_wallet_invariants(self.world, self.wallet, self.store)

    def applied(self) -> dict[str, int]:
        """effect id -> how many times it was applied, over the whole ledger."""
        out: dict[str, int] = {}
        for e in self.world.ledger.entries():
            out[e.effect_id] = out.get(e.effect_id, 0) + e.applied
        return out

    def close(self) -> None:
        self.store.close()
        self.wallet.close()
        self.world.close()


def payee(name: str = "payee", mailboxes: int = 1) -> ArkAddress:
    return ArkAddress(digest("payee", name), [f"mbx-{name}-{n}" for n in range(mailboxes)])


def _context(w: Wallet, action_id: str, seq: int, held: set[str]) -> fsm.StepContext[Services]:
    now = w.world.clock.now()
    return step_context(
        w.services, action_id, seq=seq, now=now, held=lambda: held, holder_of=w.store.holder_of
    )


def _snapshot(w: Wallet, into: list[dict[str, int]]) -> None:
    into.append(w.applied())


async def double_drive(
    w: Wallet, action: fsm.Action[Services], held: set[str], max_steps: int = 20
) -> list[str]:
    """Run ``action`` to its end, each step twice; returns the states it went through."""
    states = [action.state]
    for seq in range(max_steps):
        before = w.applied()
        ledger_size = len(w.world.ledger.entries())
        snapshots: list[dict[str, int]] = []
        make = functools.partial(_context, w, action.id, seq, set(held))
        runs = await run_twice(action, make, functools.partial(_snapshot, w, snapshots))
        first, second, after_first = runs.first, runs.second, snapshots[0]
        assert second == first, f"step {seq} from {action.state}: {first!r} then {second!r}"
        assert w.applied() == after_first, f"step {seq} from {action.state} applied twice"
        assert len(w.world.ledger.entries()) >= ledger_size
        assert all(after_first.get(k, 0) >= n for k, n in before.items())
        acquired, released = runs.second_ctx.resource_changes()
        held |= set(acquired)
        held -= set(released)
        if isinstance(first, fsm.Done | fsm.Failed):
            states.append(type(first).__name__)
            return states
        assert isinstance(first, fsm.Next), f"step {seq} from {action.state}: {first!r}"
        action = first.state
        states.append(action.state)
    raise AssertionError(f"no end after {max_steps} steps: {states}")


def run_child(
    folder: Path, kind: str, phase: str, env: dict[str, str], crash: str = ""
) -> subprocess.CompletedProcess[bytes]:
    """Run tests/send_child.py (see there) and wait for it."""
    return subprocess.run(
        [sys.executable, str(Path(__file__).parent / "send_child.py"), str(folder), kind, phase],
        env={**env, "FSM_DEF_CRASH": crash},
        capture_output=True,
        timeout=120,
        check=False,
    )

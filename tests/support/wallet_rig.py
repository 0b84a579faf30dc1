"""The one sim-world rig of the wallet kinds' tests (and of their SIGKILL child).

`Rig` wires a simulated world to an fsm SQLite store and an executor of all five kinds,
whose clock is the world's clock and whose sleep advances it, so retries and polls take no
real time. `DoubleStepper` is bark's re-entrancy checker (BARK_DOUBLE_DRIVE_ACTIONS,
reference 1.9) without the executor: it runs every step twice from the same state with the
same idempotency key (`fsm.testing.steps.run_twice`) and checks that both runs agree and the
second applied no effect of its own. `run_child` runs ``wallet_child.py`` the one way
tests/support/processes.py runs children.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from processes import died
from processes import run_child as run_support_child

import fsm
from fsm.store import LogEntry, StoreHooks
from fsm.testing.steps import run_twice, step_context
from fsm_bark.arkoor_send import ArkoorSendKind
from fsm_bark.board import BoardKind
from fsm_bark.exit import ExitKind
from fsm_bark.lightning_receive import LightningReceiveKind
from fsm_bark.lightning_send import LightningSendKind
from fsm_bark.model import ArkAddress, digest
from fsm_bark.offboard import OffboardKind
from fsm_bark.refresh import RefreshKind
from fsm_bark.services import Services, WalletConfig
from fsm_bark.sim import Faults, World, check_wallet_invariants, make_world
from fsm_bark.sim.wallet_store import SqliteWalletStore
from fsm_bark.sim.world import WALLET_NAME
from fsm_bark.started import Started

KINDS = [
    BoardKind,
    OffboardKind,
    ArkoorSendKind,
    LightningSendKind,
    LightningReceiveKind,
    ExitKind,
    RefreshKind,
]


class Rig:
    """A world in ``folder/world``, an fsm store in ``folder/fsm.sqlite``, an executor.

    Another wallet on the same world: ``Rig(folder, world=rig.world, name="bob")`` has its
    own wallet store, fsm store (``folder/fsm-bob.sqlite``) and executor, and leaves the
    world open when closed (its owner closes it)."""

    def __init__(
        self,
        folder: Path,
        *,
        seed: int = 1,
        faults: Faults | None = None,
        config: WalletConfig | None = None,
        hooks: StoreHooks | None = None,
        kinds: Sequence[type[Any]] = KINDS,
        world: World | None = None,
        name: str = WALLET_NAME,
    ) -> None:
        self.owns_world = world is None
        self.world: World = make_world(folder / "world", seed, faults) if world is None else world
        fsm_file = "fsm.sqlite" if name == WALLET_NAME else f"fsm-{name}.sqlite"
        self.store = fsm.Store.sqlite(folder / fsm_file, hooks=hooks)
        self.services: Services = self.world.services(self.store, config, name)
        self.executor: fsm.Executor[Services] = fsm.Executor(
            self.store,
            self.services,
            kinds=list(kinds),
            clock=self.world.clock.now,
            sleep=self._sleep,
            on_commit=self._on_commit,
        )
        self.after_commit: Callable[[LogEntry], None] | None = None
        """Called after every committed step (a test raises here to stop a drive)."""

    async def _sleep(self, seconds: float) -> None:
        self.world.advance_time(seconds)

    def _on_commit(self, action_id: str, entry: LogEntry) -> None:
        if self.after_commit is not None:
            self.after_commit(entry)

    @property
    def wallet(self) -> SqliteWalletStore:
        store = self.services.wallet
        assert isinstance(store, SqliteWalletStore)
        return store

    async def start(self, started: Started[Any]) -> str:
        """Start a starter's action with its resources; it must be new."""
        assert await self.executor.start(started.action, resources=started.resources)
        return started.action.id

    async def drive(
        self, action_id: str, mode: fsm.DriveMode = fsm.DriveMode.UNTIL_PARK_OR_DONE
    ) -> fsm.DriveResult:
        return await self.executor.drive(action_id, mode)

    def row(self, action_id: str) -> Any:
        return self.store.row(action_id)

    def data(self, action_id: str) -> Any:
        """The live action's data as last committed."""
        row = self.store.row(action_id)
        assert row is not None, f"no live action {action_id}"
        codec = self.executor.registry.get(row.kind)
        return codec.load(row.state, row.version, self.store.payload_of(action_id)).data

    def held(self) -> dict[str, str]:
        return dict(self.store.all_resources())

    def problems(self) -> list[str]:
        """The world's invariants over this wallet and store."""
        return check_wallet_invariants(self.world, self.wallet, self.store)

    def ledger(self) -> list[tuple[str, int]]:
        """(effect id, times applied) of every ledger entry, in order."""
        return [(e.effect_id, e.applied) for e in self.world.ledger.entries()]

    def applied(self) -> dict[str, int]:
        """effect id -> how many times it was applied, over the whole ledger."""
        return _counts(self.ledger())

    def applied_by(self, rpc: str) -> int:
        """How many times the effects of server call ``rpc`` were applied."""
        return sum(e.applied for e in self.world.ledger.entries() if e.rpc == rpc)

    def close(self) -> None:
        self.store.close()
        self.wallet.close()
        if self.owns_world:
            self.world.close()

    def __enter__(self) -> Rig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def payee(name: str = "payee", mailboxes: int = 1) -> ArkAddress:
    return ArkAddress(digest("payee", name), [f"mbx-{name}-{n}" for n in range(mailboxes)])


class DoubleStepper:
    """Drives one action through the interpreter alone, every step twice from the same state
    with the same idempotency key; the resources it holds are a set (no executor)."""

    def __init__(self, rig: Rig, action: fsm.Action[Services], resources: Iterable[str] = ()):
        self.rig = rig
        self.action = action
        self.held = set(resources)
        self.seq = 0
        self.states: list[str] = [self.action.state]

    def context(self) -> fsm.StepContext[Services]:
        held = set(self.held)
        now = self.rig.world.clock.now()
        return step_context(self.rig.services, self.action.id, seq=self.seq, now=now, held=held)

    async def step(self) -> fsm.Outcome:
        """One step, twice; checks the runs agree and the second applied nothing new."""
        before = _effects(self.rig)
        snapshots: list[list[tuple[str, str, int]]] = []
        runs = await run_twice(
            self.action, self.context, lambda: snapshots.append(_effects(self.rig))
        )
        first, second, where = runs.first, runs.second, f"step {self.seq} from {self.action.state}"
        assert _same(first, second), f"{where}: {first!r} then {second!r}"
        assert _effects(self.rig) == snapshots[0], f"{where}: the second run applied effects"
        kept = zip(snapshots[0], before, strict=False)
        assert len(snapshots[0]) >= len(before), f"{where}: the first run lost ledger entries"
        assert all(a[:2] == b[:2] and a[2] >= b[2] for a, b in kept), f"{where}: effects undone"
        changes = runs.second_ctx.resource_changes()
        assert runs.first_ctx.resource_changes() == changes, where
        acquired, released = changes
        self.held |= set(acquired)
        self.held -= set(released)
        if isinstance(second, fsm.Next | fsm.Park):
            if isinstance(second, fsm.Next) or second.state != self.action:
                self.seq += 1
                self.states.append(second.state.state)
            self.action = second.state
        return second

    async def until_park(self) -> fsm.Outcome:
        """Step until an outcome that is not `fsm.Next`."""
        while True:
            outcome = await self.step()
            if not isinstance(outcome, fsm.Next):
                return outcome

    async def until_end(self, max_steps: int = 20) -> list[str]:
        """Step to the end, never parking; the states passed, then ``Done`` or ``Failed``."""
        for _ in range(max_steps):
            outcome = await self.step()
            if isinstance(outcome, fsm.Done | fsm.Failed):
                return [*self.states, type(outcome).__name__]
            assert isinstance(outcome, fsm.Next), f"parked: {outcome!r} after {self.states}"
        raise AssertionError(f"no end after {max_steps} steps: {self.states}")


def _effects(rig: Rig) -> list[tuple[str, str, int]]:
    """(idempotency key, effect id, times applied) of every ledger entry, in order."""
    return [(e.key, e.effect_id, e.applied) for e in rig.world.ledger.entries()]


def _counts(ledger: list[tuple[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for effect_id, applied in ledger:
        out[effect_id] = out.get(effect_id, 0) + applied
    return out


def _same(first: fsm.Outcome, second: fsm.Outcome) -> bool:
    """Both runs of a step gave the same outcome (errors compared by type and text)."""
    if type(first) is not type(second):
        return False
    if isinstance(first, fsm.Park) and isinstance(second, fsm.Park):
        return first.state == second.state
    if isinstance(first, fsm.Failed) and isinstance(second, fsm.Failed):
        return (type(first.error), str(first.error), first.state) == (
            type(second.error),
            str(second.error),
            second.state,
        )
    return first == second


def run_child(
    folder: Path, *args: str, kill: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``wallet_child.py FOLDER ARGS...`` (see there) to its end or its planned death."""
    return run_support_child("wallet_child.py", folder, *args, kill=kill)


def kill_then_resume(
    folder: Path, *args: str, kill: str, while_dead: Callable[[Rig], None] | None = None
) -> None:
    """Run the child with ``args`` until its planned death (it must die by SIGKILL), look at
    what it left with ``while_dead``, then have a new child drive everything to its end."""
    killed = run_child(folder, *args, kill=kill)
    assert died(killed), f"the child was not killed: {killed.returncode}\n{killed.stderr}"
    if while_dead is not None:
        with Rig(folder) as rig:
            while_dead(rig)
    resumed = run_child(folder, "resume")
    assert resumed.returncode == 0, resumed.stderr

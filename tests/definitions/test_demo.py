"""``fsm demo``: a full run, SIGKILL at several points then a resuming run, bad arguments."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

import fsm
from fsm_bark.model import VtxoState
from fsm_bark.sim import check_world_invariants, make_world

FSM = shutil.which("fsm") or "fsm"


def demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    db = str(tmp_path / "demo.sqlite")
    return subprocess.run(
        [FSM, "demo", "--db", db, "--actions", "10", "--seed", "4", *args],
        cwd=tmp_path, capture_output=True, text=True, check=False, timeout=300,
    )  # fmt: skip


def assert_clean(tmp_path: Path) -> None:
    """Both wallets idle, the invariants hold across them, and the peer was paid."""
    store = fsm.Store.sqlite(tmp_path / "demo.sqlite")
    world = make_world(tmp_path / "demo.sqlite.world", seed=4)
    peer_store = fsm.Store.sqlite(tmp_path / "demo.sqlite.world" / "fsm-peer.sqlite")
    assert store.rows() == [] and peer_store.rows() == []
    peer = world.wallet_store(peer_store.holder_of, "peer")
    wallets = [(world.wallet_store(store.holder_of), store), (peer, peer_store)]
    assert check_world_invariants(world, wallets) == []
    kinds = {m.kind for m in peer.movements() if m.status.value == "successful"}
    assert kinds == {"arkoor_receive", "lightning_receive"}
    assert peer.vtxos(VtxoState.SPENDABLE)
    # the demo wallet's upkeep: the deep VTXO refreshed in a round, another one exited
    mine = {m.kind for m in world.wallet_store().movements() if m.status.value == "successful"}
    assert {"refresh", "exit"} <= mine
    assert world.db.one("SELECT COUNT(*) FROM srv_round_part WHERE state = 'done'") == (1,)
    left = world.wallet_store().vtxos(VtxoState.SPENDABLE)
    assert all(v.depth < world.server.info().max_arkoor_depth for v, _ in left)


def test_a_run_to_the_end_exits_0_with_the_summary(tmp_path: Path) -> None:
    proc = demo(tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KIND" in proc.stdout and "RESUMES" in proc.stdout
    assert "lightning_receive" in proc.stdout and "invariants: ok" in proc.stdout
    assert "peer wallet:" in proc.stdout
    assert "refresh: successful; exit: successful" in proc.stdout
    assert proc.stderr == ""
    assert_clean(tmp_path)
    again = demo(tmp_path)  # finished: nothing is started twice
    assert again.returncode == 0 and "0 in flight" in again.stdout


def test_one_seed_gives_one_run(tmp_path: Path) -> None:
    """Every id, amount and fault comes from the seed: two runs print the same summary."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second = demo(tmp_path / "a"), demo(tmp_path / "b")
    assert first.returncode == 0
    assert first.stdout.replace(str(tmp_path / "a"), "") == second.stdout.replace(
        str(tmp_path / "b"), ""
    )


@pytest.mark.parametrize("kill_after", [1, 30, 60])
def test_sigkill_then_the_next_run_resumes_and_finishes(tmp_path: Path, kill_after: int) -> None:
    killed = demo(tmp_path, "--kill-after", str(kill_after))
    assert killed.returncode == -9, killed.stdout + killed.stderr
    resumed = demo(tmp_path)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "invariants: ok" in resumed.stdout
    assert_clean(tmp_path)


@pytest.mark.parametrize(
    "args",
    [["--actions", "0"], ["--faults", "2"], ["--kill-after", "x"], ["--seed", "abc"]],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, args: list[str]) -> None:
    proc = demo(tmp_path, *args)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("fsm: error:")


def test_without_the_wallet_kinds_demo_says_how_to_install_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`fsm demo` comes from fsm-bark's entry point: with fsm alone it is a one-line hint."""
    import fsm.cli.app

    monkeypatch.setattr(fsm.cli.app, "all_commands", lambda: dict(fsm.cli.app.COMMANDS))
    assert fsm.cli.main(["demo", "--actions", "3"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        "fsm: error: 'demo' comes with the bark wallet kinds: pip install -e ./definitions "
        "(from fsm's repository)\n"
    )

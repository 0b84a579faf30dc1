"""Tests that need Graphviz or PostgreSQL skip, saying what to install; CI allows no skip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GRAPHVIZ = {"dot", "neato", "circo", "fdp", "sfdp", "twopi"}
CLOSED_PORT = "postgresql://postgres@127.0.0.1:1/test"
# One test of each kind: two that render with `dot`, one that runs on PostgreSQL.
TESTS = [
    "tests/kinds/test_diagram.py::test_png_signature_and_size",
    "tests/cli/test_cli_diagram.py::test_diagram_png",
    "tests/core/test_executor.py::test_park_persists_and_returns_its_error",
]


def path_without_graphviz(bin_dir: Path) -> str:
    """A PATH with every program of this one except Graphviz's (links in one folder)."""
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        entries = sorted(Path(folder).iterdir()) if Path(folder).is_dir() else []
        for program in entries:
            link = bin_dir / program.name
            if program.name not in GRAPHVIZ and not link.exists():
                link.symlink_to(program)
    return str(bin_dir)


def run_pytest(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    child = {k: v for k, v in os.environ.items() if k != "FSM_REQUIRE_ALL"}
    child |= {"PATH": path_without_graphviz(tmp_path / "bin"), "FSM_TEST_POSTGRES": CLOSED_PORT}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *TESTS],
        cwd=ROOT, env=child | env, capture_output=True, text=True,
    )  # fmt: skip


def test_missing_dot_and_postgres_skip_with_what_to_install(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path)
    assert proc.returncode == 0, proc.stdout
    skipped = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    dot = [line for line in skipped if "needs Graphviz's `dot` on PATH" in line]
    pg = [line for line in skipped if "needs PostgreSQL at 127.0.0.1:1, database 'test'" in line]
    assert len(skipped) == 2 and len(dot) == 1 and len(pg) == 1, proc.stdout
    assert "SKIPPED [2] " in dot[0] and "apt-get install graphviz" in dot[0]
    assert "SKIPPED [1] " in pg[0] and "apt-get install postgresql" in pg[0]
    assert "FSM_TEST_POSTGRES" in pg[0]
    assert "1 passed, 3 skipped" in proc.stdout  # the test's SQLite half still runs


def test_ci_turns_every_skip_into_a_failure(tmp_path: Path) -> None:
    proc = run_pytest(tmp_path, FSM_REQUIRE_ALL="1")
    assert proc.returncode == 1, proc.stdout
    assert "1 passed, 3 errors" in proc.stdout
    assert proc.stdout.count("FSM_REQUIRE_ALL=1 allows no skip: needs ") == 3

"""Shared fixtures: a real SQLite file per test."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

import fsm

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "actions.sqlite"


@pytest.fixture
def store(db_path: Path) -> fsm.Store:
    s = fsm.Store.sqlite(db_path)
    yield s
    s.close()


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child processes that import the test kinds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env

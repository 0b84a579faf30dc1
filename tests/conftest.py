"""Shared fixtures: a real SQLite file, or a real PostgreSQL schema, per test."""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import fsm

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

PG_URL = os.environ.get("FSM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use (running on the machine and in CI)."""


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "actions.sqlite"


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh schema of its own on the test PostgreSQL server, dropped afterwards."""
    import psycopg

    schema = "fsm_t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{PG_URL}?options=-c%20search_path%3D{schema}"
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, db_path: Path) -> str:
    """The core suite runs against both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{db_path}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def open_store(store_url: str) -> Iterator[Callable[[], fsm.Store]]:
    """Opens stores on this test's database; closes them all at the end."""
    opened: list[fsm.Store] = []

    def make() -> fsm.Store:
        s = fsm.open_store(store_url)
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(open_store: Callable[[], fsm.Store]) -> fsm.Store:
    return open_store()


@pytest.fixture
def child_env() -> dict[str, str]:
    """Environment for child processes that import the test kinds."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env

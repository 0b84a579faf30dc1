"""Shared fixtures: a real SQLite file, or a real PostgreSQL schema, per test.

Tests that need something outside Python are marked: ``needs_dot`` (Graphviz's ``dot``) by
hand, ``needs_postgres`` here, for every test using the PostgreSQL fixtures. Without the
program or the server they skip with a reason that says what to install. With
``FSM_REQUIRE_ALL=1`` (set by CI) any skip is turned into a failure instead, so nothing is
skipped silently where everything is meant to be installed. Tests that take seconds each
(processes killed, soaks, worker processes, outages) are marked ``slow`` by hand:
``-m "not slow"`` is the quick loop.

The rigs, test kinds and child scripts are in ``tests/support``, on ``sys.path`` through
pytest's ``pythonpath`` setting (pyproject.toml); nothing imports this module.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from needs import NEEDS, PG_URL, REQUIRE_ALL_ENV

import fsm


def _uses_postgres(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    params = callspec.params if callspec is not None else {}
    return "pg_url" in getattr(item, "fixturenames", ()) or params.get("store_url") == "postgres"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_postgres(item):
            item.add_marker(pytest.mark.needs_postgres)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for marker, missing in NEEDS.items():
        reason = missing() if item.get_closest_marker(marker) else None
        if reason is not None:
            pytest.skip(reason)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _no_skip_if_required(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _no_skip_if_required(report)
    return report


def _no_skip_if_required(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under FSM_REQUIRE_ALL=1, a skip (not an expected failure) becomes a failure."""
    if (
        report.skipped
        and os.environ.get(REQUIRE_ALL_ENV) == "1"
        and not hasattr(report, "wasxfail")
    ):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        report.outcome = "failed"
        report.longrepr = f"skipped, but {REQUIRE_ALL_ENV}=1 allows no skip: {reason}"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "actions.sqlite"


def _fresh_schema() -> Iterator[str]:
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


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A URL to a fresh schema of its own on the test PostgreSQL server, dropped afterwards."""
    yield from _fresh_schema()


@pytest.fixture
def other_pg_url() -> Iterator[str]:
    """A second fresh schema in the same database (with ``pg_url``): two teams, one server."""
    yield from _fresh_schema()


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

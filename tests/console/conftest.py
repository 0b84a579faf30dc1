"""Fixtures of the console's tests: a database of bookings, the console over it in this
process (Starlette's test client, for plain HTTP) or as a real ``fsm console`` process (for
the browser), and a headless Chromium driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from console_rig import Operator, Served, announced, console_client, fill, spawn_console, stop
from needs import chromium
from processes import REPO
from starlette.testclient import TestClient


@pytest.fixture
def bookings(store_url: str) -> str:
    """The URL of a database `console_rig.fill` filled, on SQLite or PostgreSQL."""
    fill(store_url)
    return store_url


@pytest.fixture
def sqlite_bookings(db_path: Path) -> str:
    url = f"sqlite:///{db_path}"
    fill(url)
    return url


@pytest.fixture
def reader(bookings: str) -> Iterator[TestClient]:
    client, backend, _ = console_client(bookings, allow_control=False)
    with client:
        yield client
    backend.close()


@pytest.fixture
def operator(bookings: str) -> Iterator[Operator]:
    client, backend, settings = console_client(bookings, allow_control=True)
    with client:
        yield Operator(client, settings, bookings)
    backend.close()


@pytest.fixture
def served(sqlite_bookings: str) -> Iterator[Served]:
    """``fsm console --allow-control --poll 0.2 --port 0`` over the bookings."""
    proc = spawn_console(sqlite_bookings, "--port", "0", "--allow-control", "--poll", "0.2")
    try:
        url, token = announced(proc)
        yield Served(url, token, proc, sqlite_bookings)
    finally:
        assert stop(proc) == 0


# -- the browser ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Chromium of the system (never a downloaded one), driven by Playwright.

    Module-scoped: Playwright's sync API runs an event loop in this thread while it is
    open, and every later test calling ``asyncio.run`` would fail ("cannot be called from a
    running event loop"); it is closed when the browser tests' module ends."""
    from playwright.sync_api import sync_playwright

    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # root in CI's container
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=chromium(), args=args)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    opened = context.new_page()
    yield opened
    context.close()


SCREENSHOTS = REPO / "docs" / "console"


@pytest.fixture
def screenshot() -> Callable[[Any, str], None]:
    """Save a page's screenshot into docs/console/NAME.png (docs/console.md shows them)."""

    def take(page: Any, name: str) -> None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)

    return take

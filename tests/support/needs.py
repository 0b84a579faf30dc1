"""What some tests need outside Python, and why it is missing here.

``needs_dot`` tests need Graphviz's ``dot``; ``needs_postgres`` tests need the PostgreSQL
server at `PG_URL`; ``needs_browser`` tests (the console's) need Debian's Chromium and
Playwright's Python package (never ``playwright install``: the system's browser is used).
`tests/conftest.py` skips them with the reason given here (what to install), or fails
them under ``FSM_REQUIRE_ALL=1`` (`REQUIRE_ALL_ENV`). Tests and support modules import
`PG_URL` from here, never from a ``conftest``: pytest keeps one module named ``conftest``
at a time, so another folder's conftest would shadow it.
"""

from __future__ import annotations

import functools
import os
import shutil
from collections.abc import Callable
from urllib.parse import urlsplit

PG_URL = os.environ.get("FSM_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL server the tests use (running on the machine and in CI)."""

REQUIRE_ALL_ENV = "FSM_REQUIRE_ALL"
"""Set to 1 (by CI), it turns every skip into a failure."""


def dot_missing() -> str | None:
    if shutil.which("dot") is not None:
        return None
    return "needs Graphviz's `dot` on PATH: apt-get install graphviz (or brew install graphviz)"


@functools.cache
def postgres_missing() -> str | None:
    """Why the test server cannot be used (asked once per session), or None."""
    try:
        import psycopg
    except ImportError:
        return "needs psycopg to reach PostgreSQL: pip install -e '.[test]'"
    try:
        psycopg.connect(PG_URL, connect_timeout=5).close()
    except psycopg.Error as exc:
        where = urlsplit(PG_URL)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        return (
            f"needs PostgreSQL at {where.hostname}:{where.port or 5432}, database "
            f"{where.path.lstrip('/')!r}, trust auth (set FSM_TEST_POSTGRES for another "
            f"server): apt-get install postgresql; {first}"
        )
    return None


def chromium() -> str | None:
    """The system's Chromium (Debian's package names it ``chromium``), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def browser_missing() -> str | None:
    missing = []
    if chromium() is None:
        missing.append("Chromium: apt-get install chromium")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("Playwright: pip install -e '.[test]'")
    if not missing:
        return None
    return "needs a browser for the console's tests: " + "; ".join(missing)


NEEDS: dict[str, Callable[[], str | None]] = {
    "needs_dot": dot_missing,
    "needs_browser": browser_missing,
    "needs_postgres": postgres_missing,
}
"""Marker -> why the test cannot run here (None: it can)."""

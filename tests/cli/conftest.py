"""Fixtures of the CLI tests: module files of kinds, and databases of them.

Every test here forgets, afterwards, the module files it imported from its temporary
folders (`forget_user_modules`), as a new process of ``fsm`` would.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import KINDS_SOURCE, NEEDS_SHOP

import fsm
from fsm.discover import load_module


@pytest.fixture(autouse=True)
def forget_user_modules(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """In-process runs import the tests' module files: forget them (and the folders added to
    ``sys.path`` for them) after each test, as a new process would."""
    path = list(sys.path)
    before = set(sys.modules)
    yield
    sys.path[:] = path
    base = str(tmp_path_factory.getbasetemp())
    for name in set(sys.modules) - before:
        if str(getattr(sys.modules[name], "__file__", None) or "").startswith(base):
            del sys.modules[name]


@pytest.fixture
def kinds_file(tmp_path: Path) -> Path:
    path = tmp_path / "helpdesk.py"
    path.write_text(KINDS_SOURCE)
    return path


@pytest.fixture
def ticket_db(tmp_path: Path, kinds_file: Path) -> Path:
    """Four tickets: two waiting, one just opened, one quarantined; plus a HandKind row."""
    ticket_kind = load_module(str(kinds_file)).TicketKind
    db = tmp_path / "tickets.sqlite"
    store = fsm.Store.sqlite(db)
    with fsm.SyncExecutor(store, kinds=[ticket_kind]) as ex:
        data = ticket_kind.__fsm_definition__.data_type
        for i in range(4):
            ex.start(ticket_kind.create(data(str(i))))
        ex.drive("ticket-1")  # opened -> waiting, parks
        ex.drive("ticket-2")
        ex.drive("ticket-3")
    store.quarantine("ticket-3", "payload does not structure")
    store.close()
    return db


@pytest.fixture
def sale_db(tmp_path: Path) -> Path:
    (tmp_path / "sales.py").write_text(NEEDS_SHOP)
    db = tmp_path / "sales.sqlite"
    fsm.open_store(str(db)).close()
    return db

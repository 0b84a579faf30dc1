"""``fsm actions retry|notify|cancel|stop|unquarantine ID``: one line, and exit codes scripts
can rely on (0 done, 1 could not act, 2 bad arguments)."""

from __future__ import annotations

import asyncio
import getpass
import json
import time
from pathlib import Path
from typing import Any

import pytest
from cli_support import REPO, assert_one_line_error, run_fsm
from control_kinds import Booking, BookingKind, Desk

import fsm
from fsm.store import Claimed, new_owner

KINDS = str(REPO / "tests" / "support" / "control_kinds.py")


def held(url: str, *refs: str) -> None:
    """Bookings waiting in ``held`` for a confirmation, in the database at ``url``."""
    store = fsm.open_store(url)
    ex: fsm.Executor[Any] = fsm.Executor(store, Desk(), kinds=[BookingKind])
    for ref in refs:
        assert asyncio.run(ex.drive(BookingKind.create(Booking(ref)))).state == "held"
    store.close()


def last_logged(url: str, action_id: str) -> fsm.store.LoggedStep:
    store = fsm.open_store(url, readonly=True)
    try:
        return store.transitions(action_id)[-1]
    finally:
        store.close()


@pytest.fixture
def db(tmp_path: Path) -> str:
    path = tmp_path / "bookings.sqlite"
    held(str(path), "1", "2", "3")
    return str(path)


def test_each_control_prints_one_line_and_logs_it(store_url: str) -> None:
    held(store_url, "1", "2", "3")
    url = store_url
    retried = run_fsm("actions", "retry", "booking-1", "--db", url, "--reset-attempts")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout == (
        f"booking-1: booking in held: due now (attempts 0); recorded: retried by "
        f"{getpass.getuser()}\n"
    )
    notified = run_fsm("actions", "notify", "booking-1", "--db", url, "--by", "crm")
    assert notified.stdout == "booking-1: booking in held: due now; recorded: notified by crm\n"
    cancelled = run_fsm(
        "actions", "cancel", "booking-2", "--db", url, "--reason", "customer asked",
        "--by", "alice", "--module", KINDS,
    )  # fmt: skip
    assert cancelled.returncode == 0, cancelled.stderr
    assert cancelled.stdout == (
        "booking-2: booking in held: cancelled -> releasing, due now (a worker runs the "
        "compensation); recorded: cancelled by alice: customer asked\n"
    )
    stopped = run_fsm("actions", "stop", "booking-3", "--db", url, "--reason", "a test")
    assert stopped.stdout.startswith("booking-3: booking in held: stopped: removed")
    assert [last_logged(url, f"booking-{n}").via for n in "123"] == ["notify", "cancel", "stop"]


def test_unquarantine_says_why_the_row_was_set_aside(db: str) -> None:
    store = fsm.open_store(db)
    store.quarantine("booking-1", "kind 'booking' v2: row is newer than the code")
    store.close()
    done = run_fsm("actions", "unquarantine", "booking-1", "--db", db, "--by", "ops")
    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "booking-1: booking in held: back in service, due now; recorded: released by ops "
        "(was quarantined: kind 'booking' v2: row is newer than the code)\n"
    )


def test_json_is_one_object_of_what_was_done(db: str) -> None:
    done = run_fsm(
        "actions", "--db", db, "cancel", "booking-1", "--reason", "x", "-m", KINDS, "--json"
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "id": "booking-1",
        "control": "cancel",
        "kind": "booking",
        "state": "held",
        "to_state": "releasing",
        "outcome": "cancelled",
        "note": f"cancelled by {getpass.getuser()}: x",
        "quarantine": None,
        "attempts": 0,
    }


def test_listing_without_a_subcommand_is_unchanged(db: str) -> None:
    listed = run_fsm("actions", "--db", db, "--json")
    assert listed.returncode == 0, listed.stderr
    assert sorted(a["id"] for a in json.loads(listed.stdout)) == [f"booking-{i}" for i in (1, 2, 3)]
    assert run_fsm("actions", "list", "--db", db, "--json").stdout == listed.stdout


# -- exit 1: could not act -----------------------------------------------------------------


def test_a_busy_action_is_refused_in_one_line(db: str) -> None:
    store = fsm.open_store(db)
    owner = new_owner()  # this process: alive, so its lease is never taken over
    claimed = store.claim("booking-1", owner, time.time())
    assert isinstance(claimed, Claimed)
    for control in ("retry", "stop", "unquarantine"):
        refused = run_fsm("actions", control, "booking-1", "--db", db)
        assert_one_line_error(refused, 1, f"action booking-1 is being driven by {owner}")
    queued = run_fsm("actions", "cancel", "booking-1", "--db", db, "--reason", "x", "-m", KINDS)
    assert queued.returncode == 0, queued.stderr
    assert queued.stdout.startswith("booking-1: booking in held: being driven: cancel queued")
    assert [e.name for e in store.pending_events("booking-1")] == ["fsm.Cancel"]
    store.unclaim("booking-1", claimed.epoch)
    store.close()


def test_what_cannot_be_done_exits_1_in_one_line(db: str) -> None:
    assert_one_line_error(
        run_fsm("actions", "stop", "booking-9", "--db", db), 1, "no live action 'booking-9'"
    )
    assert_one_line_error(
        run_fsm("actions", "unquarantine", "booking-1", "--db", db), 1, "is not quarantined"
    )
    assert_one_line_error(
        run_fsm("actions", "cancel", "booking-1", "--db", db, "--reason", "x"),
        1,
        "kind 'booking', which is not loaded here",
    )
    assert (
        run_fsm(
            "actions", "cancel", "booking-1", "--db", db, "--reason", "x", "-m", KINDS
        ).returncode
        == 0
    )
    again = run_fsm("actions", "cancel", "booking-1", "--db", db, "--reason", "y", "-m", KINDS)
    assert_one_line_error(again, 1, "state 'releasing': no cancel route")
    missing = run_fsm("actions", "retry", "x", "--db", str(Path(db).with_name("none.sqlite")))
    assert_one_line_error(missing, 1, "no database at")


# -- exit 2: bad arguments -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("cancel", "booking-1"), "required: --reason"),
        (("cancel", "booking-1", "--reason", " "), "must not be blank"),
        (("stop", "booking-1", "--wait", "nan"), "finite seconds"),
        (("retry", "booking-1", "--wait", "-1"), "finite seconds"),
        (("notify", "booking-1", "--wait", "5"), "unrecognized arguments"),
        (("retry",), "required: ID"),
    ],
)
def test_bad_arguments_exit_2_in_one_line(db: str, args: tuple[str, ...], message: str) -> None:
    assert_one_line_error(run_fsm("actions", *args, "--db", db), 2, message)


def test_a_control_without_a_database_exits_2() -> None:
    assert_one_line_error(run_fsm("actions", "retry", "booking-1"), 2, "required: --db")

"""What the console tests share: a database of bookings, the console in this process or as a
process of its own, and a way to move an action.

`fill` starts seven bookings (`control_kinds.BookingKind`) and leaves them as the pages
expect them:

* ``booking-r0``, ``booking-r1``: held (a wait state: waiting for a notify);
* ``booking-r2``: broken in reserving (the desk raised a ``TypeError``: "bad seat map");
* ``booking-r3``: quarantined in reserving ("payload does not structure");
* ``booking-r4``, ``booking-r6``: reserving, due (never driven);
* ``booking-r5``: confirmed (done: an ended incarnation, kept with its history).

`drive` drives one action on its own thread and event loop (the browser tests' Playwright
runs a loop of its own on the test's thread), as a worker would.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
from control_kinds import Booking, BookingKind, Desk
from processes import REPO, child_env

import fsm

if TYPE_CHECKING:
    from starlette.testclient import TestClient

    from fsm.console import Backend, Settings

ORIGIN = "http://127.0.0.1:8080"
"""Where the in-process console believes it is served (its Host header and origin)."""

KINDS_FILE = Path(__file__).resolve().parent / "control_kinds.py"

LIVE_STATES = {"held": 2, "reserving": 4}


def fill(url: str) -> None:
    """Fill the database at ``url`` (on a thread of its own: see `drive`)."""
    on_thread(lambda: _fill(url))


def _fill(url: str) -> None:
    store = fsm.open_store(url)
    desk = Desk()
    try:
        with fsm.SyncExecutor(store, desk, kinds=[BookingKind]) as ex:
            for i in range(7):
                ex.start(BookingKind.create(Booking(f"r{i}")))
            for ref in ("r0", "r1", "r5"):
                ex.drive(f"booking-{ref}")
            desk.confirmed = True
            ex.notify("booking-r5")
            ex.drive("booking-r5")
            desk.fault = TypeError("bad seat map")
            ex.drive("booking-r2")
        store.quarantine("booking-r3", "payload does not structure")
    finally:
        store.close()


def on_thread(fn: Callable[[], None]) -> None:
    """Run ``fn`` on a thread of its own and wait for it (re-raising what it raised)."""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            failed.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if failed:
        raise failed[0]


def drive(url: str, action_id: str) -> None:
    """Drive ``action_id`` once (a worker's claim and steps, until it parks or ends)."""

    def go() -> None:
        store = fsm.open_store(url)
        try:
            with fsm.SyncExecutor(store, Desk(), kinds=[BookingKind]) as ex:
                ex.drive(action_id)
        finally:
            store.close()

    on_thread(go)


# -- the console in this process (Starlette's test client) ---------------------------------


def console_client(url: str, *, allow_control: bool) -> tuple[TestClient, Backend, Settings]:
    """The console over ``url``, opened as ``fsm console`` opens it (read-only unless
    controls are allowed), with the booking kinds loaded."""
    from starlette.testclient import TestClient

    from fsm.console import Backend, Settings, create_app

    settings = Settings(port=8080, allow_control=allow_control)
    store = fsm.open_store(url, readonly=not allow_control)
    backend = Backend(store, [BookingKind], controls=allow_control)
    client = TestClient(create_app(backend, settings), base_url=ORIGIN)
    return client, backend, settings


@attrs.frozen
class Operator:
    client: TestClient
    settings: Settings
    url: str

    @property
    def token(self) -> str:
        return self.settings.token

    def login(self) -> None:
        got = self.client.post(
            "/login", data={"token": self.token, "next": "/kinds"}, headers={"Origin": ORIGIN},
            follow_redirects=False,
        )  # fmt: skip
        assert got.status_code == 303, got.text


# -- a real `fsm console` process -------------------------------------------------------


@attrs.frozen
class Served:
    """A running ``fsm console``: where it listens, its token, its process."""

    url: str
    token: str | None
    proc: subprocess.Popen[str]
    db: str


def spawn_console(db: str, *args: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "fsm.cli", "console", "--db", db, "--module", str(KINDS_FILE)]
    return subprocess.Popen(
        [*argv, *args], cwd=REPO, env=child_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def announced(proc: subprocess.Popen[str]) -> tuple[str, str | None]:
    """The URL (and token, with controls) ``fsm console`` printed when it started."""
    assert proc.stdout is not None
    first = proc.stdout.readline()
    found = re.match(r"fsm console: (http://\S+)/ \((read-only|controls on)", first)
    assert found, (first, proc.stderr.read() if proc.poll() is not None and proc.stderr else "")
    token = None
    if found[2] == "controls on":
        token = proc.stdout.readline().split("token ", 1)[1].strip()
    return found[1], token


def stop(proc: subprocess.Popen[str]) -> int:
    """SIGTERM, as a service manager stops it; the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=60)
    finally:
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()

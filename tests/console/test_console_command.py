"""``fsm console`` as a command: its arguments (exit 2, one line), what it cannot do (exit 1),
where it listens (loopback unless told), what it refuses without ``--allow-control``, and
that ``import fsm`` never imports the console's stack."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from cli_support import assert_one_line_error, run_fsm
from console_rig import KINDS_FILE, announced, spawn_console, stop
from processes import REPO, child_env


def listening_address(port: int) -> str:
    """The local address of the socket listening on ``port``, read from /proc/net/tcp."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if int(hex_port, 16) == port and state == "0A":  # LISTEN
                return address
    raise AssertionError(f"nothing listens on port {port}")


@pytest.mark.parametrize(
    ("args", "text"),
    [
        (["--port", "70000"], "a port is 0..65535"),
        (["--port", "web"], "not a port number"),
        (["--poll", "0"], "must be a finite number > 0"),
        (["--late", "nan"], "must be a finite number > 0"),
        (["--host", " "], "--host: not an address"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    sqlite_bookings: str, args: list[str], text: str
) -> None:
    got = run_fsm("console", "--db", sqlite_bookings, "--module", KINDS_FILE, *args)
    assert_one_line_error(got, 2, text)


def test_no_db_is_a_usage_error_and_a_missing_file_a_runtime_one(tmp_path: Path) -> None:
    assert_one_line_error(run_fsm("console"), 2, "--db")
    got = run_fsm("console", "--db", str(tmp_path / "typo.sqlite"))
    assert_one_line_error(got, 1, "no database at")
    assert not (tmp_path / "typo.sqlite").exists()


def test_a_taken_port_exits_1_with_one_line(sqlite_bookings: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        got = run_fsm("console", "--db", sqlite_bookings, "--port", str(port))
    assert_one_line_error(got, 1, f"cannot listen on 127.0.0.1:{port}")


def test_it_binds_loopback_by_default_and_refuses_to_write_without_allow_control(
    sqlite_bookings: str,
) -> None:
    proc = spawn_console(sqlite_bookings, "--port", "0")
    try:
        url, token = announced(proc)
        assert token is None and url.startswith("http://127.0.0.1:")
        port = int(url.rsplit(":", 1)[1])
        assert listening_address(port) == "0100007F"  # 127.0.0.1, this machine only
        with urllib.request.urlopen(url + "/kinds") as page:
            assert page.status == 200 and b"read-only" in page.read()
        request = urllib.request.Request(
            url + "/actions/booking-r2/retry", data=b"token=x", method="POST",
            headers={"X-FSM-Token": "x", "Origin": url},
        )  # fmt: skip
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request)
        assert refused.value.code == 403
        assert b"controls are off" in refused.value.read()
    finally:
        assert stop(proc) == 0


def test_another_host_is_served_with_a_warning(sqlite_bookings: str) -> None:
    proc = spawn_console(sqlite_bookings, "--port", "0", "--host", "0.0.0.0", "--allow-control")
    try:
        url, token = announced(proc)
        assert url.startswith("http://0.0.0.0:") and token
        port = int(url.rsplit(":", 1)[1])
        assert listening_address(port) == "00000000"
    finally:
        proc.terminate()  # SIGTERM
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    warning = [line for line in err.splitlines() if line.startswith("fsm: warning: ")]
    assert len(warning) == 1
    assert "serving on 0.0.0.0, not only this machine" in warning[0]
    assert "with the token, can act on them" in warning[0]


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=child_env(), capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_import_fsm_does_not_import_the_console_stack() -> None:
    code = (
        "import sys, fsm, fsm.cli, fsm.cli.console\n"
        "stack = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('starlette', 'uvicorn', 'jinja2', 'fsm') and m.split('.')[:2] != ['fsm', 'cli']"
        " and (m.startswith(('starlette', 'uvicorn', 'jinja2')) or m.startswith('fsm.console')))\n"
        "print(stack)"
    )
    got = _python(code)
    assert got.returncode == 0, got.stderr
    assert got.stdout.strip() == "[]"


def test_without_the_extra_it_says_what_to_install(sqlite_bookings: str) -> None:
    code = (
        "import sys\n"
        "sys.modules['starlette'] = None  # as if fsm[console] were not installed\n"
        "from fsm.cli import main\n"
        f"sys.exit(main(['console', '--db', {sqlite_bookings!r}]))"
    )
    got = _python(code)
    assert_one_line_error(got, 1, "fsm console needs the console extra: pip install 'fsm[console]'")


def test_without_chromium_the_browser_tests_say_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from needs import NEEDS

    monkeypatch.setenv("PATH", str(tmp_path))  # no program at all
    reason = NEEDS["needs_browser"]()
    assert reason == "needs a browser for the console's tests: Chromium: apt-get install chromium"

"""The one way the tests run a child process, and the one way a child dies on purpose.

A test runs a script of ``tests/support`` with `run_child` (or `spawn_child` to keep it
running) and says when it must die with ``kill=``:

* `after_commits(n)`: right after the child's n-th committed step write (the store's hooks,
  `fsm.testing.kill_after_commits`): the checkpoint is written, the next step not begun;
* `after_call(name, n)`: right after the n-th call of the outside service's method ``name``
  returned, before the step that made it commits: the effect is applied, its checkpoint not.

The instruction travels in one environment variable, ``FSM_TEST_KILL`` (``commits:N`` or
``call:NAME:N``). A child script reads it with `kill_hooks()` (give them to its store) and
`dying(services)` (wrap the service whose calls may be the moment); both do nothing when the
variable is not set. `died` tells a test the child was SIGKILLed, not that it failed.

The library's own environment switches (``FSM_CRASH`` crash points, ``FSM_DB_FAULTS``) go
in ``env=``; `kill_hooks` keeps them armed beside the kill.
"""

from __future__ import annotations

import inspect
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fsm.store import StoreHooks
from fsm.store.hooks import environment_hooks
from fsm.testing import kill_after_commits

SUPPORT = Path(__file__).resolve().parent
REPO = SUPPORT.parents[1]
KILL_ENV = "FSM_TEST_KILL"


def after_commits(n: int) -> str:
    """``kill=`` for a child that dies right after its n-th committed step."""
    return f"commits:{n}"


def after_call(name: str, n: int = 1) -> str:
    """``kill=`` for a child that dies right after the n-th call of ``name`` returned."""
    return f"call:{name}:{n}"


def child_env(extra: dict[str, str] | None = None, kill: str | None = None) -> dict[str, str]:
    """This process's environment, with ``tests/support`` importable and ``kill`` armed."""
    env = {k: v for k, v in os.environ.items() if k != KILL_ENV}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SUPPORT), env.get("PYTHONPATH")) if p)
    if kill:
        env[KILL_ENV] = kill
    return {**env, **(extra or {})}


def _argv(
    script: str, args: Sequence[str | os.PathLike[str]], prefix: Sequence[str] = ()
) -> list[str]:
    return [*prefix, sys.executable, str(SUPPORT / script), *map(str, args)]


def run_child(
    script: str,
    *args: str | os.PathLike[str],
    kill: str | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``tests/support/<script>`` to its end (or its planned death) and return it."""
    return subprocess.run(
        _argv(script, args),
        env=child_env(env, kill),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def spawn_child(
    script: str,
    *args: str | os.PathLike[str],
    kill: str | None = None,
    env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
    talk: bool = False,
) -> subprocess.Popen[str]:
    """Start ``tests/support/<script>`` and return at once (for concurrent drivers).

    ``prefix``: a command that runs the child (``unshare --pid ...``); ``talk``: the test
    writes to the child's stdin and reads its stdout (pipes; else they are this process's).
    """
    pipes = subprocess.PIPE if talk else None
    return subprocess.Popen(
        _argv(script, args, prefix),
        env=child_env(env, kill),
        cwd=REPO,
        stdin=pipes,
        stdout=pipes,
        stderr=subprocess.PIPE,
        text=True,
    )


def dead_owner() -> str:
    """The lease owner token of a real process of this host and namespace that has exited."""
    code = "from fsm.store import new_owner; print(new_owner())"
    argv = [sys.executable, "-c", code]
    return subprocess.run(
        argv, env=child_env(), capture_output=True, text=True, check=True
    ).stdout.strip()


def died(proc: subprocess.CompletedProcess[str] | subprocess.Popen[str]) -> bool:
    """Whether the child ended by SIGKILL (its planned death), not by exiting."""
    return proc.returncode == -signal.SIGKILL


# ---- inside the child -----------------------------------------------------------------


def _kill_plan() -> tuple[str, str, int] | None:
    what, _, rest = os.environ.get(KILL_ENV, "").partition(":")
    if what == "commits":
        return what, "", int(rest)
    if what == "call":
        name, _, n = rest.partition(":")
        return what, name, int(n or 1)
    if what:
        raise SystemExit(f"{KILL_ENV}={os.environ[KILL_ENV]!r}: use commits:N or call:NAME:N")
    return None


def kill_hooks() -> StoreHooks:
    """The store hooks of this child: a SIGKILL after the n-th commit, if that is the plan,
    and whatever the environment arms (as a store given no hooks would have)."""
    plan = _kill_plan()
    armed = environment_hooks()
    return kill_after_commits(plan[2]) | armed if plan and plan[0] == "commits" else armed


class _Dying:
    """``inner``, except that the process dies right after the planned call returned."""

    def __init__(self, inner: Any, name: str, n: int) -> None:
        self._inner, self._name, self._left = inner, name, n

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        if attr != self._name or not callable(value):
            return value
        return self._wrap(value)

    def _wrap(self, call: Any) -> Any:
        def counted() -> None:
            self._left -= 1
            if self._left == 0:
                os.kill(os.getpid(), signal.SIGKILL)

        if inspect.iscoroutinefunction(call):

            async def async_wrapped(*args: Any, **kwargs: Any) -> Any:
                result = await call(*args, **kwargs)
                counted()
                return result

            return async_wrapped

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            result = call(*args, **kwargs)
            counted()
            return result

        return wrapped


def dying(service: Any) -> Any:
    """``service``, dying after the planned call if the plan is a call; else ``service``."""
    plan = _kill_plan()
    if plan is None or plan[0] != "call":
        return service
    return _Dying(service, plan[1], plan[2])

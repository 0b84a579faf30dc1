"""Golden checkpoints: rows saved from real runs, kept to prove new code still reads them.

A golden file is one row of a kind as JSON, ``{"state": ..., "version": ..., "payload":
{...}}``, where ``payload`` is the checkpoint envelope (``{"data": ..., "parks": ...}``, see
`fsm.interpreter`). Keep one per state (and one per old version you still promise to read);
`check_golden` loads each through the kind's codec, so through its upcasters, and runs one
interpreter step from it against services you pass in. A renamed state, a removed field
without an upcaster or a callback that no longer accepts old data then fails in a unit test
instead of quarantining rows in production.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

import attrs
import orjson

from fsm.errors import DecodeError
from fsm.protocol import Action, Done, Failed, Next, Outcome, Park, StepContext
from fsm.retry import SEED_POLICY

log = logging.getLogger(__name__)


class GoldenMismatch(AssertionError):
    """Some golden checkpoints no longer load or step; the message lists each one."""


@attrs.frozen
class GoldenResult:
    """One golden file that loaded and stepped: where it was, and what the step returned."""

    path: Path
    state: str
    outcome: Outcome


def write_golden(
    kind: Any, action: Action[Any], folder: str | os.PathLike[str], name: str | None = None
) -> Path:
    """Save ``action`` (of declarative ``kind``) as ``folder/<name or state>.json``."""
    codec = kind.__fsm_codec__
    state, payload = codec.dump(action)
    body = {"state": state, "version": codec.version, "payload": orjson.loads(payload)}
    path = Path(folder) / f"{name or state}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n")
    return path


def check_golden(
    kind: Any, folder: str | os.PathLike[str], services: Any, *, now: float = 0.0
) -> list[GoldenResult]:
    """Load every ``*.json`` in ``folder`` as a row of ``kind`` and run one step from each.

    A step runs with a context over ``services`` that holds no resources and sees none held
    by others; async steps run on a private event loop, so call this from synchronous code
    (a plain test function). Raises `GoldenMismatch` naming every file that does not load,
    whose step raises, or that returns something other than an outcome; an empty folder is a
    mismatch too (a wrong path must not pass silently).
    """
    codec = kind.__fsm_codec__
    paths = sorted(Path(folder).glob("*.json"))
    results: list[GoldenResult] = []
    problems: list[str] = []
    if not paths:
        problems.append(f"{folder}: no golden *.json files")
    for path in paths:
        try:
            row = orjson.loads(path.read_bytes())
            action = codec.load(row["state"], row["version"], orjson.dumps(row["payload"]))
        except (DecodeError, KeyError, TypeError, orjson.JSONDecodeError) as exc:
            problems.append(f"{path.name}: does not load: {type(exc).__name__}: {exc}")
            continue
        try:
            outcome = _step(action, services, now)
        except Exception as exc:
            problems.append(
                f"{path.name}: step from {action.state!r} raised {type(exc).__name__}: {exc}"
            )
            continue
        results.append(GoldenResult(path, action.state, outcome))
    if problems:
        raise GoldenMismatch(
            f"golden checkpoints of kind {codec.name!r}:\n  " + "\n  ".join(problems)
        )
    return results


def _step(action: Action[Any], services: Any, now: float) -> Outcome:
    ctx: StepContext[Any] = StepContext(
        services,
        action.id,
        0,
        0,
        now,
        SEED_POLICY,
        logging.LoggerAdapter(log, {"action_id": action.id}),
        tuple,
        lambda _name: None,
    )
    result = action.advance(ctx)
    if inspect.isawaitable(result):
        result = asyncio.run(_awaited(result))
    if not isinstance(result, Next | Park | Done | Failed):
        raise TypeError(f"advance returned {result!r}, not an outcome")
    return result


async def _awaited(awaitable: Awaitable[Outcome]) -> Outcome:
    return await awaitable

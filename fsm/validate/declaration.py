"""Checks of what a kind declares besides its table: names, data type, version, ids, policies.

Each is a tiny function over a `Definition` that raises `fsm.DefinitionError` in the one
"kind, state: what. Fix: how" shape (`Definition.problem`).
"""

from __future__ import annotations

import inspect
from typing import Any

import attrs

from fsm.definition import Definition
from fsm.retry import RetryPolicy
from fsm.state import State, callable_name
from fsm.storable import storage_problems

RESERVED = frozenset(
    {"name", "version", "retry", "timeout", "blocking", "upcasters", "transitions"}
    | {"rejections", "events", "unaccepted"}
    | {"action_id"}
    | {"create", "goto", "graph"}
)
"""Class attributes a kind already uses: a state with one of these names would replace it."""


def check_reserved_names(d: Definition) -> None:
    for s in d.states:
        if s.name in RESERVED or s.name.startswith("_"):
            raise d.problem(
                s,
                "this name is taken by the kind itself (or private)",
                f"rename the state, e.g. `{s.name.strip('_')}_state`",
            )


def check_name(d: Definition) -> None:
    if not d.name:
        raise d.problem(None, "the kind has no name", "set `name = 'my_kind'` in the class body")


def check_data_type(d: Definition) -> None:
    if not (isinstance(d.data_type, type) and attrs.has(d.data_type)):
        raise d.problem(
            None,
            f"its data type is {d.data_type!r}, not an attrs class",
            f"declare it as `class {d.qualname}(Kind[MyData, MyServices])` with an attrs "
            "class MyData",
        )


def check_data_storable(d: Definition) -> None:
    for p in storage_problems(d.data_type):
        if not p.untyped:
            raise d.problem(None, p.describe(), p.fix)


def check_version(d: Definition) -> None:
    if not isinstance(d.version, int) or isinstance(d.version, bool) or d.version < 1:
        raise d.problem(None, f"version is {d.version!r}", "use an integer version >= 1")


def check_upcasters(d: Definition) -> None:
    keys = sorted(d.upcasters, key=repr)
    bad = [k for k in keys if not isinstance(k, int) or not 1 <= k < d.version]
    if bad:
        raise d.problem(
            None,
            f"upcasters {bad!r} do not upgrade an older version to v{d.version}",
            f"key each upcaster by the version it reads, from 1 to {d.version - 1}",
        )
    if keys and keys != list(range(keys[0], d.version)):
        missing = sorted(set(range(keys[0], d.version)) - set(keys))
        raise d.problem(
            None,
            f"upcasters have a gap: nothing turns v{missing[0]} into v{missing[0] + 1}",
            f"add upcasters[{missing[0]}] = fn(payload) -> payload",
        )
    for version, fn in d.upcasters.items():
        check_arity(d, None, f"upcasters[{version}]", fn, 1, "(payload: dict) -> dict")


def check_action_id(d: Definition) -> None:
    if d.action_id is None:
        raise d.problem(
            None,
            "it has no action id function",
            "add `@staticmethod def action_id(data: MyData) -> str` returning a stable id",
        )
    check_arity(d, None, "action_id", d.action_id, 1, "@staticmethod (data) -> str")


def check_retry(d: Definition) -> None:
    if d.retry is not None and not isinstance(d.retry, RetryPolicy):
        raise d.problem(None, f"retry is {d.retry!r}", "use an fsm.RetryPolicy or None")
    for s in d.states:
        if s.retry is not None and not isinstance(s.retry, RetryPolicy):
            raise d.problem(s, f"retry is {s.retry!r}", "use an fsm.RetryPolicy or None")


def check_timeout(d: Definition) -> None:
    t = d.timeout
    finite = isinstance(t, int | float) and not isinstance(t, bool) and 0 < t < float("inf")
    if t is not None and not finite:
        raise d.problem(
            None, f"timeout is {t!r}", "give the seconds an async step may run (> 0), or None"
        )


def check_arity(d: Definition, state: State | None, what: str, fn: Any, n: int, shape: str) -> None:
    if isinstance(fn, str) or not callable(fn):
        raise d.problem(state, f"{what} is {fn!r}, not a callable", f"pass a function {shape}")
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins have no signature: trust them
        return
    try:
        signature.bind(*([None] * n))
    except TypeError:
        raise d.problem(
            state,
            f"{what} {callable_name(fn)}{signature} cannot be called with {n} argument(s)",
            f"give it the signature {shape}",
        ) from None

"""Checkpoints <-> rows: how one kind's actions become (state, JSON payload) and back.

A row holds its kind's name and state in their own columns, and the kind's data as JSON in
``payload``, written through `fsm.converter.CONVERTER`. The executor only ever talks to kinds
through a `KindCodec`: hand-written attrs actions get `AttrsCodec` (the whole instance is the
checkpoint), declarative kinds a `DeclarativeCodec` (an envelope around the data). Both read
old rows through the same `upcast`, so an upcaster that fails means the same thing whichever
kind it belongs to: the row cannot be read (`DecodeError`, and the executor quarantines it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import cattrs
import orjson

from fsm.converter import CONVERTER
from fsm.errors import DecodeError, EncodeError, KindError
from fsm.interpreter import Instance
from fsm.protocol import Upcaster
from fsm.storable import may_hold_float

if TYPE_CHECKING:
    from fsm.compiled import Compiled


class KindCodec(Protocol):
    """How one kind's actions become a row (state, payload) and back.

    The executor only ever talks to kinds through this: hand-written attrs actions get
    `AttrsCodec`; declarative kinds `DeclarativeCodec`.
    """

    @property
    def name(self) -> str: ...

    @property
    def version(self) -> int: ...

    def dump(self, action: Any) -> tuple[str, bytes]:
        """(state name, JSON payload) of ``action``."""
        ...

    def load(self, state: str, version: int, payload: bytes | str) -> Any:
        """The action stored in a row; raise `DecodeError` with a clear reason if it can't."""
        ...


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def encode(value: Any, what: str, *, check_floats: bool = True) -> bytes:
    """``value`` (already unstructured) as JSON, or `EncodeError` saying why it cannot be.

    orjson refuses ints beyond 64 bits, nesting deeper than 255 levels and types it does not
    know; it writes inf and nan as ``null``, which would load back as something else (or not
    at all), so those are refused here. ``check_floats=False`` skips that walk for types that
    cannot hold a float.
    """
    try:
        out = orjson.dumps(value)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise EncodeError(f"{what}: checkpoint cannot be stored as JSON: {exc}") from None
    if check_floats and _has_non_finite(value):
        raise EncodeError(
            f"{what}: checkpoint holds inf or nan, which JSON cannot store; "
            "use None or a finite number"
        )
    return out


def _has_non_finite(value: Any) -> bool:
    t = type(value)
    if t is float:
        return not math.isfinite(value)
    if t is dict:
        return any(_has_non_finite(v) for v in value.values())
    if t is list or t is tuple:
        return any(_has_non_finite(v) for v in value)
    return False


def loads(payload: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what}: payload is not valid JSON ({exc})") from None


def upcast(
    what: str, version: int, current: int, upcasters: Mapping[int, Upcaster], data: Any
) -> Any:
    """``data`` of a row written at ``version``, turned into the shape of version ``current``
    by ``upcasters[v]`` for each version in between. Anything that goes wrong (no upcaster,
    an upcaster that raises or returns something else than a dict) is a `DecodeError`."""
    for v in range(version, current):
        fn = upcasters.get(v)
        if fn is None:
            raise DecodeError(
                f"{what}: no upcaster from v{v} to v{v + 1} (the oldest this code reads is "
                f"v{min(upcasters, default=current)}); add upcasters[{v}]"
            )
        try:
            data = fn(data)
        except Exception as exc:
            raise DecodeError(
                f"{what}: upcaster v{v} failed: {type(exc).__name__}: {exc}"
            ) from None
        if not isinstance(data, dict):
            raise DecodeError(f"{what}: upcaster v{v} returned {type(data).__name__}, not a dict")
    return data


class AttrsCodec:
    """Codec of a hand-written action class: the whole attrs instance is the checkpoint.

    Older rows are turned into the current shape by the class's ``upcasters``, as for a kind.
    """

    def __init__(self, cls: type, converter: cattrs.Converter = CONVERTER) -> None:
        if not attrs.has(cls):
            raise TypeError(f"{cls.__qualname__} must be an attrs class to be stored by fsm")
        name = getattr(cls, "name", None)
        if not isinstance(name, str) or not name:
            raise TypeError(f"{cls.__qualname__} must set a `name` string (its kind name)")
        self.cls: type[Any] = cls
        self.name: str = name
        self.version: int = int(getattr(cls, "version", 1))
        self._upcasters: Mapping[int, Upcaster] = getattr(cls, "upcasters", {})
        self._unstructure = converter.get_unstructure_hook(cls)
        self._structure = converter.get_structure_hook(cls)
        self._floats = may_hold_float(cls)
        self._what = f"kind {name!r}"  # an encoding error's subject, made once, not per step

    def dump(self, action: Any) -> tuple[str, bytes]:
        if type(action) is not self.cls:
            raise KindError(
                f"kind {self.name!r}: a step returned a {type(action).__name__} as the next "
                f"checkpoint, not a {self.cls.__qualname__}"
            )
        state: str = action.state
        return state, encode(self._unstructure(action), self._what, check_floats=self._floats)

    def load(self, state: str, version: int, payload: bytes | str) -> Any:
        what = f"kind {self.name!r} v{version}"
        if version > self.version:
            raise DecodeError(
                f"{what}: row is newer than the code (v{self.version}); upgrade the code"
            )
        data = upcast(what, version, self.version, self._upcasters, loads(payload, what))
        try:
            return self._structure(data, self.cls)
        except Exception as exc:  # cattrs raises many types; every one means "unreadable"
            raise DecodeError(f"{what}: payload does not structure: {_describe(exc)}") from None


class DeclarativeCodec:
    """`fsm.codec.KindCodec` of a declarative kind: the envelope (see module doc) as JSON."""

    def __init__(self, compiled: Compiled) -> None:
        self.compiled = compiled
        self.cls = compiled.kind
        self.name: str = compiled.name
        self.version: int = compiled.version
        self._unstructure: Callable[[Any], Any] | None = None
        self._floats = True
        self._structure: Callable[[Any, Any], Any] | None = None
        self._what = f"kind {compiled.name!r}"  # an encoding error's subject, made once

    def dump(self, action: Any) -> tuple[str, bytes]:
        c = self.compiled
        if type(action) is not c.instance_type or not isinstance(action.data, c.data_type):
            got = type(action).__name__
            if isinstance(action, Instance):
                got = f"{got} holding {type(action.data).__name__}"
            raise KindError(
                f"kind {c.name!r}: a step returned {got} as the next checkpoint, not "
                f"{c.instance_type.__name__} holding {c.data_type.__name__}"
            )
        if self._unstructure is None:  # resolved late: the data type may use forward refs
            self._unstructure = CONVERTER.get_unstructure_hook(c.data_type)
            self._floats = may_hold_float(c.data_type)
        body = {"data": self._unstructure(action.data), "parks": action.parks}
        if action.deadline is not None:  # only a wait state with a timeout stores one
            body["deadline"] = action.deadline
        return action.state, encode(body, self._what, check_floats=self._floats)

    def load(self, state: str, version: int, payload: bytes | str) -> Instance[Any, Any]:
        c = self.compiled
        what = f"kind {c.name!r} v{version}, state {state!r}"
        if version > c.version:
            raise DecodeError(f"{what}: row is newer than the code (v{c.version}); upgrade it")
        if state not in c.states:
            raise DecodeError(f"{what}: unknown state; the kind's states are {list(c.states)}")
        envelope = loads(payload, what)
        if not isinstance(envelope, dict) or not isinstance(envelope.get("data"), dict):
            raise DecodeError(f"{what}: payload is not an envelope {{'data': {{...}}, 'parks'}}")
        parks = envelope.get("parks", 0)
        if not isinstance(parks, int):
            raise DecodeError(f"{what}: 'parks' is {parks!r}, not an integer")
        deadline = envelope.get("deadline")
        if deadline is not None and not isinstance(deadline, int | float):
            raise DecodeError(f"{what}: 'deadline' is {deadline!r}, not a unix time")
        data = upcast(what, version, c.version, c.upcasters, envelope["data"])
        if self._structure is None:
            self._structure = CONVERTER.get_structure_hook(c.data_type)
        try:
            value = self._structure(data, c.data_type)
        except Exception as exc:  # cattrs raises many types; each means "unreadable"
            raise DecodeError(f"{what}: data does not structure: {_describe(exc)}") from None
        try:
            return c.instance_type(state, value, parks, deadline)
        except Exception as exc:  # the id function failed on this data
            raise DecodeError(f"{what}: action_id failed: {type(exc).__name__}: {exc}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc)) or str(exc)
    return f"{type(exc).__name__}: {exc}"

"""Checkpoint payloads <-> JSON, through one cattrs converter.

A row holds its kind's name and state in their own columns, and the kind's data as JSON in
``payload``. The converter is cattrs' orjson preset plus one strategy: any union of attrs
classes (a kind's "progress" union, as bark writes ``enum Progress { Start, ... }``) is
serialised as a tagged union, ``{"_type": "ClassName", ...fields}``, so a checkpoint reads the
same whatever order the union's members are declared in, and unions whose members share field
names still round-trip.
"""

from __future__ import annotations

import datetime
import enum
import math
import types
import typing
import uuid
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import attrs
import cattrs
import orjson
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

from fsm.errors import DecodeError, EncodeError, KindError

T = TypeVar("T")
TAG = "_type"


def _attrs_union_members(tp: Any) -> tuple[type, ...] | None:
    """The attrs classes of a union of two or more of them (``None`` may join them)."""
    origin = typing.get_origin(tp)
    if origin is not typing.Union and origin is not types.UnionType:
        return None
    members = tuple(m for m in typing.get_args(tp) if m is not type(None))
    if len(members) < 2 or not all(isinstance(m, type) and attrs.has(m) for m in members):
        return None
    return members


def _tagged_unstructure(conv: cattrs.Converter, tp: Any) -> Callable[[Any], Any]:
    members = _attrs_union_members(tp) or ()
    hooks = {m: conv.get_unstructure_hook(m) for m in members}

    def unstructure(value: Any) -> Any:
        if value is None:  # an optional union: None stays null
            return None
        cls = type(value)
        out = dict(hooks[cls](value))
        out[TAG] = cls.__name__
        return out

    return unstructure


def _tagged_structure(conv: cattrs.Converter, tp: Any) -> Callable[[Any, Any], Any]:
    members = _attrs_union_members(tp) or ()
    by_tag = {m.__name__: (m, conv.get_structure_hook(m)) for m in members}
    optional = type(None) in typing.get_args(tp)

    def structure(value: Any, _: Any) -> Any:
        if value is None and optional:
            return None
        if not isinstance(value, dict) or TAG not in value:
            raise ValueError(f"expected an object tagged with {TAG!r} for {tp}, got {value!r}")
        data = dict(value)
        tag = data.pop(TAG)
        if tag not in by_tag:
            raise ValueError(f"unknown tag {tag!r} for {tp}; known: {sorted(by_tag)}")
        cls, hook = by_tag[tag]
        return hook(data, cls)

    return structure


def make_converter() -> cattrs.Converter:
    """The converter every kind uses: orjson preset + tagged unions of attrs classes."""
    conv = _make_orjson_converter(forbid_extra_keys=False)

    def is_union(tp: Any) -> bool:
        return _attrs_union_members(tp) is not None

    conv.register_unstructure_hook_factory(is_union, lambda tp: _tagged_unstructure(conv, tp))
    conv.register_structure_hook_factory(is_union, lambda tp: _tagged_structure(conv, tp))
    return conv


CONVERTER = make_converter()
"""The shared converter; kinds may register hooks for their own field types on it."""


class KindCodec(Protocol):
    """How one kind's actions become a row (state, payload) and back.

    The executor only ever talks to kinds through this: hand-written attrs actions get
    `AttrsCodec`; the declarative layer provides its own (with upcasters for old versions).
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


def may_hold_float(tp: Any, _seen: set[int] | None = None) -> bool:
    """Whether data of type ``tp`` can contain a float (unknown or ``Any``: assume so)."""
    seen = _seen if _seen is not None else set()
    if id(tp) in seen:
        return False
    seen.add(id(tp))
    if tp in (str, int, bool, bytes, type(None)):
        return False
    if isinstance(tp, type) and attrs.has(tp):
        try:
            fields = attrs.fields(attrs.resolve_types(tp))
        except Exception:  # unresolvable annotations: be safe
            return True
        return any(may_hold_float(f.type, seen) for f in fields)
    args = typing.get_args(tp)
    if typing.get_origin(tp) is typing.Literal:
        return any(isinstance(a, float) for a in args)
    if args:
        return any(may_hold_float(a, seen) for a in args if a is not Ellipsis)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return any(isinstance(m.value, float) for m in tp)
    return not (isinstance(tp, type) and issubclass(tp, _NO_FLOAT))


_NO_FLOAT = (str, int, bytes, datetime.date, datetime.time, uuid.UUID)


def loads(payload: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise DecodeError(f"{what}: payload is not valid JSON ({exc})") from None


class AttrsCodec:
    """Codec of a hand-written action class: the whole attrs instance is the checkpoint.

    Older rows are turned into the current shape by the class's optional
    ``upcast(version, payload_dict) -> payload_dict`` classmethod, called once per version step.
    """

    def __init__(self, cls: type, converter: cattrs.Converter = CONVERTER) -> None:
        if not attrs.has(cls):
            raise TypeError(f"{cls.__qualname__} must be an attrs class to be stored by fsm")
        namespace = getattr(cls, "namespace", None)
        if not isinstance(namespace, str) or not namespace:
            raise TypeError(f"{cls.__qualname__} must set a `namespace` string (its kind name)")
        self.cls: type[Any] = cls
        self.name: str = namespace
        self.version: int = int(getattr(cls, "version", 1))
        self._unstructure = converter.get_unstructure_hook(cls)
        self._structure = converter.get_structure_hook(cls)
        self._floats = may_hold_float(cls)

    def dump(self, action: Any) -> tuple[str, bytes]:
        if type(action) is not self.cls:
            raise KindError(
                f"kind {self.name!r}: a step returned a {type(action).__name__} as the next "
                f"checkpoint, not a {self.cls.__qualname__}"
            )
        state: str = action.state
        return state, encode(
            self._unstructure(action), f"kind {self.name!r}", check_floats=self._floats
        )

    def load(self, state: str, version: int, payload: bytes | str) -> Any:
        what = f"kind {self.name!r} v{version}"
        if version > self.version:
            raise DecodeError(
                f"{what}: row is newer than the code (v{self.version}); upgrade the code"
            )
        data = loads(payload, what)
        upcast = getattr(self.cls, "upcast", None)
        for v in range(version, self.version):
            if upcast is None:
                raise DecodeError(
                    f"{what}: no upcaster from v{v} to v{v + 1}; define {self.cls.__qualname__}"
                    ".upcast(version, payload)"
                )
            data = upcast(v, data)
        try:
            return self._structure(data, self.cls)
        except Exception as exc:  # cattrs raises many types; every one means "unreadable"
            raise DecodeError(f"{what}: payload does not structure: {_describe(exc)}") from None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc)) or str(exc)
    return f"{type(exc).__name__}: {exc}"

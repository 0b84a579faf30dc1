"""The one cattrs converter every checkpoint goes through.

cattrs' orjson preset plus one strategy: any union of attrs classes (a kind's "progress"
union, as bark writes ``enum Progress { Start, ... }``) is serialised as a tagged union,
``{"_type": "ClassName", ...fields}``, so a checkpoint reads the same whatever order the
union's members are declared in, and unions whose members share field names still round-trip.
Kinds register hooks for their own field types on `CONVERTER` (``fsm.CONVERTER``).
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.preconf.orjson import make_converter as _make_orjson_converter

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

"""Which data fsm can store: a walk over an attrs class's field types, done before any row exists.

A checkpoint is the action's data unstructured by `fsm.converter.CONVERTER` (cattrs' orjson
preset plus tagged unions of attrs classes) and written as JSON. A field type the converter
cannot round-trip (a ``Decimal`` with no hooks, a ``dict`` keyed by a plain ``Enum``, a union
whose members cattrs cannot tell apart) used to pass class creation and fail at the first
``start``, or worse, come back as another value after a crash. `storage_problems` finds
those types from the annotations alone, so the kind (or hand-written action) can refuse at
import, naming the field.

What passes, and why:

- ``str``, ``int``, ``float``, ``bool``, ``None``, ``bytes`` (base85), ``datetime``, ``date``
  (ISO strings): the orjson preset handles them; subclasses of ``str`` and ``int`` too.
- enums and ``Literal``: every member/value is actually round-tripped through the converter
  and JSON (their domain is finite, so this is exact, not a guess).
- attrs classes (recursively, forward references resolved with `attrs.resolve_types`),
  ``list``/``tuple``/``set``/``frozenset``/``Sequence``/``deque`` of storable items.
- ``dict``/``Mapping`` whose keys come back as they went: ``str``, ``int``, or an enum or
  ``Literal`` each of whose values survives as a JSON object key (a ``str`` enum does; an
  ``IntEnum`` or plain ``Enum`` does not), and whose values are storable.
- unions: ``X | None``; unions of attrs classes (stored tagged, see `fsm.codec`); unions of
  ``str``/``int``/``float``/``bool`` plus at most one attrs class or collection (JSON objects
  and arrays never look like those primitives, so cattrs tells them apart).
- any other type for which both a structure and an unstructure hook are registered on the
  converter (``CONVERTER.register_structure_hook(Decimal, ...)``) before the check runs.

``Any``, ``object``, unannotated fields and bare ``list``/``dict`` are stored as whatever JSON
their value happens to be and read back as plain JSON (an attrs instance comes back as a
dict), so they are reported as *untyped*: legal, but a warning, not an error.

The same walk answers `may_hold_float`: whether a checkpoint of the type can hold a float at
all, so that encoding skips its inf/nan check for types that cannot.
"""

from __future__ import annotations

import collections
import collections.abc as abc
import datetime
import enum
import types
import typing
import uuid
from typing import Any

import attrs
import cattrs
import orjson
from cattrs.errors import StructureHandlerNotFoundError
from cattrs.fns import identity

from fsm.converter import CONVERTER

NATIVE: frozenset[Any] = frozenset(
    {str, int, float, bool, type(None), bytes, datetime.datetime, datetime.date}
)
"""Leaf types the orjson preset round-trips by itself."""
PRIMITIVE: frozenset[Any] = frozenset({str, int, float, bool})
"""Members cattrs' union passthrough recognises by their JSON type."""
SEQUENCES: frozenset[Any] = frozenset(
    {
        list,
        set,
        frozenset,
        collections.deque,
        abc.Sequence,
        abc.MutableSequence,
        abc.Set,
        abc.MutableSet,
        abc.Collection,
        abc.Iterable,
    }
)
MAPPINGS: frozenset[Any] = frozenset({dict, abc.Mapping, abc.MutableMapping})
UNION_ORIGINS: frozenset[Any] = frozenset({typing.Union, types.UnionType})
NO_FLOAT = (str, int, bytes, datetime.date, datetime.time, uuid.UUID)
"""Leaf types whose values are never floats (``bool`` is an ``int``)."""


@attrs.frozen
class FieldProblem:
    """One field whose type fsm cannot store (or can store only untyped).

    ``path`` is ``Class.field`` (``Order.shipping.zip`` through nested attrs classes),
    ``type_name`` the offending type as written, ``reason`` what goes wrong, ``fix`` what to
    do. ``untyped`` problems (``Any``, ``object``) are warnings: the data round-trips only
    while its values are plain JSON.
    """

    path: str
    type_name: str
    reason: str
    fix: str
    untyped: bool = False

    def describe(self) -> str:
        """``data field 'Order.amount' has type Decimal, which fsm cannot store as JSON``."""
        if "." not in self.path:  # the data class itself
            return f"data type {self.type_name}, {self.reason}"
        return f"data field {self.path!r} has type {self.type_name}, {self.reason}"


CANNOT = "which fsm cannot store as JSON"
UNTYPED = (
    "so it is stored as whatever JSON its value turns into and read back as plain JSON "
    "(an attrs instance comes back as a dict)"
)
UNTYPED_FIX = "give the field a concrete type (an attrs class, str, int, list[...], ...)"


def storage_problems(cls: type, converter: cattrs.Converter = CONVERTER) -> list[FieldProblem]:
    """Every field of attrs class ``cls`` (recursively) that ``converter`` cannot round-trip
    through JSON, in field order; untyped fields (``Any``) are included with ``untyped=True``.

    Call it when the class is declared (a kind's data type, a hand-written action class), not
    per step: hooks registered on the converter after the call are not seen.
    """
    walk = _Walk(converter)
    walk.attrs_class(cls, cls.__name__, {})
    return walk.problems


def may_hold_float(tp: Any, converter: cattrs.Converter = CONVERTER) -> bool:
    """Whether data of type ``tp`` can contain a float: a ``float`` (or float enum value,
    or ``Literal``) anywhere in it, or a type the walk cannot vouch for (``Any``, a problem,
    a type with custom hooks), which is assumed to."""
    walk = _Walk(converter)
    walk.annotation(tp, type_name(tp), {})
    return walk.floats


class _Walk:
    """One pass over a type tree; collects problems, visits each attrs class once, and notes
    whether any part of the tree may hold a float."""

    def __init__(self, converter: cattrs.Converter) -> None:
        self.converter = converter
        self.problems: list[FieldProblem] = []
        self.seen: set[Any] = set()
        self.floats = False

    def fail(self, path: str, tp: Any, reason: str, fix: str, untyped: bool = False) -> None:
        self.floats = True  # what fsm cannot vouch for may hold anything
        self.problems.append(FieldProblem(path, type_name(tp), reason, fix, untyped))

    def attrs_class(self, cls: type, path: str, subst: dict[Any, Any]) -> None:
        key = (cls, tuple(subst.items()))
        if key in self.seen:
            return
        self.seen.add(key)
        try:
            attrs.resolve_types(cls)
        except Exception as exc:  # NameError for an undefined name, TypeError for bad syntax
            self.fail(
                path,
                cls,
                f"whose annotations cannot be resolved ({type(exc).__name__}: {exc})",
                "define (or import) every type its fields name before the kind is defined",
            )
            return
        for field in attrs.fields(cls):
            self.annotation(field.type, f"{path}.{field.name}", subst)

    def annotation(self, tp: Any, path: str, subst: dict[Any, Any]) -> None:
        """Check one annotation; ``path`` names the field it belongs to."""
        if isinstance(tp, typing.TypeVar):
            tp = subst.get(tp, Any)
        if tp is None or tp is Any or tp is object:
            self.fail(path, Any if tp is None else tp, UNTYPED, UNTYPED_FIX, untyped=True)
            return
        supertype = getattr(tp, "__supertype__", None)  # typing.NewType
        if supertype is not None:
            self.floats = True  # as for Annotated: only the checks are vouched for
            self.annotation(supertype, path, subst)
            return
        origin, args = typing.get_origin(tp), typing.get_args(tp)
        if origin is typing.Annotated:
            self.floats = True
            self.annotation(args[0], path, subst)
        elif origin in UNION_ORIGINS:
            self.union(tp, args, path, subst)
        elif origin is typing.Literal:
            self.floats |= any(isinstance(a, float) for a in args)
            self.finite(tp, list(args), path)
        elif tp is tuple or tp in SEQUENCES or tp in MAPPINGS:  # bare: items of any type
            self.fail(path, tp, UNTYPED, UNTYPED_FIX, untyped=True)
        elif origin is tuple:
            items = args[:1] if len(args) == 2 and args[1] is Ellipsis else args
            for item in items:
                self.annotation(item, path, subst)
        elif origin in SEQUENCES:
            self.annotation(args[0], path, subst)
        elif origin in MAPPINGS:
            self.key(tp, args[0], path)
            self.annotation(args[1], path, subst)
        elif isinstance(origin, type) and attrs.has(origin):  # a generic attrs class
            params = getattr(origin, "__parameters__", ())
            self.attrs_class(origin, path, {**subst, **dict(zip(params, args, strict=False))})
        elif isinstance(tp, type):
            self.leaf(tp, path)
        else:
            self.fail(path, tp, CANNOT, "use a concrete class, a collection or a union of them")

    def leaf(self, tp: type, path: str) -> None:
        if attrs.has(tp):
            self.attrs_class(tp, path, {})
        elif issubclass(tp, enum.Enum):
            self.floats |= any(isinstance(m.value, float) for m in tp)
            self.finite(tp, list(tp), path)
        elif tp in NATIVE or issubclass(tp, (str, int)):
            self.floats |= issubclass(tp, float)
        elif self.has_hooks(tp):
            self.floats |= not issubclass(tp, NO_FLOAT)
        else:
            name = tp.__name__
            self.fail(
                path,
                tp,
                CANNOT,
                "use int or str, or register structure and unstructure hooks for "
                f"{name} on fsm.CONVERTER before the kind is defined",
            )

    def has_hooks(self, tp: type) -> bool:
        """Did someone register both directions for ``tp`` on the converter?

        With no structure hook, cattrs' fallback factory raises right away (cattrs >= 24.2);
        with no unstructure hook, its fallback is `cattrs.fns.identity`, which would hand the
        object itself to orjson.
        """
        try:
            self.converter.get_structure_hook(tp)
        except StructureHandlerNotFoundError:
            return False
        return self.converter.get_unstructure_hook(tp) is not identity

    def finite(self, tp: Any, values: list[Any], path: str) -> None:
        """Round-trip each value of an enum or a ``Literal`` through the converter and JSON."""
        lost = [v for v in values if not self.round_trips(v, tp)]
        if lost:
            self.fail(
                path,
                tp,
                f"{CANNOT}: {', '.join(map(repr, lost))} would not read back as written",
                "use str or int values (or register hooks for the type on fsm.CONVERTER)",
            )

    def key(self, mapping: Any, key: Any, path: str) -> None:
        """A JSON object's keys are strings: the key type must survive the trip."""
        if key is str or key is int:
            return
        if isinstance(key, type) and issubclass(key, enum.Enum):
            values: list[Any] = list(key)
        elif typing.get_origin(key) is typing.Literal:
            values = list(typing.get_args(key))
        else:
            values = []
        if values and all(self.round_trips({v: 0}, dict[key, int]) for v in values):
            return
        self.fail(
            path,
            mapping,
            f"{CANNOT}: its {type_name(key)} keys would not read back from JSON object keys",
            "key the dict by str or int (or by a str enum)",
        )

    def union(self, tp: Any, members: tuple[Any, ...], path: str, subst: dict[Any, Any]) -> None:
        """``X | None``, unions of attrs classes, or primitives plus one object-like member."""
        rest = [m for m in members if m is not type(None)]
        if len(rest) > 1 and not all(isinstance(m, type) and attrs.has(m) for m in rest):
            others = [m for m in rest if m not in PRIMITIVE]
            if len(others) > 1 or (others and not _object_like(others[0])):
                self.fail(
                    path,
                    tp,
                    f"{CANNOT}: cattrs cannot tell {type_name(others[0])} apart from the "
                    "other members once it is JSON",
                    "use a union of attrs classes (stored tagged), or X | None",
                )
                return
        for member in rest:
            self.annotation(member, path, subst)

    def round_trips(self, value: Any, tp: Any) -> bool:
        conv = self.converter
        try:
            again = conv.structure(orjson.loads(orjson.dumps(conv.unstructure(value, tp))), tp)
        except Exception:  # any failure on the way means "does not round-trip"
            return False
        return bool(again == value)


def _object_like(tp: Any) -> bool:
    """Unstructures to a JSON object or array, never to a str/int/float/bool."""
    origin = typing.get_origin(tp) or tp
    if isinstance(origin, type) and attrs.has(origin):
        return True
    return origin is tuple or origin in SEQUENCES or origin in MAPPINGS


def type_name(tp: Any) -> str:
    """``Decimal``, ``list[Decimal]``, ``Order | None``: as a user would write it."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in UNION_ORIGINS:
        return " | ".join(type_name(a) for a in args)
    if origin is typing.Literal:
        return f"Literal[{', '.join(map(repr, args))}]"
    if origin is not None and args:
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{type_name(origin)}[{inner}]"
    if tp is type(None):
        return "None"
    if isinstance(tp, type):
        return tp.__qualname__.rsplit("<locals>.", 1)[-1]
    return str(getattr(tp, "_name", None) or repr(tp).replace("typing.", ""))

"""fsm.storable: a field type passes exactly when the converter round-trips it through JSON."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import typing
import uuid
from typing import Any, Literal, NewType, Optional

import attrs
import orjson
import pytest

from fsm.converter import CONVERTER, make_converter
from fsm.storable import storage_problems


class Plain(enum.Enum):
    A = 1
    B = "x"


class Pair(enum.Enum):
    A = (1, 2)


class Number(enum.IntEnum):
    ONE = 1


class Word(enum.StrEnum):
    A = "a"


@attrs.frozen
class A:
    x: int


@attrs.frozen
class B:
    x: int


Uid = NewType("Uid", str)

STORABLE: list[tuple[Any, Any]] = [
    (int, 1),
    (str, "s"),
    (bytes, b"ab"),
    (datetime.datetime, datetime.datetime(2020, 1, 1, 12, 30)),
    (datetime.date, datetime.date(2020, 1, 1)),
    (Plain, Plain.B),
    (Number, Number.ONE),
    (Word, Word.A),
    (Literal["a", 1], 1),
    (list[A], [A(1)]),
    (tuple[int, ...], (1, 2)),
    (tuple[int, str], (1, "a")),
    (set[int], {1}),
    (frozenset[str], frozenset("a")),
    (collections.deque[int], collections.deque([1])),
    (dict[str, A], {"a": A(1)}),
    (dict[int, str], {1: "a"}),
    (dict[Word, int], {Word.A: 1}),
    (dict[Literal["a"], int], {"a": 1}),
    (A | B, B(1)),
    (A | B | None, B(1)),
    (A | B | None, None),
    (int | A, A(1)),
    (int | list[int], [1]),
    (str | dict[str, int], {"a": 1}),
    (Optional[A], A(1)),  # noqa: UP045 - the spelling is the point
    (Uid, Uid("x")),
    (typing.Annotated[int, "meta"], 1),
]

UNSTORABLE: list[tuple[Any, Any, str]] = [
    (decimal.Decimal, decimal.Decimal("1.5"), "has type Decimal, which fsm cannot store"),
    (uuid.UUID, uuid.UUID(int=1), "has type UUID"),
    (datetime.time, datetime.time(1), "has type time"),
    (Pair, Pair.A, "<Pair.A: (1, 2)> would not read back"),
    (dict[Number, str], {Number.ONE: "a"}, "its Number keys would not read back"),
    (dict[Plain, int], {Plain.A: 1}, "its Plain keys"),
    (dict[bool, int], {False: 1}, "its bool keys"),
    (str | bytes, b"x", "cannot tell bytes apart"),
    (str | A | B, B(1), "cannot tell A apart"),
    (list[decimal.Decimal], [decimal.Decimal(1)], "has type Decimal"),
]


def holder(tp: Any) -> type:
    return attrs.make_class("H", {"f": attrs.field(type=tp)}, frozen=True)


def round_trips(cls: type, value: Any) -> bool:
    obj = cls(value)
    try:
        back = CONVERTER.structure(orjson.loads(orjson.dumps(CONVERTER.unstructure(obj))), cls)
    except Exception:
        return False
    return bool(back == obj) and type(back.f) is type(value)


@pytest.mark.parametrize(("tp", "value"), STORABLE, ids=repr)
def test_storable_types_pass_and_really_round_trip(tp: Any, value: Any) -> None:
    cls = holder(tp)
    assert storage_problems(cls) == []
    assert round_trips(cls, value)


@pytest.mark.parametrize(("tp", "value", "reason"), UNSTORABLE, ids=repr)
def test_unstorable_types_are_named_and_really_fail(tp: Any, value: Any, reason: str) -> None:
    cls = holder(tp)
    (problem,) = storage_problems(cls)
    assert problem.path == "H.f" and not problem.untyped
    assert reason in problem.describe()
    assert not round_trips(cls, value)


def test_hooks_on_the_converter_make_a_type_storable() -> None:
    conv = make_converter()
    cls = holder(decimal.Decimal)
    assert storage_problems(cls, conv)
    conv.register_unstructure_hook(decimal.Decimal, str)
    conv.register_structure_hook(decimal.Decimal, lambda v, _: decimal.Decimal(v))
    assert storage_problems(cls, conv) == []
    assert storage_problems(cls) != [], "the shared converter was not touched"


@pytest.mark.parametrize("tp", [Any, object, list, dict])
def test_untyped_fields_are_reported_as_untyped(tp: Any) -> None:
    (problem,) = storage_problems(holder(tp))
    assert problem.untyped
    assert "read back as plain JSON" in problem.describe()


@attrs.frozen
class Node:
    """Recursive: the walk visits each class once."""

    name: str
    children: list[Node] = attrs.Factory(list)
    cost: decimal.Decimal | None = None


def test_recursive_type_is_walked_once_with_the_nested_path() -> None:
    (problem,) = storage_problems(Node)
    assert problem.describe().startswith("data field 'Node.cost' has type Decimal")

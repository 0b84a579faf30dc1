"""`fsm.worker.services.services_for`: a worker's services, or a one-line refusal."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import fsm
from fsm.kind import Kind
from fsm.state import State
from fsm.worker.services import ServicesFailed, ServicesMissing, needs_services, services_for


class Shop:
    built = 0

    def __init__(self) -> None:
        Shop.built += 1


class Bank:
    pass


def make_shop() -> Shop:
    return Shop()


def broken_shop() -> Shop:
    raise ConnectionError("till offline")


@attrs.frozen
class Sale:
    key: str


class FreeKind(Kind[Sale, None]):
    name = "free"
    new = State(initial=True)
    end = State.done()
    transitions = (new.to(end),)

    @staticmethod
    def action_id(sale: Sale) -> str:
        return sale.key


class ShopKind(Kind[Sale, Shop]):
    name = "shop"
    new = State(initial=True)
    end = State.done()
    transitions = (new.to(end),)

    @staticmethod
    def action_id(sale: Sale) -> str:
        return sale.key


class BuiltShopKind(ShopKind):
    name = "built_shop"
    services = make_shop


class OtherBuiltShopKind(ShopKind):
    name = "other_built_shop"
    services = make_shop


class BankKind(Kind[Sale, Bank]):
    name = "bank"
    services = Bank
    new = State(initial=True)
    end = State.done()
    transitions = (new.to(end),)

    @staticmethod
    def action_id(sale: Sale) -> str:
        return sale.key


@attrs.frozen
class FreeAction(fsm.Action[None]):
    name = "free_action"
    key: str


@attrs.frozen
class MaybeShopAction(fsm.Action[Shop | None]):
    name = "maybe_shop"
    key: str


@attrs.frozen
class ShopAction(fsm.Action[Shop]):
    name = "shop_action"
    services = make_shop
    key: str


@attrs.frozen
class OpenAction(fsm.Action):  # type: ignore[type-arg]
    name = "open_action"
    key: str


@attrs.frozen
class BrokenAction(fsm.Action[Shop]):
    name = "broken_action"
    services = broken_shop
    key: str


@pytest.mark.parametrize(
    ("cls", "needs"),
    [
        (FreeKind, False),
        (ShopKind, True),
        (FreeAction, False),
        (MaybeShopAction, False),
        (ShopAction, True),
        (OpenAction, True),  # an open type parameter may need anything
    ],
)
def test_which_kinds_need_services(cls: type, needs: bool) -> None:
    assert needs_services(cls) is needs


def test_kinds_that_need_nothing_get_none() -> None:
    assert services_for([FreeKind, FreeAction, MaybeShopAction]) is None


def test_a_kind_needing_services_without_a_source_is_refused_in_one_line() -> None:
    with pytest.raises(ServicesMissing) as info:
        services_for([FreeKind, ShopKind, OpenAction])
    message = str(info.value)
    assert "\n" not in message
    assert "shop (Shop), open_action (Any)" in message
    assert "free" not in message.split(":")[1]
    assert "pass --services MODULE:FACTORY, or set `services = <callable>`" in message


def test_kinds_sharing_a_builder_get_one_services_object() -> None:
    Shop.built = 0
    services = services_for([FreeKind, BuiltShopKind, OtherBuiltShopKind, ShopAction])
    assert isinstance(services, Shop)
    assert Shop.built == 1


def test_kinds_with_different_builders_are_refused() -> None:
    with pytest.raises(ServicesMissing, match="build their services differently") as info:
        services_for([BuiltShopKind, BankKind])
    assert "built_shop (make_shop), bank (Bank)" in str(info.value)


def test_a_factory_wins_over_the_kinds() -> None:
    marker: Any = object()
    assert services_for([ShopKind, BankKind], lambda: marker) is marker


@pytest.mark.parametrize(
    ("kinds", "factory", "message"),
    [
        (
            [BrokenAction],
            None,
            "services factory broken_shop failed: ConnectionError: till offline",
        ),
        (
            [ShopKind],
            broken_shop,
            "services factory --services failed: ConnectionError: till offline",
        ),
    ],
)
def test_a_builder_that_raises_is_one_line(kinds: list[type], factory: Any, message: str) -> None:
    with pytest.raises(ServicesFailed) as info:
        services_for(kinds, factory)
    assert str(info.value) == message

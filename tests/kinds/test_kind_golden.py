"""Golden checkpoints of the example order kind, and the example itself end to end."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import orjson
import pytest

from fsm import Failed, Next, Park
from fsm.testing.golden import GoldenMismatch, check_golden, write_golden

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "examples" / "golden" / "order"


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_order", ROOT / "examples" / "order.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # attrs and cattrs resolve annotations through it
    spec.loader.exec_module(module)
    return module


order = load_example()


def shop() -> object:
    return order.FakeShop({"mug": 10, "tee": 10})


def test_every_golden_checkpoint_loads_and_steps() -> None:
    results = {r.path.name: r for r in check_golden(order.OrderKind, GOLDEN, shop())}
    assert sorted(results) == [
        "v1-charging.json",
        "v2-awaiting_shipment.json",
        "v2-charging.json",
        "v2-releasing.json",
        "v2-start.json",
    ]
    start = results["v2-start.json"].outcome
    assert isinstance(start, Next) and start.state.state == "charging"
    charged = results["v2-charging.json"].outcome
    assert isinstance(charged, Next) and charged.state.state == "awaiting_shipment"
    waiting = results["v2-awaiting_shipment.json"].outcome
    assert isinstance(waiting, Park) and waiting.wake_after == 3600.0
    assert isinstance(results["v2-releasing.json"].outcome, Failed)


def test_v1_checkpoint_is_upcast() -> None:
    [result] = [r for r in check_golden(order.OrderKind, GOLDEN, shop()) if "v1" in r.path.name]
    assert isinstance(result.outcome, Next)
    assert result.outcome.state.data.amount == 1950  # 19.5 euros became cents


def test_written_golden_reads_back(tmp_path: Path) -> None:
    action = order.OrderKind.create(order.Order("9", "mug", 1, "visa-1", 100))
    path = write_golden(order.OrderKind, action, tmp_path)
    assert path.name == "start.json"
    assert orjson.loads(path.read_bytes())["version"] == 2
    [result] = check_golden(order.OrderKind, tmp_path, shop())
    assert result.state == "start"


def test_mismatches_name_each_file(tmp_path: Path) -> None:
    (tmp_path / "renamed.json").write_text(
        '{"state": "paying", "version": 2, "payload": {"data": {}, "parks": 0}}'
    )
    (tmp_path / "future.json").write_text(
        '{"state": "start", "version": 3, "payload": {"data": {}, "parks": 0}}'
    )
    with pytest.raises(GoldenMismatch) as err:
        check_golden(order.OrderKind, tmp_path, shop())
    message = str(err.value)
    assert "renamed.json: does not load" in message and "unknown state" in message
    assert "future.json: does not load" in message and "newer than the code" in message


def test_a_step_that_raises_is_a_mismatch(tmp_path: Path) -> None:
    action = order.OrderKind.create(order.Order("9", "cap", 1, "visa-1", 100))
    write_golden(order.OrderKind, action, tmp_path)
    with pytest.raises(GoldenMismatch, match=r"start.json: step from 'start' raised Rejected"):
        check_golden(order.OrderKind, tmp_path, shop())  # no caps in stock


def test_an_empty_folder_is_a_mismatch(tmp_path: Path) -> None:
    with pytest.raises(GoldenMismatch, match="no golden"):
        check_golden(order.OrderKind, tmp_path, shop())


def test_example_run_leaves_a_balanced_ledger(tmp_path: Path) -> None:
    the_shop = asyncio.run(order.run(tmp_path / "orders.db"))
    ledger = the_shop.ledger
    charges = [e for e in ledger if e[0] == "charge"]
    assert [card for _, card, _ in charges] == ["visa-1", "flaky-2"]
    assert not [e for e in ledger if e[0] == "refund"]  # nothing was charged, then refused
    assert the_shop.stock == {"mug": 2, "tee": 5, "cap": 0}  # tee reservations given back
    assert ("release", "tee", 1) in ledger

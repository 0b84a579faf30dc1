"""The installed package, not the source tree: what a user gets from the wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# A kind whose effect takes an Invoice where the kind's data is an Order.
SNIPPET = textwrap.dedent(
    """
    import attrs
    from fsm import Kind, State, StepContext


    @attrs.frozen
    class Order:
        order_id: str


    @attrs.frozen
    class Invoice:
        number: int


    class Shop:
        pass


    def bill(ctx: StepContext[Shop], invoice: Invoice) -> Invoice:
        return invoice


    class Billing(Kind[Order, Shop]):
        name = "billing"
        a = State(initial=True)
        end = State.done()
        transitions = (a.to(end, effect=bill),)

        @staticmethod
        def action_id(order: Order) -> str:
            return order.order_id
    """
)


def build_and_install(tmp_path: Path) -> Path:
    """Build the wheel from a copy of the sources and install it, alone, into a folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in ("fsm", "definitions"):
        shutil.copytree(ROOT / package, src / package, ignore=junk)
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(src)], check=True)
    (wheel,) = wheels.glob("fsm-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    return site


@pytest.mark.builds_wheel
def test_mypy_checks_kinds_against_the_installed_wheel(tmp_path: Path) -> None:
    site = build_and_install(tmp_path)
    # Only the installed copy is on the path: the dependencies come from this environment,
    # whose editable install of fsm is an import hook mypy does not see.
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import fsm; print(fsm.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(site)
    snippet = tmp_path / "billing.py"
    snippet.write_text(SNIPPET)
    checked = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental",
         "--cache-dir=/dev/null", "--hide-error-context", str(snippet)],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert "py.typed" not in checked.stdout, checked.stdout
    line = next(n for n, text in enumerate(SNIPPET.splitlines(), 1) if "effect=bill" in text)
    errors = [e for e in checked.stdout.splitlines() if ": error: " in e]
    assert len(errors) == 1 and errors[0].startswith(f"billing.py:{line}: "), checked.stdout
    assert "[[StepContext[Shop], Invoice]" in errors[0]
    assert checked.returncode == 1
    assert (site / "definitions" / "py.typed").exists()

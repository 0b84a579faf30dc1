"""The installed package, not the source tree: what a user gets from the wheel."""

from __future__ import annotations

import importlib
import os
import shutil
import subprocess
import sys
import textwrap
import tomllib
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
    """Build both wheels (fsm, and the wallet kinds' fsm-bark) from a copy of the sources and
    install them, alone, into a folder."""
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    junk = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for package in ("fsm", "definitions"):
        shutil.copytree(ROOT / package, src / package, ignore=junk)
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for project in (src, src / "definitions"):
        subprocess.run([*pip, "wheel", "--no-deps", "-w", str(wheels), str(project)], check=True)
    (fsm_wheel,) = wheels.glob("fsm-*.whl")
    (bark_wheel,) = wheels.glob("fsm_bark-*.whl")
    install = [*pip, "install", "--no-deps", "--target", str(site)]
    subprocess.run([*install, str(fsm_wheel), str(bark_wheel)], check=True)
    return site


def entry_point_groups(dist_info: Path) -> dict[str, set[str]]:
    """The entry points of an installed distribution: group -> names."""
    groups: dict[str, set[str]] = {}
    path = dist_info / "entry_points.txt"
    for line in path.read_text().splitlines() if path.exists() else []:
        if line.startswith("["):
            group = groups.setdefault(line.strip("[]"), set())
        elif "=" in line:
            group.add(line.split("=")[0].strip())
    return groups


def test_the_wallet_kinds_entry_points_are_named_after_the_kinds() -> None:
    """fsm-bark (definitions/pyproject.toml) plugs in the seven kinds under their own names, the
    demo and the torture scenario; fsm itself (pyproject.toml) plugs in nothing but its command."""
    fsm_project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "entry-points" not in fsm_project
    assert fsm_project["scripts"] == {"fsm": "fsm.cli:main"}
    bark = tomllib.loads((ROOT / "definitions" / "pyproject.toml").read_text())["project"]
    kinds = bark["entry-points"]["fsm.kinds"]
    for name, target in kinds.items():
        module, _, attr = target.partition(":")
        assert getattr(importlib.import_module(module), attr).name == name
    assert set(kinds) == {
        "board",
        "offboard",
        "arkoor_send",
        "lightning_send",
        "lightning_receive",
        "exit",
        "refresh",
    }
    assert set(bark["entry-points"]["fsm.commands"]) == {"demo"}
    assert set(bark["entry-points"]["fsm.torture"]) == {"bark-wallet"}


@pytest.mark.slow
@pytest.mark.builds_wheel
def test_the_fsm_wheel_plugs_in_nothing_the_fsm_bark_wheel_the_wallet_kinds(tmp_path: Path) -> None:
    site = build_and_install(tmp_path)
    (fsm_info,) = site.glob("fsm-*.dist-info")
    (bark_info,) = site.glob("fsm_bark-*.dist-info")
    top_level = {p.name for p in site.iterdir() if not p.name.endswith(".dist-info")}
    assert top_level == {"fsm", "fsm_bark", "bin"}
    assert entry_point_groups(fsm_info) == {"console_scripts": {"fsm"}}
    assert entry_point_groups(bark_info) == {
        "fsm.kinds": {
            "board",
            "offboard",
            "arkoor_send",
            "lightning_send",
            "lightning_receive",
            "exit",
            "refresh",
        },
        "fsm.commands": {"demo"},
        "fsm.torture": {"bark-wallet"},
    }
    files = {p.relative_to(site).as_posix() for p in (site / "fsm_bark").rglob("*.py")}
    assert {"fsm_bark/demo.py", "fsm_bark/services/chain.py", "fsm_bark/sim/world.py"} <= files
    assert (site / "fsm_bark" / "py.typed").exists()
    # the console's pages ship in the wheel: templates, stylesheet, script
    console = site / "fsm" / "console"
    shipped = {p.relative_to(console).as_posix() for p in console.rglob("*") if p.is_file()}
    source = ROOT / "fsm" / "console"
    pages = {
        p.relative_to(source).as_posix()
        for folder in ("templates", "static")
        for p in (source / folder).iterdir()
    }
    assert pages and pages <= shipped, pages - shipped


@pytest.mark.slow
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

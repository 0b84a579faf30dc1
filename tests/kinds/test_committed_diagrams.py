"""Every diagram committed under docs/diagrams/ is what the code draws today."""

from __future__ import annotations

import contextlib
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from fsm.cli import main
from fsm.discover import kinds_in, load_module

REPO = Path(__file__).resolve().parents[2]
DIAGRAMS = REPO / "docs" / "diagrams"

COMMITTED = [
    # (kind name, definitions module, file stem)
    ("order", "examples.order", "order"),
    ("board", "fsm_bark.board", "board"),
    ("offboard", "fsm_bark.offboard", "offboard"),
    ("arkoor_send", "fsm_bark.arkoor_send", "arkoor_send"),
    ("lightning_send", "fsm_bark.lightning_send", "lightning_send"),
    ("lightning_receive", "fsm_bark.lightning_receive", "lightning_receive"),
    ("exit", "fsm_bark.exit", "exit"),
    ("refresh", "fsm_bark.refresh", "refresh"),
]


def regenerate(kind: str, module: str, stem: str) -> str:
    return (
        f"fsm diagram {kind} --module {module} --format mermaid "
        f"--output docs/diagrams/{stem}.mmd && fsm diagram {kind} --module {module} "
        f"--format svg --output docs/diagrams/{stem}.svg"
    )


@pytest.mark.parametrize(("kind", "module", "stem"), COMMITTED)
def test_committed_mermaid_is_current(kind: str, module: str, stem: str) -> None:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.chdir(REPO):  # `fsm diagram` from the repo root, in this process
        code = main(["diagram", kind, "--module", module], stdout=out, stderr=err)
    assert code == 0, err.getvalue()
    assert out.getvalue() == (DIAGRAMS / f"{stem}.mmd").read_text(), (
        f"docs/diagrams/{stem}.mmd is out of date; regenerate it (from the repo root) with: "
        f"{regenerate(kind, module, stem)}"
    )


@pytest.mark.parametrize(("kind", "module", "stem"), COMMITTED)
def test_committed_svg_has_the_kinds_states_and_edges(kind: str, module: str, stem: str) -> None:
    """Graphviz versions lay out differently, so the SVG is compared by structure."""
    (cls,) = [k for k in kinds_in(load_module(module)) if k.name == kind]
    graph = cls.graph()
    ns = "{http://www.w3.org/2000/svg}"
    groups = list(ET.parse(DIAGRAMS / f"{stem}.svg").getroot().iter(f"{ns}g"))
    nodes = {g.findtext(f"{ns}title") for g in groups if g.get("class") == "node"}
    edges = [g for g in groups if g.get("class") == "edge"]
    message = f"docs/diagrams/{stem}.svg is out of date; run: {regenerate(kind, module, stem)}"
    assert nodes == {"__start__", *(s.name for s in graph.states)}, message
    assert len(edges) == len(graph.edges) + 1, message

"""The kinds: each kind's totals; one kind's diagram painted with its live counts.

The counts (`Store.state_census`) are read again by the page every ``--poll`` seconds
(``census.json``) and the diagram is drawn again only when they moved; states with broken,
quarantined or late actions (claimable longer than ``--late`` seconds) stand out.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from fsm.console.backend import Backend, KindView
from fsm.console.guard import Refused
from fsm.console.web import page
from fsm.diagram import GraphvizError


def _backend(request: Request) -> Backend:
    backend: Backend = request.app.state.backend
    return backend


async def kinds(request: Request) -> Response:
    backend = _backend(request)
    views = await backend.call(backend.kinds)
    return page(request, "kinds.html", {"kinds": views})


async def _view(request: Request) -> KindView:
    backend = _backend(request)
    name = request.path_params["kind"]
    view = await backend.call(backend.kind, name)
    if view is None:
        raise Refused(404, f"no kind {name!r}: not loaded here and no live action of it")
    return view


def census_of(view: KindView, now: float, late: float) -> dict[str, Any]:
    """The counts a kind's page polls: per state, its live, broken, quarantined, and how
    long the longest-waiting claimable one has waited (``late`` past the threshold)."""
    return {
        "kind": view.name,
        "live": view.live,
        "states": {
            state: {
                "live": c.live,
                "broken": c.broken,
                "quarantined": c.quarantined,
                "waited": round(c.waited(now), 1),
                "late": c.waited(now) > late,
            }
            for state, c in sorted(view.states.items())
        },
    }


async def kind(request: Request) -> Response:
    backend = _backend(request)
    view = await _view(request)
    now = await backend.call(backend.now)
    svg, problem = b"", None
    if view.graph is not None:
        try:
            svg = await backend.svg(view.name, view.overlay())
        except GraphvizError as exc:
            problem = str(exc)
    settings = request.app.state.guard.settings
    context = {
        "kind": view,
        "svg": svg.decode(),
        "problem": problem,
        "census": census_of(view, now, settings.late),
        "states": [s.name for s in view.graph.states] if view.graph else [],
    }
    return page(request, "kind.html", context)


async def census(request: Request) -> Response:
    backend = _backend(request)
    view = await _view(request)
    now = await backend.call(backend.now)
    settings = request.app.state.guard.settings
    return JSONResponse(census_of(view, now, settings.late))


async def diagram(request: Request) -> Response:
    backend = _backend(request)
    view = await _view(request)
    if view.graph is None:
        raise Refused(404, f"kind {view.name!r} is not loaded here: no diagram (--module)")
    try:
        svg = await backend.svg(view.name, view.overlay())
    except GraphvizError as exc:
        raise Refused(503, str(exc)) from None
    return Response(svg, media_type="image/svg+xml")

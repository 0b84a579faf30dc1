"""One action: where it stands, on its kind's diagram, with its history and its controls.

Everything comes from one `Store.inspect` (its status, checkpoint, resources, lease, wake-up,
pending events, outcome with the cause chain, earlier incarnations and the newest steps of
its history), decoded by its kind when the kind is loaded. The diagram highlights its state
and draws the edges its history went along (`fsm.diagram.history_path`).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fsm.console.backend import Backend
from fsm.console.guard import Refused
from fsm.console.web import page
from fsm.diagram import GraphvizError
from fsm.store import ActionReport, ActionStatus


def controls_for(report: ActionReport) -> list[str]:
    """The controls that apply to the action as it stands (an ended one has none)."""
    if not report.live:
        return []
    if report.status is ActionStatus.QUARANTINED:
        return ["unquarantine", "stop"]
    return ["retry", "notify", "cancel", "stop"]


async def action(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    action_id = request.path_params["id"]
    report = await backend.call(backend.report, action_id)
    if report is None:
        raise Refused(404, f"no action {action_id!r} in this database (neither live nor kept)")
    now = await backend.call(backend.now)
    overlay = backend.action_overlay(report)
    svg, problem = "", None
    if overlay is not None:
        try:
            svg = (await backend.svg(report.kind, overlay)).decode()
        except GraphvizError as exc:
            problem = str(exc)
    elif report.kind not in backend.graphs:
        problem = f"kind {report.kind!r} is not loaded here (--module): no diagram"
    else:
        problem = f"state {report.state!r} is not one of kind {report.kind!r}'s here"
    context = {
        "r": report,
        "now": now,
        "svg": svg,
        "problem": problem,
        "decoded": None if report.action is None else repr(report.action),
        "available": controls_for(report),
    }
    return page(request, "action.html", context)

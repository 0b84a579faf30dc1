"""The controls, and logging in to use them: every request here changes something.

Each control is one `fsm.Controls` call, the same the command line makes (``fsm actions
retry|notify|cancel|stop|unquarantine``), so the same fencing applies: a driver holding the
action makes it refuse (the console never waits), and its result is the command line's line
(`fsm.cli.control.describe`). Each passes the guard first (`fsm.console.guard`): controls
allowed, ``POST``, the token, this console's own page. The page asks for confirmation
before it sends one; the result is a page of its own (or JSON, when asked for).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import attrs
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from fsm.cli.control import describe
from fsm.console.backend import Backend
from fsm.console.guard import Guard, Refused
from fsm.console.web import form_of, page
from fsm.errors import ActionBusy, FsmError, NoSuchAction
from fsm.failures import one_line

CONTROLS = ("retry", "notify", "cancel", "stop", "unquarantine")

BY = "console"
"""Who a control is recorded as asked by, unless the form names someone."""


def _arguments(name: str, form: dict[str, str]) -> dict[str, Any]:
    reason = form.get("reason", "").strip() or None
    kwargs: dict[str, Any] = {"by": form.get("by", "").strip() or BY, "reason": reason}
    if name == "retry":
        kwargs["reset_attempts"] = form.get("reset_attempts") in ("1", "on", "true")
    if name == "cancel" and reason is None:
        raise Refused(400, "a cancel needs a reason (it becomes the action's cause)")
    return kwargs


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


async def control(request: Request) -> Response:
    guard: Guard = request.app.state.guard
    backend: Backend = request.app.state.backend
    name, action_id = request.path_params["control"], request.path_params["id"]
    form = await form_of(request)
    guard.check_write(request, form)
    if name not in CONTROLS:
        raise Refused(404, f"no control {name!r} (one of: {', '.join(CONTROLS)})")
    kwargs = _arguments(name, form)
    try:
        done = await backend.call(backend.control, name, action_id, **kwargs)
    except NoSuchAction as exc:
        status, text, result = 404, str(exc), None
    except (ActionBusy, FsmError) as exc:
        status, text, result = 409, str(exc), None
    else:
        status, text, result = 200, describe(done), attrs.asdict(done)
    if _wants_json(request):
        body = {"ok": status == 200, "message": one_line(text), "result": result}
        return JSONResponse(body, status_code=status)
    context = {"name": name, "id": action_id, "ok": status == 200, "message": one_line(text)}
    return page(request, "result.html", context, status)


def _next(form: dict[str, str]) -> str:
    """Where to go after logging in: a path of this console only (never another site)."""
    target = form.get("next") or "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


async def login_page(request: Request) -> Response:
    context = {"next": request.query_params.get("next", "/"), "error": None}
    return page(request, "login.html", context)


async def login(request: Request) -> Response:
    guard: Guard = request.app.state.guard
    form = await form_of(request)
    try:
        guard.check_login(request, form)
    except Refused as refused:
        context = {"next": _next(form), "error": refused.why}
        return page(request, "login.html", context, refused.status)
    response = RedirectResponse(_next(form), status_code=303)
    response.set_cookie(
        guard.settings.cookie,
        guard.settings.token,
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


async def logout(request: Request) -> Response:
    guard: Guard = request.app.state.guard
    guard.check_origin(request)
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(guard.settings.cookie, path="/")
    return response

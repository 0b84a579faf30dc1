"""The console's ASGI application: its routes, and what every response carries.

Routes (every ``GET`` only reads):

* ``/`` -> ``/kinds``; ``/kinds`` (each kind's totals); ``/kinds/{kind}`` (its diagram with
  live counts), ``/kinds/{kind}/census.json`` (the counts the page polls),
  ``/kinds/{kind}/diagram.svg``;
* ``/actions`` (the filtered listing, keyset pages); ``/actions/{id}`` (one action);
* ``POST /actions/{id}/{control}`` (retry, notify, cancel, stop, unquarantine);
  ``/login`` (``GET`` the form, ``POST`` the token), ``POST /logout``;
* ``/static/...`` (the console's CSS and JavaScript).

Every response forbids framing (a control's button cannot be clicked through another site's
page) and loading anything from elsewhere (Content-Security-Policy: this console only).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from fsm.console.backend import Backend
from fsm.console.guard import Guard, Refused
from fsm.console.settings import Settings
from fsm.console.views import action, actions, controls, kinds
from fsm.console.web import STATIC, page

HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class _Guarded(BaseHTTPMiddleware):
    """The Host check on every request, the headers on every response, a refusal as a page
    (or JSON for the pages' scripts)."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        try:
            request.app.state.guard.check_host(request)
            response = await call_next(request)
        except Refused as refused:
            response = _refusal(request, refused)
        for name, value in HEADERS.items():
            response.headers.setdefault(name, value)
        return response


def _refusal(request: Request, refused: Refused) -> Response:
    if request.url.path.endswith(".json") or "application/json" in request.headers.get(
        "accept", ""
    ):
        return JSONResponse({"ok": False, "message": refused.why}, status_code=refused.status)
    return page(
        request, "error.html", {"status": refused.status, "why": refused.why}, refused.status
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return _refusal(request, exc)


async def _home(request: Request) -> Response:
    return RedirectResponse("/kinds", status_code=307)


def create_app(backend: Backend, settings: Settings) -> Starlette:
    """The console over ``backend`` with ``settings`` (the caller closes the backend)."""
    routes = [
        Route("/", _home),
        Route("/kinds", kinds.kinds),
        Route("/kinds/{kind}", kinds.kind),
        Route("/kinds/{kind}/census.json", kinds.census),
        Route("/kinds/{kind}/diagram.svg", kinds.diagram),
        Route("/actions", actions.actions),
        Route("/actions/{id}", action.action),
        Route("/actions/{id}/{control}", controls.control, methods=["POST"]),
        Route("/login", controls.login_page, methods=["GET"]),
        Route("/login", controls.login, methods=["POST"]),
        Route("/logout", controls.logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(_Guarded)],
        exception_handlers={Refused: _refused},
    )
    app.state.backend = backend
    app.state.guard = Guard(settings)
    return app

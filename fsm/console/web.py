"""What every view shares: the templates, a page's common context, a form's fields, times.

Templates are Jinja2, autoescaped, shipped in the package (``templates/``), with the
console's CSS and JavaScript (``static/``): the pages need no network beyond this console.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

from fsm.cli.actions.render import absolute, relative
from fsm.console.guard import Guard, Refused

HERE = Path(__file__).resolve().parent
TEMPLATES = HERE / "templates"
STATIC = HERE / "static"

FORM_BYTES = 64 * 1024
"""The largest form a control accepts (a reason is a line, not a document)."""


def _duration(seconds: float | None) -> str:
    if seconds is None or not math.isfinite(seconds):
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _pretty(payload: str | None) -> str:
    """A stored checkpoint as indented JSON (as stored, when it is not JSON)."""
    if payload is None:
        return ""
    try:
        return json.dumps(json.loads(payload), indent=2, sort_keys=True)
    except ValueError:
        return payload


ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
ENV.filters["when"] = absolute
ENV.filters["duration"] = _duration
ENV.filters["pretty"] = _pretty
ENV.globals["relative"] = relative
ENV.globals["query"] = lambda **kw: urlencode({k: v for k, v in kw.items() if v}, doseq=True)


def page(
    request: Request, template: str, context: dict[str, Any], status: int = 200
) -> HTMLResponse:
    """A page: ``template`` with ``context`` and what every page shows (the controls' state)."""
    guard: Guard = request.app.state.guard
    settings = guard.settings
    common = {
        "request": request,
        "settings": settings,
        "controls": settings.allow_control,
        "logged_in": guard.logged_in(request),
        "token": settings.token if guard.logged_in(request) else "",
    }
    html = ENV.get_template(template).render({**common, **context})
    return HTMLResponse(html, status_code=status)


async def form_of(request: Request) -> dict[str, str]:
    """A urlencoded form's fields (the last of each name); refuses other bodies."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind not in ("application/x-www-form-urlencoded", ""):
        raise Refused(415, f"send a urlencoded form, not {kind}")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FORM_BYTES:
            raise Refused(413, f"form larger than {FORM_BYTES} bytes")
    try:
        return dict(parse_qsl(body.decode(), keep_blank_values=True))
    except UnicodeDecodeError:
        raise Refused(400, "the form is not UTF-8") from None

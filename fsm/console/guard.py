"""Who may read, and who may change something: the Host check, the token, the cross-site checks.

Reading needs only a request that names this console as its host: a page of another site
whose name was made to resolve to 127.0.0.1 (DNS rebinding) is refused, so it cannot read
the actions through the visitor's browser. Writing (a control, logging in) is served only
with ``--allow-control``, only to ``POST``, and only when the request

* carries the token printed at start, either in the ``X-FSM-Token`` header (scripts: a page
  of another site cannot set a header on a cross-site request without a preflight, which
  is never answered), or in the form's ``token`` field together with the session cookie that
  logging in with the token set (``HttpOnly``, ``SameSite=Strict``: a browser sends it with
  requests from this console's own pages only); and
* comes from this console's own pages: its ``Origin`` (or, without one, its ``Referer``) is
  this console, and ``Sec-Fetch-Site`` (sent by browsers) says same-origin.

No ``GET`` changes anything. Every refusal says why, in one line.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from starlette.requests import Request

from fsm.console.settings import Settings


class Refused(Exception):
    """A request refused: the HTTP status and why (one line, shown to the user)."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status
        self.why = why


def _same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a.encode(), b.encode())


class Guard:
    """The checks of one console (its settings: hosts, token, cookie name)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def check_host(self, request: Request) -> None:
        """Refuse a request for another host name than this console's (DNS rebinding)."""
        hosts = self.settings.hosts
        host = request.headers.get("host", "")
        if hosts is not None and host not in hosts:
            raise Refused(421, f"this console does not serve the host {host!r}")

    def logged_in(self, request: Request) -> bool:
        """Whether this browser holds the session cookie (it then gets the controls' forms)."""
        return self.settings.allow_control and _same(
            request.cookies.get(self.settings.cookie), self.settings.token
        )

    def check_origin(self, request: Request) -> None:
        """Refuse a request sent by a page of another site (or from no page of ours)."""
        own = f"{request.url.scheme}://{request.headers.get('host', '')}"
        origin = request.headers.get("origin")
        if origin is None:
            referer = request.headers.get("referer")
            if referer is not None:
                parts = urlsplit(referer)
                origin = f"{parts.scheme}://{parts.netloc}"
        if origin is not None and origin != own:
            raise Refused(403, f"cross-site request refused (from {origin}, not {own})")
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            raise Refused(403, f"cross-site request refused (Sec-Fetch-Site: {site})")

    def check_write(self, request: Request, form: dict[str, str]) -> None:
        """Everything a state-changing request must pass (see the module's docstring)."""
        if not self.settings.allow_control:
            raise Refused(403, "controls are off: start fsm console with --allow-control")
        if request.method != "POST":
            raise Refused(405, "only POST changes anything")
        self.check_origin(request)
        if _same(request.headers.get("x-fsm-token"), self.settings.token):
            return
        if not _same(form.get("token"), self.settings.token):
            raise Refused(403, "the console's token is missing or wrong (log in with it)")
        if not self.logged_in(request):
            raise Refused(403, "no session: log in with the console's token first")

    def check_login(self, request: Request, form: dict[str, str]) -> None:
        """Logging in: controls on, from our own page, with the right token."""
        if not self.settings.allow_control:
            raise Refused(403, "controls are off: start fsm console with --allow-control")
        self.check_origin(request)
        if not _same(form.get("token"), self.settings.token):
            raise Refused(403, "wrong token (fsm console printed it when it started)")

"""The listing: live and ended actions, filtered, newest first, a keyset page at a time.

The filters are `fsm.store.ActionFilter`'s (kind, state, status, error text, since) and a
page ends with the cursor of its last row (`Store.list_actions`), so the next page costs a
few index reads at a million rows as at ten. There is no page number: the "next" link
carries the cursor, and "first" starts again.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from fsm.cli.actions.listing import since as parse_since
from fsm.cli.common import UsageError
from fsm.console.backend import Backend
from fsm.console.web import page
from fsm.store import ActionFilter, ActionStatus, Cursor
from fsm.store.reports import STATUS_GROUPS

MAX_PAGE = 500
STATUS_CHOICES = (*STATUS_GROUPS, *(s.value for s in ActionStatus))


def _filter(request: Request, now: float) -> tuple[ActionFilter, list[str]]:
    """The filter the query string asks for, and what in it could not be used (each said
    on the page instead of failing it)."""
    q = request.query_params
    problems: list[str] = []
    statuses = tuple(s for s in q.getlist("status") if s)
    wrong = [s for s in statuses if s not in STATUS_CHOICES]
    if wrong:
        problems.append(f"unknown status {', '.join(wrong)} (one of: {', '.join(STATUS_CHOICES)})")
        statuses = tuple(s for s in statuses if s not in wrong)
    since = None
    if q.get("since"):
        try:
            since = parse_since(q["since"], now)
        except UsageError as exc:
            problems.append(str(exc))
    where = ActionFilter(
        kind=q.get("kind") or None,
        state=q.get("state") or None,
        statuses=statuses,
        since=since,
        error=q.get("error") or None,
    )
    return where, problems


def _limit(text: str | None, default: int) -> int:
    try:
        return max(1, min(MAX_PAGE, int(text))) if text else default
    except ValueError:
        return default


async def actions(request: Request) -> Response:
    backend: Backend = request.app.state.backend
    settings = request.app.state.guard.settings
    now = await backend.call(backend.now)
    where, problems = _filter(request, now)
    after = request.query_params.get("after") or None
    if after is not None:
        try:
            Cursor.parse(after)
        except ValueError as exc:
            problems.append(str(exc))
            after = None
    limit = _limit(request.query_params.get("limit"), settings.page)
    rows, now = await backend.call(backend.page, where, after, limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    kinds = sorted({*backend.graphs, *((where.kind and [where.kind]) or [])})
    context = {
        "rows": rows,
        "now": now,
        "where": where,
        "problems": problems,
        "after": after,
        "next": rows[-1].cursor.token if more and rows else None,
        "limit": limit,
        "kinds": kinds,
        "status_choices": STATUS_CHOICES,
        "since_text": request.query_params.get("since", ""),
    }
    return page(request, "actions.html", context)

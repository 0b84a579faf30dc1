"""The console's routes over plain HTTP (Starlette's test client, in this process), on SQLite
and PostgreSQL: what each page shows, the listing's filters and pages, and every refusal of
the guard (controls off, no token, another site, another host name)."""

from __future__ import annotations

import re

import pytest
from console_rig import LIVE_STATES, ORIGIN, Operator, console_client
from starlette.testclient import TestClient

import fsm
from fsm.store import ActionStatus


def ids_in(html: str) -> list[str]:
    return re.findall(r'<tr class="status-\w+" data-id="([^"]+)"', html)


def test_home_leads_to_the_kinds_with_their_totals(reader: TestClient) -> None:
    got = reader.get("/")
    assert got.status_code == 200 and got.url.path == "/kinds"
    row = re.search(r'<tr data-kind="booking">(.*?)</tr>', got.text, re.S)
    assert row is not None
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row[1], re.S)
    assert ">6<" in cells[1]  # live: 2 held, 4 reserving
    assert cells[2:5] == ["1", "1", "v1"]  # broken, quarantined, the code's version


@pytest.mark.needs_dot
def test_a_kinds_page_paints_its_live_counts_on_its_diagram(reader: TestClient) -> None:
    got = reader.get("/kinds/booking")
    assert got.status_code == 200
    svg = got.text[got.text.index("<svg") : got.text.index("</svg>")]
    assert ">reserving (4)</text>" in svg and ">held (2)</text>" in svg
    assert ">confirmed</text>" in svg  # no live action there: no count
    census = reader.get("/kinds/booking/census.json").json()
    assert census["live"] == 6
    assert {s: c["live"] for s, c in census["states"].items()} == LIVE_STATES
    reserving = census["states"]["reserving"]
    assert (reserving["broken"], reserving["quarantined"]) == (1, 1)
    assert reserving["waited"] >= 0 and reserving["late"] is False  # due for less than 60 s
    drawn = reader.get("/kinds/booking/diagram.svg")
    assert drawn.headers["content-type"] == "image/svg+xml"
    assert drawn.text.startswith("<svg") and ">reserving (4)</text>" in drawn.text
    # the states' table links each state to its live actions
    assert 'href="/actions?kind=booking&amp;state=held&amp;status=live"' in got.text


def test_an_unknown_kind_is_a_404_that_says_why(reader: TestClient) -> None:
    got = reader.get("/kinds/nope")
    assert got.status_code == 404 and "no kind &#39;nope&#39;" in got.text
    assert reader.get("/kinds/nope/census.json").json()["ok"] is False


def test_the_listing_filters(reader: TestClient) -> None:
    everything = ids_in(reader.get("/actions").text)
    assert sorted(everything) == [f"booking-r{i}" for i in range(7)]
    held = ids_in(reader.get("/actions", params={"state": "held"}).text)
    assert sorted(held) == ["booking-r0", "booking-r1"]
    trouble = reader.get("/actions", params=[("status", "broken"), ("status", "quarantined")])
    assert sorted(ids_in(trouble.text)) == ["booking-r2", "booking-r3"]
    assert "payload does not structure" in trouble.text  # the quarantine's reason
    assert "bad seat map" in trouble.text  # the broken step's error
    ended = ids_in(reader.get("/actions", params={"status": "ended"}).text)
    assert ended == ["booking-r5"]
    by_error = ids_in(reader.get("/actions", params={"error": "SEAT MAP"}).text)
    assert by_error == ["booking-r2"]
    assert ids_in(reader.get("/actions", params={"kind": "other"}).text) == []
    assert len(ids_in(reader.get("/actions", params={"since": "1h"}).text)) == 7


def test_the_listing_pages_by_keyset_without_overlap(reader: TestClient) -> None:
    seen: list[str] = []
    params: dict[str, str] = {"limit": "3"}
    pages = 0
    while True:
        got = reader.get("/actions", params=params)
        seen += ids_in(got.text)
        pages += 1
        found = re.search(r'href="/actions\?([^"]*)" id="next"', got.text)
        if found is None:
            break
        query = found[1].replace("&amp;", "&")
        params = dict(pair.split("=", 1) for pair in query.split("&"))
        assert params["limit"] == "3"
    assert pages == 3 and len(seen) == 7 and len(set(seen)) == 7
    first = reader.get("/actions", params={"limit": "3"}).text
    assert ids_in(first) == seen[:3] and 'id="first"' not in first


def test_bad_filters_are_said_on_the_page(reader: TestClient) -> None:
    got = reader.get("/actions", params={"status": "lost", "since": "soon", "after": "zz"})
    assert got.status_code == 200
    problems = re.findall(r'<p class="refused problem">(.*?)</p>', got.text)
    assert len(problems) == 3
    assert "unknown status lost" in problems[0]
    assert "--since: not a duration" in problems[1]
    assert "not a listing cursor" in problems[2]
    assert len(ids_in(got.text)) == 7  # the rest of the filter still applies


@pytest.mark.needs_dot
def test_an_actions_page_shows_its_history_checkpoint_and_path(reader: TestClient) -> None:
    got = reader.get("/actions/booking-r0")
    assert got.status_code == 200
    assert 'id="status">waiting<' in got.text and 'id="state">held<' in got.text
    history = got.text[got.text.index('id="history"') :]
    rows = re.findall(r"<tr class=\"outcome-(\w+)\">\s*<td>(\d+)</td>", history)
    assert rows == [("next", "0"), ("park", "1")]
    assert "Booking(ref=&#39;r0&#39;, held=True, released=False)" in got.text  # decoded
    assert "&#34;held&#34;: true" in got.text  # the checkpoint as stored
    assert "seat:r0" in got.text  # its resource
    svg = got.text[got.text.index("<svg") : got.text.index("</svg>")]
    assert 'fill="#40e0d0"' in svg  # the current state's fill
    assert 'stroke="#00607a" stroke-width="3"' in svg  # the edge its history took


def test_a_quarantined_and_a_broken_action_say_why(reader: TestClient) -> None:
    q = reader.get("/actions/booking-r3").text
    assert 'id="quarantine">quarantined: payload does not structure<' in q
    b = reader.get("/actions/booking-r2").text
    assert 'id="status">broken<' in b and "TypeError: bad seat map" in b


def test_an_ended_action_shows_its_outcome(reader: TestClient) -> None:
    got = reader.get("/actions/booking-r5").text
    assert 'id="status">done<' in got and "<strong>done</strong> in confirmed" in got
    assert 'id="controls"' not in got


def test_an_unknown_action_is_a_404(reader: TestClient) -> None:
    got = reader.get("/actions/nobody")
    assert got.status_code == 404 and "no action &#39;nobody&#39;" in got.text


def test_read_only_serves_no_control_and_refuses_every_write(
    reader: TestClient, bookings: str
) -> None:
    page = reader.get("/actions/booking-r2").text
    assert 'id="controls"' not in page and "read-only" in page
    for control in ("retry", "notify", "cancel", "stop", "unquarantine"):
        got = reader.post(
            f"/actions/booking-r2/{control}", data={"reason": "x"}, headers={"Origin": ORIGIN}
        )
        assert got.status_code == 403, control
        assert "controls are off: start fsm console with --allow-control" in got.text
    assert reader.post("/login", data={"token": "x"}).status_code == 403
    assert reader.get("/actions/booking-r2/retry").status_code == 405  # no GET writes
    store = fsm.open_store(bookings)
    try:
        report = store.inspect("booking-r2")
        assert report is not None and report.status is ActionStatus.BROKEN
        assert [s.via for s in report.history] == ["step"]  # nothing was recorded
    finally:
        store.close()


def test_read_only_opens_the_store_read_only(bookings: str) -> None:
    _, backend, _ = console_client(bookings, allow_control=False)
    assert backend.store.readonly and backend.controls is None
    backend.close()


def _status(url: str, action_id: str) -> tuple[str, str]:
    store = fsm.open_store(url)
    try:
        report = store.inspect(action_id)
        assert report is not None
        return report.status.value, report.state
    finally:
        store.close()


def test_a_control_needs_the_token(operator: Operator) -> None:
    c = operator.client
    got = c.post("/actions/booking-r2/retry", headers={"Origin": ORIGIN})
    assert got.status_code == 403 and "token is missing or wrong" in got.text
    got = c.post("/actions/booking-r2/retry", data={"token": "guess"}, headers={"Origin": ORIGIN})
    assert got.status_code == 403
    # the right token in the form, but no session cookie: a form another site could post
    got = c.post(
        "/actions/booking-r2/retry", data={"token": operator.token}, headers={"Origin": ORIGIN}
    )
    assert got.status_code == 403 and "log in with the console" in got.text
    assert _status(operator.url, "booking-r2") == ("broken", "reserving")


def test_retry_and_cancel_with_the_token_in_a_header(operator: Operator) -> None:
    c = operator.client
    headers = {"X-FSM-Token": operator.token, "Accept": "application/json"}
    got = c.post("/actions/booking-r2/retry", headers=headers)
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["ok"] and body["result"]["outcome"] == "due"
    assert "booking-r2: booking in reserving: due now" in body["message"]
    assert _status(operator.url, "booking-r2") == ("due", "reserving")
    got = c.post("/actions/booking-r0/cancel", data={"reason": "changed plans"}, headers=headers)
    assert got.status_code == 200 and got.json()["result"]["to_state"] == "releasing"
    assert _status(operator.url, "booking-r0") == ("due", "releasing")
    refused = c.post("/actions/booking-r1/cancel", headers=headers)
    assert refused.status_code == 400 and "a cancel needs a reason" in refused.json()["message"]
    missing = c.post("/actions/nobody/stop", headers=headers)
    assert missing.status_code == 404 and missing.json()["ok"] is False
    wrong = c.post("/actions/booking-r3/retry", headers=headers)  # quarantined: refused
    assert wrong.status_code == 409 and "quarantined" in wrong.json()["message"]
    back = c.post("/actions/booking-r3/unquarantine", headers=headers)
    assert back.status_code == 200 and _status(operator.url, "booking-r3")[0] == "due"


def test_a_logged_in_form_acts_and_records_who_and_why(operator: Operator) -> None:
    operator.login()
    c = operator.client
    page = c.get("/actions/booking-r1").text
    assert f'name="token" value="{operator.token}"' in page
    assert re.findall(r'data-control="(\w+)"', page) == ["retry", "notify", "cancel", "stop"]
    got = c.post(
        "/actions/booking-r1/stop",
        data={"token": operator.token, "reason": "duplicate", "by": "alice"},
        headers={"Origin": ORIGIN},
    )
    assert got.status_code == 200
    assert "stopped: removed, resources released; recorded: stopped by alice: duplicate" in got.text
    assert _status(operator.url, "booking-r1") == ("stopped", "held")


def test_cross_site_requests_are_refused_even_with_the_token(operator: Operator) -> None:
    operator.login()
    c = operator.client
    form = {"token": operator.token}
    for headers in (
        {"Origin": "http://evil.test"},
        {"Referer": "http://evil.test/page"},
        {"Origin": ORIGIN, "Sec-Fetch-Site": "cross-site"},
        {"X-FSM-Token": operator.token, "Origin": "http://127.0.0.1:9999"},
    ):
        got = c.post("/actions/booking-r2/retry", data=form, headers=headers)
        assert got.status_code == 403 and "cross-site request refused" in got.text, headers
    assert _status(operator.url, "booking-r2") == ("broken", "reserving")


def test_another_host_name_is_refused(reader: TestClient) -> None:
    """A page of another site whose name resolves to 127.0.0.1 (DNS rebinding) reads nothing."""
    got = reader.get("/kinds", headers={"Host": "evil.test:8080"})
    assert got.status_code == 421 and "does not serve the host" in got.text
    for host in ("localhost:8080", "127.0.0.1:8080", "[::1]:8080"):
        assert reader.get("/kinds", headers={"Host": host}).status_code == 200


def test_logging_in_needs_the_token_and_goes_back_only_to_this_console(
    operator: Operator,
) -> None:
    c = operator.client
    wrong = c.post("/login", data={"token": "nope"}, headers={"Origin": ORIGIN})
    assert wrong.status_code == 403 and "wrong token" in wrong.text
    cross = c.post("/login", data={"token": operator.token}, headers={"Origin": "http://x.test"})
    assert cross.status_code == 403
    for target, expected in (("/actions", "/actions"), ("//evil.test/", "/"), ("http://e/", "/")):
        got = c.post(
            "/login", data={"token": operator.token, "next": target},
            headers={"Origin": ORIGIN}, follow_redirects=False,
        )  # fmt: skip
        assert got.status_code == 303 and got.headers["location"] == expected
        cookie = got.headers["set-cookie"]
        assert (
            "HttpOnly" in cookie and "SameSite=strict" in cookie and "fsm_console_8080=" in cookie
        )
    out = c.post("/logout", headers={"Origin": ORIGIN}, follow_redirects=False)
    assert out.status_code == 303
    assert 'name="token"' not in c.get("/actions/booking-r1").text


def test_every_response_forbids_framing_and_foreign_content(reader: TestClient) -> None:
    for path in (
        "/kinds",
        "/actions",
        "/actions/booking-r0",
        "/nothing-here",
        "/static/console.js",
    ):
        got = reader.get(path)
        assert got.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in got.headers["content-security-policy"]
        assert "script-src 'self'" in got.headers["content-security-policy"]
    assert "http" not in reader.get("/static/console.css").text  # nothing fetched elsewhere


def test_one_census_serves_every_polling_page_for_its_freshness(bookings: str) -> None:
    from control_kinds import BookingKind

    from fsm.console import Backend

    store = fsm.open_store(bookings, readonly=True)
    shared = Backend(store, [BookingKind], controls=False, fresh=3600.0)
    try:
        before = shared.census()
        writer = fsm.open_store(bookings)
        writer.quarantine("booking-r4", "set aside by the test")
        writer.close()
        assert shared.census() is before  # served again, not read
        assert shared.kind("booking") == shared.kind("booking")
        shared.fresh = 0.0
        after = shared.census()
        assert after[("booking", "reserving")].quarantined == 2  # read anew
    finally:
        shared.close()

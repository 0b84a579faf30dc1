"""The console in a real browser: Debian's headless Chromium, driven by Playwright, against a
real ``fsm console --allow-control`` process over a SQLite file that the test moves (as a
worker would) while the page is open. Waits are on conditions (Playwright's ``expect``),
never on time. The screenshots of docs/console.md are taken here."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from console_rig import Served, drive, on_thread
from playwright.sync_api import expect

import fsm

pytestmark = [pytest.mark.needs_browser, pytest.mark.needs_dot, pytest.mark.slow]


def status_of(url: str, action_id: str) -> tuple[str, str]:
    found: list[tuple[str, str]] = []

    def read() -> None:
        store = fsm.open_store(url)
        try:
            report = store.inspect(action_id)
            assert report is not None
            found.append((report.status.value, report.state))
        finally:
            store.close()

    on_thread(read)
    return found[0]


def test_the_kind_diagram_shows_the_counts_and_follows_an_action_that_moves(
    served: Served, page: Any, screenshot: Callable[[Any, str], None]
) -> None:
    page.goto(served.url + "/kinds/booking")
    svg = page.locator("#diagram svg")
    expect(svg).to_contain_text("reserving (4)")
    expect(svg).to_contain_text("held (2)")
    # reserving holds a broken and a quarantined action: it stands out
    expect(page.locator("#diagram g.node.broken title")).to_have_text("reserving")
    expect(page.locator("#diagram g.node.quarantined title")).to_have_text("reserving")
    expect(page.locator("#states tr[data-state=reserving] .broken")).to_have_text("1")
    screenshot(page, "kind")
    page.evaluate("window.stillTheSamePage = true")
    drive(served.db, "booking-r4")  # reserving -> held, as a worker would
    expect(svg).to_contain_text("held (3)")
    expect(svg).to_contain_text("reserving (3)")
    expect(page.locator("#states tr[data-state=held] .live")).to_have_text("3")
    assert page.evaluate("window.stillTheSamePage") is True  # updated, not reloaded
    # a state of the diagram leads to its actions
    page.locator("#diagram g.node", has=page.locator("title", has_text="held")).click()
    expect(page).to_have_url(re.compile(r"/actions\?kind=booking&state=held&status=live$"))
    expect(page.locator("#listing tbody tr")).to_have_count(3)


def test_the_list_filters_and_pages(
    served: Served, page: Any, screenshot: Callable[[Any, str], None]
) -> None:
    rows = page.locator("#listing tbody tr[data-id]")
    page.goto(served.url + "/actions")
    expect(rows).to_have_count(7)
    screenshot(page, "actions")
    page.fill("#filters input[name=state]", "held")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(2)
    expect(page.locator("#listing")).to_contain_text("booking-r0")
    page.fill("#filters input[name=state]", "")
    page.check("#filters input[name=status][value=quarantined]")
    page.click("#filters button[type=submit]")
    expect(rows).to_have_count(1)
    quarantined = page.locator("tr[data-id='booking-r3']")
    expect(quarantined.locator(".status")).to_have_text("quarantined")
    expect(quarantined.locator("td.error")).to_have_text("payload does not structure")
    # pages of three, by cursor, none twice
    page.goto(served.url + "/actions?limit=3")
    seen: list[str] = []
    for expected in (3, 3, 1):
        expect(rows).to_have_count(expected)
        seen += [r.get_attribute("data-id") for r in rows.all()]
        if expected == 3:
            page.click("#next")
    expect(page.locator("#next")).to_have_count(0)
    assert sorted(seen) == [f"booking-r{i}" for i in range(7)]


def test_an_actions_page_shows_its_history_on_its_diagram(
    served: Served, page: Any, screenshot: Callable[[Any, str], None]
) -> None:
    page.goto(served.url + "/actions/booking-r0")
    expect(page.locator("#status")).to_have_text("waiting")
    history = page.locator("#history tbody tr")
    expect(history).to_have_count(2)
    expect(history.nth(0)).to_contain_text("reserving")
    expect(history.nth(1)).to_contain_text("park")
    expect(page.locator("#action-diagram svg")).to_contain_text("held")
    expect(page.locator("#decoded")).to_contain_text("Booking(ref='r0', held=True")
    screenshot(page, "action")


def test_retry_and_cancel_work_with_the_token_and_are_refused_without_it(
    served: Served, page: Any, screenshot: Callable[[Any, str], None]
) -> None:
    assert served.token is not None
    page.goto(served.url + "/actions/booking-r2")
    expect(page.locator("#controls")).to_contain_text("Log in with the console's token")
    expect(page.locator("form.control")).to_have_count(0)
    # a form sent without the token
    page.evaluate(
        """() => { const f = document.createElement('form'); f.method = 'post';
        f.action = '/actions/booking-r2/retry'; document.body.appendChild(f); f.submit(); }"""
    )
    expect(page.locator("#why")).to_contain_text("token is missing or wrong")
    assert status_of(served.db, "booking-r2") == ("broken", "reserving")
    # log in with the token, back to the action
    page.goto(served.url + "/login?next=/actions/booking-r2")
    page.fill("#login input[name=token]", served.token)
    page.click("#login button[type=submit]")
    expect(page).to_have_url(served.url + "/actions/booking-r2")
    expect(page.locator("form.control")).to_have_count(4)
    screenshot(page, "controls")
    # a control asks first: dismissed, nothing is sent
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("form[data-control=retry] button")
    expect(page.locator("#status")).to_have_text("broken")
    assert status_of(served.db, "booking-r2") == ("broken", "reserving")
    # confirmed: retried
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form[data-control=retry] button")
    expect(page.locator("#result")).to_contain_text("booking-r2: booking in reserving: due now")
    assert status_of(served.db, "booking-r2") == ("due", "reserving")
    # cancel, with its reason
    page.goto(served.url + "/actions/booking-r0")
    page.fill("form[data-control=cancel] input[name=reason]", "customer changed plans")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("form[data-control=cancel] button")
    expect(page.locator("#result")).to_contain_text("cancelled -> releasing")
    assert status_of(served.db, "booking-r0") == ("due", "releasing")
    page.goto(served.url + "/actions/booking-r0")
    expect(page.locator("#cause")).to_contain_text("cancelled by console: customer changed plans")


def test_another_site_cannot_act_even_with_the_token_and_a_logged_in_browser(
    served: Served, page: Any
) -> None:
    assert served.token is not None
    page.goto(served.url + "/login")
    page.fill("#login input[name=token]", served.token)
    page.click("#login button[type=submit]")
    expect(page.locator("#mode")).to_contain_text("controls on")
    attack = f"""<!doctype html><form id="f" method="post"
        action="{served.url}/actions/booking-r1/stop">
        <input type="hidden" name="token" value="{served.token}"></form>
        <script>document.getElementById('f').submit()</script>"""
    page.route(
        "http://evil.test/**",
        lambda route: route.fulfill(status=200, content_type="text/html", body=attack),
    )
    page.goto("http://evil.test/")
    expect(page).to_have_url(served.url + "/actions/booking-r1/stop")
    expect(page.locator("#why")).to_contain_text("cross-site request refused")
    assert status_of(served.db, "booking-r1") == ("waiting", "held")

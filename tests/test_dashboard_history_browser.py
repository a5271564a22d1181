"""The dashboard's history in a real browser (Debian's Chromium via Playwright) against the real
stack (issue #16, "On the dashboard"): events published across today (and yesterday) before the
page opens; the page's day since 00:00 KST equals the API's statement for today (opening and
closing) and its intraday curve equals the API's as-of answers; "change today" counts from the
server's opening; the events behind a figure, paged, sum to the figure and carry their source
coordinates; the statement tab shows the API's statement and its CSV link downloads the same rows.
"""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from serving.history import CSV_HEADERS
from streams.publisher import Publisher

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
KST = dt.timezone(dt.timedelta(hours=9))

ORG = "4281000"  # 평창군: no other test publishes to it on purpose
FUND = "agri_loan"
OLD_RECEIPTS = 110  # more than a page (100) of events behind the general account's figure

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


def event(account: str, kind: str, amount: int, at: dt.datetime, fy: int, **extra: object) -> bytes:
    ev: dict[str, object] = {
        "event_id": f"hb-{uuid.uuid4().hex}",
        "org_code": ORG,
        "account": account,
        "fiscal_year": fy,
        "kind": kind,
        "amount": amount,
        "occurred_at": at.isoformat(),
        "source": "test_dashboard_history_browser",
        **extra,
    }
    if kind == "receipt":
        ev.setdefault("category", "local_tax")
    if kind == "commitment":
        ev["commitment_id"] = f"hb-{uuid.uuid4().hex[:20]}"
    return orjson.dumps(ev)


def today_instants(now: dt.datetime) -> list[dt.datetime]:
    """00:30, 03:00 and 09:00 KST when they are past; else the same fractions of the day so far."""
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    fixed = [midnight + dt.timedelta(minutes=m) for m in (30, 180, 540)]
    if fixed[-1] < now - dt.timedelta(minutes=2):
        return fixed
    return [midnight + (now - midnight) * f for f in (0.2, 0.5, 0.8)]


async def api(stack, path: str, params: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=10, headers=stack.headers) as c:
        r = await c.get(f"{stack.api}{path}", params=params)
        assert r.status_code == 200, r.text[:300]
        return r.json()


@pytest.fixture(scope="module")
async def published(stack) -> dict[str, Any]:
    """Yesterday: a page and more of small receipts, a big receipt and a commitment; today: a
    receipt at each of three instants and a commitment now. Waits until the worker has them."""
    now = dt.datetime.now(KST)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if now - midnight < dt.timedelta(minutes=3):  # too close to 00:00 for distinct instants
        await asyncio.sleep((midnight + dt.timedelta(minutes=3) - now).total_seconds())
        now = dt.datetime.now(KST)
    fy = now.year
    yesterday = midnight - dt.timedelta(hours=9)  # 15:00 KST the day before
    if yesterday.year != fy:
        yesterday = midnight  # 1 January: the previous day is another fiscal year
    t1, t2, t3 = today_instants(now)
    raws = [
        event("general", "receipt", 1_000 + i, yesterday + dt.timedelta(seconds=i), fy)
        for i in range(OLD_RECEIPTS)
    ]
    raws += [
        event("general", "receipt", 5_000_000_000, yesterday + dt.timedelta(minutes=10), fy),
        event("general", "commitment", 1_000_000_000, yesterday + dt.timedelta(minutes=20), fy),
        event("general", "receipt", 120_000_000, t1, fy, category="grant"),
        event("general", "payment", 300_000_000, t2, fy),
        event(FUND, "receipt", 77_000_000, t3, fy, category="other"),
        event("general", "commitment", 45_000_000, now, fy),
    ]
    before = (await api(stack, f"/v1/positions/{ORG}"))["totals"]
    cash = (
        sum(1_000 + i for i in range(OLD_RECEIPTS)) + 5_000_000_000 + 120_000_000 - 300_000_000 + 77_000_000
    )
    committed = 1_000_000_000 + 45_000_000
    async with Publisher(stack.settings) as pub:
        await pub.send_many(raws)
    want = (before["cash"] + cash, before["committed"] + committed)
    deadline = time.monotonic() + 30
    while True:
        t = (await api(stack, f"/v1/positions/{ORG}"))["totals"]
        if (t["cash"], t["committed"]) == want:
            break
        assert time.monotonic() < deadline, f"positions never reached {want}: {t}"
        await asyncio.sleep(0.1)
    return {"fy": fy, "day": now.date().isoformat(), "instants": [t1, t2, t3, now]}


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser, stack) -> AsyncIterator[Any]:
    """A page signed in (through the dashboard's own form) with a national read-only token."""
    ctx = await browser.new_context(
        viewport={"width": 1440, "height": 1000},
        locale="ko-KR",
        timezone_id="Asia/Seoul",
        device_scale_factor=1,
        accept_downloads=True,
    )
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(15_000)
    await pg.goto(f"{stack.api}/dashboard/")
    await pg.fill("#token", stack.token("national"))
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_function("() => window.cashpos.session !== null")
    yield pg
    await ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def krw_of(pg, selector: str) -> int:
    return int(await pg.get_attribute(selector, "data-krw"))


async def open_government(pg, stack) -> None:
    await pg.goto(f"{stack.api}/dashboard/#/gov/{ORG}")
    await pg.wait_for_selector('#gov-accounts tbody tr[data-account="general"][data-fy]')
    await pg.wait_for_selector("#day-open-available[data-krw]")
    await pg.wait_for_selector("#gov-kpi-change[data-krw]")


async def test_day_since_midnight_equals_the_statement(stack, published, page) -> None:
    await open_government(page, stack)
    day = published["day"]
    rows = (await api(stack, f"/v1/statements/{ORG}", {"from": day, "to": day}))["rows"]
    assert rows and all(r["date"] == day for r in rows)
    opening_cash = sum(r["opening_cash"] for r in rows)
    opening_available = sum(r["opening_cash"] - r["opening_committed"] for r in rows)
    closing_cash = sum(r["closing_cash"] for r in rows)
    closing_available = sum(r["closing_available"] for r in rows)
    assert opening_available != closing_available  # today's events moved it

    assert await krw_of(page, "#day-open-cash") == opening_cash
    assert await krw_of(page, "#day-open-available") == opening_available
    assert await krw_of(page, "#day-now-cash") == closing_cash
    assert await krw_of(page, "#day-now-available") == closing_available
    assert await krw_of(page, "#gov-kpi-change") == closing_available - opening_available
    assert await krw_of(page, "#gov-kpi-available") == closing_available

    # The curve: 00:00 is the statement's opening, each sampled instant the API's as-of answer,
    # the last point the live position; it moves during the day.
    curve = await page.evaluate("() => window.cashpos.dayCurve")
    assert curve["day"] == day
    pts = curve["points"]
    midnight = dt.datetime.fromisoformat(f"{day}T00:00:00+09:00")
    assert pts[0]["ms"] == int(midnight.timestamp() * 1000)
    assert (int(pts[0]["cash"]), int(pts[0]["available"])) == (opening_cash, opening_available)
    assert pts[-1]["now"] and (int(pts[-1]["cash"]), int(pts[-1]["available"])) == (
        closing_cash,
        closing_available,
    )
    samples = pts[1:-1]
    elapsed = dt.datetime.now(KST) - midnight
    assert len(samples) >= elapsed // dt.timedelta(minutes=15) - 1
    for p in samples:
        assert p["ms"] % (15 * 60_000) == 0
        at = dt.datetime.fromtimestamp(p["ms"] / 1000, KST).isoformat()
        totals = (await api(stack, f"/v1/positions/{ORG}", {"as_of": at}))["totals"]
        assert (int(p["cash"]), int(p["available"])) == (totals["cash"], totals["available"]), at
    first_event_ms = published["instants"][0].timestamp() * 1000
    before_first = [p for p in samples if p["ms"] < first_event_ms]
    after_first = [p for p in samples if p["ms"] >= first_event_ms]
    if before_first and after_first:
        assert before_first[-1]["cash"] != after_first[0]["cash"]
    assert await page.locator("#gov-chart canvas").count() >= 1

    # The opening is clickable too: its accounts, then the events up to 00:00 of one of them.
    await page.click("#day-open-cash")
    await page.wait_for_selector('#events-panel[data-kind="breakdown"]')
    parts = await page.eval_on_selector_all("#breakdown tbody tr", "els => els.map(e => e.dataset.krw)")
    assert sum(int(p) for p in parts) == opening_cash
    gen = next(r for r in rows if r["account"] == "general")
    await page.click(f'#breakdown tbody tr[data-account="general"][data-fy="{gen["fiscal_year"]}"]')
    await page.wait_for_selector('#events-panel[data-kind="events"]')
    lines = await read_events(page)
    assert sum(int(x["cash"]) for x in lines) == gen["opening_cash"]
    assert all(dt.datetime.fromisoformat(x["occurred"]) < midnight for x in lines)
    await page.click("#events-close")
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-history-day.png"), full_page=True)

    # The 30-day view: each day's closing summed over the accounts, from the statement.
    await page.click("#chart-month")
    await page.wait_for_selector('#gov-chart[data-mode="month"] canvas')
    first = (midnight.date() - dt.timedelta(days=29)).isoformat()
    month = (await api(stack, f"/v1/statements/{ORG}", {"from": first, "to": day}))["rows"]
    want: dict[str, int] = {}
    for r in month:
        want[r["date"]] = want.get(r["date"], 0) + r["closing_cash"]
    assert want[day] == closing_cash
    await page.screenshot(path=str(ARTIFACTS / "dashboard-history-30days.png"))


async def read_events(page) -> list[dict[str, str]]:
    """Every page of the open events panel (clicking 'more' until there is no next)."""
    while True:
        await page.wait_for_function(
            "() => { const f = document.querySelector('#events-foot');"
            " return f && (f.dataset.complete === '1' || (f.querySelector('#events-more') && !f.querySelector('#events-more').disabled)); }"
        )
        more = page.locator("#events-more")
        if await more.count() == 0:
            break
        await more.click()
    return await page.eval_on_selector_all("#events-table tbody tr", "els => els.map(e => ({...e.dataset}))")


async def test_events_behind_a_figure_sum_to_it(stack, published, page) -> None:
    await open_government(page, stack)
    fy = published["fy"]
    row = f'#gov-accounts tbody tr[data-account="general"][data-fy="{fy}"]'
    for field, effect in (("cash", "cash"), ("committed", "committed")):
        figure = await krw_of(page, f'{row} td[data-field="{field}"]')
        await page.click(f'{row} td[data-field="{field}"]')
        await page.wait_for_selector('#events-panel[data-kind="events"]')
        lines = await read_events(page)
        total = int(await page.get_attribute("#events-count", "data-total"))
        assert len(lines) == total > 100  # more than one page
        assert sum(int(x[effect]) for x in lines) == figure
        assert int(lines[-1][f"{effect}After"]) == figure  # data-cash-after, the running balance
        assert await krw_of(page, f"#events-sum-{effect}") == figure
        # each line names where it came from, as the API says
        api_lines: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"fiscal_year": str(fy), "limit": "1000"} | ({"cursor": cursor} if cursor else {})
            body = await api(stack, f"/v1/positions/{ORG}/general/events", params)
            api_lines += body["lines"]
            cursor = body["next"]
            if not cursor:
                break
        assert [x["eventId"] for x in lines] == [x["event_id"] or "" for x in api_lines]
        for shown, want in zip(lines, api_lines, strict=True):
            assert (shown["topic"], int(shown["partition"]), int(shown["offset"])) == (
                want["source"]["topic"],
                want["source"]["partition"],
                want["source"]["offset"],
            )
        await page.click("#events-close")
        await page.wait_for_selector("#events-panel", state="hidden")

    # A total opens its breakdown by account × fiscal year, each line to its events.
    cash = await krw_of(page, "#gov-kpi-cash")
    await page.click("#gov-kpi-cash")
    await page.wait_for_selector('#events-panel[data-kind="breakdown"]')
    parts = await page.eval_on_selector_all(
        "#breakdown tbody tr", "els => els.map(e => BigInt(e.dataset.krw).toString())"
    )
    assert sum(int(p) for p in parts) == cash
    fund = f'#breakdown tbody tr[data-account="{FUND}"][data-fy="{fy}"]'
    fund_cash = await krw_of(page, fund)
    await page.click(fund)
    await page.wait_for_selector('#events-panel[data-kind="events"]')
    lines = await read_events(page)
    assert sum(int(x["cash"]) for x in lines) == fund_cash
    await page.screenshot(path=str(ARTIFACTS / "dashboard-history-events.png"))


async def test_statement_tab_and_its_csv(stack, published, page, tmp_path) -> None:
    await open_government(page, stack)
    await page.click("#tab-statement")
    await page.wait_for_selector("#stmt-table")
    day = dt.date.fromisoformat(published["day"])
    first = (day - dt.timedelta(days=6)).isoformat()
    assert await page.input_value("#stmt-from") == first
    assert await page.input_value("#stmt-to") == day.isoformat()
    body = await api(stack, f"/v1/statements/{ORG}", {"from": first, "to": day.isoformat()})
    rows = body["rows"]
    assert rows
    shown_cols = await page.eval_on_selector_all(
        "#stmt-table thead th[data-col]", "els => els.map(e => e.dataset.col)"
    )
    assert {"opening_cash", "closing_cash", "closing_available"} <= set(shown_cols)
    for r in rows:
        tr = f'#stmt-table tbody tr[data-date="{r["date"]}"][data-account="{r["account"]}"][data-fy="{r["fiscal_year"]}"]'
        for c in shown_cols:
            if c == "events":
                continue
            assert await krw_of(page, f'{tr} td[data-col="{c}"]') == r[c], (r["date"], r["account"], c)
    # the day's total row sums the accounts
    today = [r for r in rows if r["date"] == day.isoformat()]
    tot = f'#stmt-table tr.day-total[data-date="{day.isoformat()}"] td[data-col="closing_cash"]'
    assert await krw_of(page, tot) == sum(r["closing_cash"] for r in today)

    # A closing figure of the statement opens the events up to that day's end, summing to it.
    gen = next(r for r in today if r["account"] == "general")
    cell = f'#stmt-table tbody tr[data-date="{day.isoformat()}"][data-account="general"][data-fy="{gen["fiscal_year"]}"] td[data-col="closing_cash"]'
    await page.click(cell)
    lines = await read_events(page)
    assert sum(int(x["cash"]) for x in lines) == gen["closing_cash"]
    await page.click("#events-close")

    async with page.expect_download() as info:
        await page.click("#stmt-csv")
    download = await info.value
    path = tmp_path / "statement.csv"
    await download.save_as(path)
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")
    table = list(csv.reader(io.StringIO(raw.decode("utf-8-sig"))))
    assert table[0] == list(CSV_HEADERS.values())
    want = [[str(r[k]) for k in CSV_HEADERS] for r in rows]
    assert table[1:] == want
    await page.screenshot(path=str(ARTIFACTS / "dashboard-history-statement.png"), full_page=True)

    # A range the API refuses says why (422 invalid_request, at most 400 days).
    await page.fill("#stmt-from", (day - dt.timedelta(days=500)).isoformat())
    await page.click("#stmt-form button[type=submit]")
    assert "400" in await page.inner_text("#stmt-error")
    await page.fill("#stmt-from", first)
    await page.click("#stmt-form button[type=submit]")
    await page.wait_for_selector("#stmt-table")

    # English, then back: the tab stays, with its rows.
    await page.click("#lang")
    assert await page.inner_text("#tab-statement") == "Statement"
    assert await page.inner_text("#stmt-csv") == "Download CSV"
    assert await page.locator("#stmt-table tbody tr[data-account]").count() == len(rows)
    await page.click("#lang")
    assert await page.inner_text("#tab-statement") == "일계표"

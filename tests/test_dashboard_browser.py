"""The live dashboard in a real browser (Debian's Chromium via Playwright) against the real stack:
broker, worker, Redis and API processes (the ``stack`` fixture).

Checks that the national page shows the numbers of /v1/summary, that an event published during the
test is on the page within 2 s, that search, sort and drill-down work, and that the page resumes
after its connection drops (the API process is killed and restarted; and the EventSource is
closed from page JS) without missing an update published meanwhile. Screenshots of both views go
to ``artifacts/``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from cashpos.refdata import governments
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

SEOUL, JONGNO, JUNGGU_SEOUL, BUSAN = "6110000", "3000000", "3010000", "6260000"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


def event(
    org: str, account: str, kind: str, amount: int, at: dt.datetime | None = None, **extra: object
) -> bytes:
    now = at or dt.datetime.now(KST)
    ev: dict[str, object] = {
        "event_id": f"ui-{uuid.uuid4().hex}",
        "org_code": org,
        "account": account,
        "fiscal_year": now.year,
        "kind": kind,
        "amount": amount,
        "occurred_at": now.isoformat(),
        "source": "test_dashboard_browser",
        **extra,
    }
    if kind == "receipt":
        ev.setdefault("category", "local_tax")
    if kind == "commitment":
        ev["commitment_id"] = f"c-{uuid.uuid4().hex[:20]}"
    return orjson.dumps(ev)


def seed_events() -> tuple[list[bytes], int, int]:
    """Plausible balances for all 243 governments (metropolitan ~1–4조, basic ~300–3,000억), some
    heavily committed, 중구 (Seoul) over-committed. Returns events, total receipts, commitments."""
    rnd = random.Random(243)
    out: list[bytes] = []
    cash = committed = 0
    for org, g in governments().items():
        scale = (10**12 * rnd.uniform(0.8, 4)) if g.level == "metropolitan" else 10**11 * rnd.uniform(0.3, 3)
        if org == SEOUL:
            scale = 8 * 10**12
        fund = next(a.code for a in g.accounts if a.type == "fund")
        custody = next(a.code for a in g.accounts if a.type == "custody")
        parts = [("general", int(scale * 0.55)), (fund, int(scale * 0.2)), (custody, int(scale * 0.05))]
        for account, amount in parts:
            out.append(
                event(
                    org, account, "receipt", amount, category="other" if account != "general" else "local_tax"
                )
            )
            cash += amount
        r = rnd.random()
        ratio = 1.8 if org == JUNGGU_SEOUL else 0.8 if r < 0.1 else 0.5 if r < 0.3 else rnd.uniform(0.05, 0.3)
        c = int(scale * 0.55 * ratio)
        out.append(event(org, "general", "commitment", c))
        committed += c
    # Yesterday's money for two governments, so that today's opening is not zero ("change today"
    # must subtract it); none on 1 January (yesterday is another fiscal year).
    midnight = dt.datetime.now(KST).replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = midnight - dt.timedelta(hours=9)  # 15:00 KST the day before
    if yesterday.year == midnight.year:
        for org in (JONGNO, SEOUL):
            out.append(event(org, "general", "receipt", 500_000_000_000, at=yesterday))
            out.append(event(org, "general", "commitment", 200_000_000_000, at=yesterday))
            cash += 500_000_000_000
            committed += 200_000_000_000
    return out, cash, committed


async def get_json(stack, path: str, timeout: float, params: dict[str, str] | None = None) -> Any:
    """GET an API path as the national reader, without blocking the event loop (the browser's)."""
    async with httpx.AsyncClient(timeout=timeout, headers=stack.headers) as c:
        return (await c.get(f"{stack.api}{path}", params=params)).json()


async def wait_summary(stack, pred, timeout: float = 30) -> dict:
    api = stack.api
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5, headers=stack.headers) as c:
        while True:
            r = await c.get(f"{api}/v1/summary")
            if r.status_code == 200 and pred(r.json()):
                return r.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"summary never matched: {r.text[:300]}")
            await asyncio.sleep(0.1)


async def opening_summary(stack, timeout: float = 30) -> tuple[str, dict]:
    """Today's opening from the API: ``/v1/summary?as_of=`` at 00:00 KST − 1 ms (as_of is
    inclusive; the statement's opening is every event before 00:00), retried while a worker
    cannot answer (503). Returns (today's date, the body)."""
    now = dt.datetime.now(KST)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    at = (midnight - dt.timedelta(milliseconds=1)).isoformat(timespec="milliseconds")
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=10, headers=stack.headers) as c:
        while True:
            r = await c.get(f"{stack.api}/v1/summary", params={"as_of": at})
            if r.status_code == 200:
                return midnight.date().isoformat(), r.json()
            if time.monotonic() > deadline:
                raise TimeoutError(f"no opening: {r.status_code} {r.text[:300]}")
            await asyncio.sleep(0.5)


def changes(live: dict, opening: dict) -> dict[str, int]:
    """Change today per government: live available − the opening's (the API's figures)."""
    open_of = {g["org_code"]: g["available"] for g in opening["governments"]}
    return {g["org_code"]: g["available"] - open_of[g["org_code"]] for g in live["governments"]}


@pytest.fixture(scope="module")
async def publisher(stack) -> AsyncIterator[Publisher]:
    async with Publisher(stack.settings) as pub:
        yield pub


@pytest.fixture(scope="module")
async def seeded(stack, publisher) -> dict:
    before = (await get_json(stack, "/v1/summary", 10))["national"]
    events, cash, committed = seed_events()
    await publisher.send_many(events)
    want = (before["cash"] + cash, before["committed"] + committed)
    return await wait_summary(stack, lambda s: (s["national"]["cash"], s["national"]["committed"]) == want)


@pytest.fixture(scope="module")
async def browser():
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


async def sign_in(pg, api: str, token: str) -> None:
    """Through the dashboard's own sign-in form, as a person would."""
    await pg.goto(f"{api}/dashboard/")
    await pg.fill("#token", token)
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_function("() => window.cashpos.session !== null")


@pytest.fixture
async def anon_page(browser):
    ctx = await browser.new_context(
        viewport={"width": 1440, "height": 1000},
        locale="ko-KR",
        timezone_id="Asia/Seoul",
        device_scale_factor=1,
    )
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(10_000)
    yield pg
    await ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


@pytest.fixture
async def page(anon_page, stack):
    """A page signed in with a national (read-only, all governments) token."""
    await sign_in(anon_page, stack.api, stack.token("national"))
    return anon_page


async def open_national(page, api: str) -> None:
    await page.goto(f"{api}/dashboard/")
    await page.wait_for_selector(f'.gov[data-org="{SEOUL}"] [data-field="available"][data-krw]')
    await wait_live(page)


async def wait_live(page) -> None:
    """The stream is open and its opening snapshot has been applied."""
    await page.wait_for_function("() => window.cashpos.live && window.cashpos.live.lastPositionsAt > 0")
    await page.wait_for_selector('#conn[data-state="live"]')


async def krw_of(page, selector: str) -> int:
    return int(await page.get_attribute(selector, "data-krw"))


def tile(org: str, field: str) -> str:
    return f'.gov[data-org="{org}"] [data-field="{field}"]'


async def test_national_view_shows_summary_numbers(stack, seeded, page) -> None:
    await open_national(page, stack.api)
    summary = await get_json(stack, "/v1/summary", 10)
    rows = {g["org_code"]: g for g in summary["governments"]}
    assert await page.locator("section.prov:not(.flat)").count() == 17
    assert await page.locator(".gov[data-org]").count() == 243
    for org in (SEOUL, JONGNO, JUNGGU_SEOUL, BUSAN):
        for field in ("cash", "committed", "available"):
            assert await krw_of(page, tile(org, field)) == rows[org][field], (org, field)
    for field in ("cash", "committed", "available", "spendable"):
        assert await krw_of(page, f"#kpi-{field}") == summary["national"][field], field
    prov = next(p for p in summary["provinces"] if p["province_code"] == SEOUL)
    head = f'section.prov[data-province="{SEOUL}"] .prov-totals'
    assert await krw_of(page, f'{head} [data-field="available"]') == prov["available"]

    # Korean first: units and labels; exact integer KRW on hover.
    text = await page.locator(tile(SEOUL, "available")).inner_text()
    assert re.fullmatch(r"−?[\d,]+조( [\d,]+억)?원|−?[\d,]+억원", text), text
    title = await page.get_attribute(tile(SEOUL, "available"), "title")
    assert title == f"{rows[SEOUL]['available']:,}원"
    assert "서울특별시" in await page.locator(f'section.prov[data-province="{SEOUL}"] h2').inner_text()
    assert await page.locator("#kpi-cash").inner_text() != "—"
    # Colour: over-committed 중구 is red; freshness is shown in Korean.
    assert "band-neg" in (await page.get_attribute(f'.gov[data-org="{JUNGGU_SEOUL}"]', "class") or "")
    assert re.fullmatch(r"갱신 \d+\.\d초 전", await page.locator("#fresh").inner_text())
    assert "KST" in await page.locator("#clock").inner_text()

    # Money beyond 2^53 stays exact (BigInt), and the Korean units read as a person writes them.
    got = await page.evaluate("""async () => {
        const f = await import('./js/format.js');
        const big = f.parseJSON('{"a": 9007199254740993, "b": [12345678901234567], "c": 5}');
        return [typeof big.a, big.a.toString(), big.b[0].toString(), big.c,
                f.krwKo(1234500000000n), f.krwKo(1000000000000n), f.krwKo(-234500000000),
                f.krwKo(32100000), f.krwKo(12345678901234567n), f.krwExact(12345678901234567n, 'ko')];
    }""")
    assert got == [
        "bigint",
        "9007199254740993",
        "12345678901234567",
        5,
        "1조 2,345억원",
        "1조원",
        "−2,345억원",
        "3,210만원",
        "12,345조 6,789억원",
        "12,345,678,901,234,567원",
    ]

    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-national.png"))
    await page.screenshot(path=str(ARTIFACTS / "dashboard-national-full.png"), full_page=True)


async def test_published_event_shows_within_two_seconds(stack, seeded, page, publisher) -> None:
    await open_national(page, stack.api)
    before = await krw_of(page, tile(JONGNO, "cash"))
    national = await krw_of(page, "#kpi-cash")
    amount = 123_456_789
    t0 = time.monotonic()
    await publisher.send(event(JONGNO, "general", "receipt", amount))
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.dataset.krw === want",
        arg=[tile(JONGNO, "cash"), str(before + amount)],
        timeout=2000,
    )
    elapsed = time.monotonic() - t0
    assert elapsed < 2.0, elapsed
    assert await krw_of(page, "#kpi-cash") == national + amount
    print(f"event -> page: {elapsed:.3f}s")

    # Change today = live − today's opening, from the API's /v1/summary?as_of= (one read): per
    # tile, per province and for the nation.
    day, opening = await opening_summary(stack)
    live = await get_json(stack, "/v1/summary", 10)
    assert live["national"]["cash"] == national + amount  # nothing else moved meanwhile
    want = changes(live, opening)
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.dataset.krw === want",
        arg=[tile(JONGNO, "change"), str(want[JONGNO])],
        timeout=10_000,
    )
    assert want[JONGNO] >= amount  # the event is today's: it is in the change, not the opening
    open_jongno = next(g for g in opening["governments"] if g["org_code"] == JONGNO)["available"]
    if not day.endswith("-01-01"):  # yesterday's seed is in the opening, so the change is not "live"
        assert open_jongno >= 300_000_000_000
    for org in (SEOUL, JUNGGU_SEOUL, BUSAN):
        assert await krw_of(page, tile(org, "change")) == want[org], org
    n_open = opening["national"]["available"]
    assert await krw_of(page, "#kpi-change") == live["national"]["available"] - n_open
    p_open = next(p for p in opening["provinces"] if p["province_code"] == SEOUL)["available"]
    p_live = next(p for p in live["provinces"] if p["province_code"] == SEOUL)["available"]
    head = f'section.prov[data-province="{SEOUL}"] .prov-totals'
    assert await krw_of(page, f'{head} [data-field="change"]') == p_live - p_open
    # The same opening as the government view's (its statement's): Σ opening cash − committed.
    rows = (await get_json(stack, f"/v1/statements/{JONGNO}", 10, {"from": day, "to": day}))["rows"]
    stmt_open = sum(r["opening_cash"] - r["opening_committed"] for r in rows)
    assert stmt_open == open_jongno


async def test_change_today_blank_while_the_opening_is_refused(stack, seeded, page) -> None:
    """A refused opening read (503 history_unavailable) shows no change, not a guess; the page
    reads it again later and then shows it."""
    refused: list[str] = []

    async def refuse(route) -> None:
        refused.append(route.request.url)
        await route.fulfill(
            status=503,
            headers={"Content-Type": "application/problem+json", "Retry-After": "2"},
            body=orjson.dumps({"type": "about:blank", "title": "history_unavailable", "status": 503}),
        )

    as_of_reads = re.compile(r".*/v1/summary\?as_of=.*")
    await page.route(as_of_reads, refuse)
    await open_national(page, stack.api)
    deadline = time.monotonic() + 10
    while not refused:
        assert time.monotonic() < deadline, "the page never read today's opening"
        await asyncio.sleep(0.1)
    await page.wait_for_timeout(200)  # the refusal reaches the page
    assert await page.locator(f"{tile(JONGNO, 'change')}[data-krw]").count() == 0
    assert await page.inner_text(tile(JONGNO, "change")) == ""
    assert await page.inner_text("#kpi-change") == "—"
    assert await page.get_attribute("#kpi-change", "data-krw") is None
    await page.unroute(as_of_reads)
    _, opening = await opening_summary(stack)
    want = changes(await get_json(stack, "/v1/summary", 10), opening)
    await page.wait_for_function(
        "([sel, want]) => document.querySelector(sel)?.dataset.krw === want",
        arg=[tile(JONGNO, "change"), str(want[JONGNO])],
        timeout=10_000,
    )
    assert refused and all("as_of=" in u for u in refused)


async def test_search_sort_and_drill_down(stack, seeded, page, publisher) -> None:
    await open_national(page, stack.api)
    visible = ".groups .gov[data-org]"

    await page.fill("#search", "종로")
    assert await page.eval_on_selector_all(visible, "els => els.map(e => e.dataset.org)") == [JONGNO]
    await page.fill("#search", BUSAN)
    assert await page.eval_on_selector_all(visible, "els => els.map(e => e.dataset.org)") == [BUSAN]
    await page.fill("#search", "중구")
    names = await page.eval_on_selector_all(f"{visible} .gov-name", "els => els.map(e => e.textContent)")
    assert len(names) >= 5 and set(names) == {"중구"}  # names repeat across provinces
    await page.fill("#search", "")
    assert await page.locator(visible).count() == 243

    async def values(scope: str, field: str) -> list[int]:
        return [
            int(v)
            for v in await page.eval_on_selector_all(
                f'{scope} .gov [data-field="{field}"]', "els => els.map(e => e.dataset.krw)"
            )
        ]

    for field in ("available", "cash", "committed"):
        await page.select_option("#sort", field)
        seoul = await values(f'section.prov[data-province="{SEOUL}"]', field)
        assert len(seoul) == 26 and seoul == sorted(seoul, reverse=True), field
    await page.click("#sort-dir")
    seoul = await values(f'section.prov[data-province="{SEOUL}"]', "committed")
    assert seoul == sorted(seoul)
    await page.click("#sort-dir")
    await page.select_option("#sort", "available")
    await page.uncheck("#group")  # one national ranking
    flat = await values("section.prov.flat", "available")
    assert len(flat) == 243 and flat == sorted(flat, reverse=True)
    assert await page.get_attribute(".groups .gov[data-org]:last-child", "data-org") == JUNGGU_SEOUL
    await page.check("#group")

    # Sort by change today: the government that just received money comes first (its province
    # first, then it). The amount is the API's largest other change (government and province)
    # plus 1조, so that only this receipt can put it first.
    _, opening = await opening_summary(stack)
    change = changes(await get_json(stack, "/v1/summary", 10), opening)
    prov_of = {o: g.province_code for o, g in governments().items()}
    by_prov: dict[str, int] = {}
    for org, d in change.items():
        by_prov[prov_of[org]] = by_prov.get(prov_of[org], 0) + d
    amount = 10**12 + max(
        max(d for o, d in change.items() if o != BUSAN) - change[BUSAN],
        max(d for p, d in by_prov.items() if p != prov_of[BUSAN]) - by_prov[prov_of[BUSAN]],
        0,
    )
    await page.select_option("#sort", "change")
    await publisher.send(event(BUSAN, "general", "receipt", amount))
    await page.wait_for_function(
        "org => document.querySelector('.groups .gov[data-org]')?.dataset.org === org",
        arg=BUSAN,
        timeout=5000,
    )
    assert await krw_of(page, tile(BUSAN, "change")) == change[BUSAN] + amount
    await page.uncheck("#group")  # one national ranking by change: descending
    flat = await values("section.prov.flat", "change")
    assert len(flat) == 243 and flat == sorted(flat, reverse=True) and flat[0] == change[BUSAN] + amount
    await page.check("#group")
    await page.select_option("#sort", "code")

    # Drill down into 종로구.
    await page.click(f'.gov[data-org="{JONGNO}"]')
    await page.wait_for_url(re.compile(rf"#/gov/{JONGNO}$"))
    await page.wait_for_selector('#gov-accounts tbody tr[data-account="general"][data-fy]')
    await wait_live(page)
    pos = await get_json(stack, f"/v1/positions/{JONGNO}", 5)
    for field in ("cash", "committed", "available", "spendable", "restricted"):
        assert await krw_of(page, f"#gov-kpi-{field}") == pos["totals"][field], field
    gen = next(a for a in pos["accounts"] if a["account"] == "general")
    row = f'#gov-accounts tbody tr[data-account="general"][data-fy="{gen["fiscal_year"]}"]'
    assert await krw_of(page, f'{row} [data-field="available"]') == gen["available"]
    chart_accounts = (await get_json(stack, f"/v1/governments/{JONGNO}", 5))["accounts"]
    assert await page.locator("#gov-accounts tbody tr").count() >= len(chart_accounts)
    # The panel shows the government's open alerts as the API lists them (which depend on the
    # date: within 30 days of 31 December open commitments raise a year-end notice).
    open_alerts = (await get_json(stack, "/v1/alerts", 5, {"org": JONGNO}))["alerts"]
    panel = await page.locator("#gov-alerts").inner_text()
    if open_alerts:
        assert all(f"{a['account']} {a['fiscal_year']}" in panel for a in open_alerts), panel
    else:
        assert "경보 없음" in panel
    # The projected-shortfall panel shows the server's projection (the alert rule), never a guess.
    shortfall = await page.locator("#gov-shortfall").inner_text()
    projected = sorted(a["projected_date"] for a in open_alerts if a["rule"] == "projected_shortfall")
    if projected:
        assert projected[0] in shortfall, shortfall
    else:
        assert "예상되는 부족이 없습니다" in shortfall or "이미 가용잔액이 부족합니다" in shortfall, shortfall
    assert "연결 예정" not in await page.locator("#gov-shortfall-panel").inner_text()
    assert await page.locator("#gov-chart canvas").count() >= 1
    assert "종로구" in await page.locator("#crumbs").inner_text()

    # A commitment arrives live: the row, the KPIs and the feed follow.
    for amount in (55_000_000, 7_000_000):
        await publisher.send(event(JONGNO, "general", "commitment", amount))
        want = gen["committed"] + amount
        await page.wait_for_function(
            "([sel, want]) => document.querySelector(sel)?.dataset.krw === want",
            arg=[f'{row} [data-field="committed"]', str(want)],
            timeout=2000,
        )
        gen["committed"] = want
    feed = page.locator("#gov-feed .feed-item")
    assert await feed.count() >= 2
    assert "지출약정" in await feed.first.inner_text()
    assert await krw_of(page, "#gov-feed .feed-item:first-child b") == 7_000_000
    await page.wait_for_timeout(1200)  # let the chart take the latest point
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-government.png"), full_page=True)

    # English toggle, then back to Korean.
    await page.click("#lang")
    assert await page.locator("#title").inner_text() == "Local Government Cash Positions"
    assert re.search(r"₩[\d.,]+ ?(tn|bn|m)?", await page.locator("#gov-kpi-cash").inner_text())
    assert "updated" in await page.locator("#fresh").inner_text()
    await page.screenshot(path=str(ARTIFACTS / "dashboard-government-en.png"))
    await page.click("#lang")
    assert await page.locator("#title").inner_text() == "지방정부 실시간 자금현황"

    await page.click("#crumbs a")  # back to the national view
    await page.wait_for_selector(f'.gov[data-org="{JONGNO}"]')


async def test_resumes_after_dropped_connection(stack, seeded, page, publisher) -> None:
    await page.goto(f"{stack.api}/dashboard/#/gov/{SEOUL}")
    await page.wait_for_selector('#gov-accounts tbody tr[data-account="general"][data-fy]')
    await wait_live(page)
    cash = await krw_of(page, "#gov-kpi-cash")

    # 1) The API process dies: the page notices, warns when stale, resumes when it is back and
    #    shows the update that was published while it was down.
    stack.stop("api", kill=True)
    try:
        await page.wait_for_selector('#conn:not([data-state="live"])', timeout=5000)
        await publisher.send(event(SEOUL, "general", "receipt", 1_111_111))
        await page.wait_for_selector('#conn[data-state="stale"]', timeout=15_000)
        assert await page.locator("#banner").is_visible()
        assert "10초" in await page.locator("#banner").inner_text()
    finally:
        stack.start_api()
    await page.wait_for_function(
        "want => document.querySelector('#gov-kpi-cash')?.dataset.krw === want",
        arg=str(cash + 1_111_111),
        timeout=15_000,
    )
    await page.wait_for_selector('#conn[data-state="live"]')
    assert not await page.locator("#banner").is_visible()
    assert "재연결" in await page.locator("#gov-feed .feed-item").first.inner_text()

    # 2) The stream is closed from page JS (as a network drop would) and resumes with its last
    #    event id 1.5 s later; an update published in that gap is not missed.
    await page.evaluate("() => window.cashpos.live.drop(1500)")
    await publisher.send(event(SEOUL, "general", "receipt", 2_222_222))
    await page.wait_for_function(
        "want => document.querySelector('#gov-kpi-cash')?.dataset.krw === want",
        arg=str(cash + 1_111_111 + 2_222_222),
        timeout=10_000,
    )
    assert await page.evaluate("() => window.cashpos.live.reconnects") >= 1


async def test_sign_in_shows_only_what_the_role_may_see(stack, seeded, anon_page) -> None:
    """No session: the sign-in form, nothing else; a wrong token is refused; a provincial token
    sees its province only (26 governments of 서울); the session cookie is out of the page's
    reach (HttpOnly); a finance director lands on the own government and cannot open another."""
    pg = anon_page
    await pg.goto(f"{stack.api}/dashboard/")
    await pg.wait_for_selector("#signin #token")
    assert await pg.locator(".gov").count() == 0
    await pg.fill("#token", "cpt_wrong")
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_selector("#signin-error:not([hidden])")

    await pg.fill("#token", stack.token("provincial", (SEOUL,)))
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_selector(f'.gov[data-org="{JONGNO}"] [data-field="available"][data-krw]')
    await wait_live(pg)
    shown = set(await pg.eval_on_selector_all(".gov[data-org]", "els => els.map(e => e.dataset.org)"))
    seoul = {o for o, g in governments().items() if g.province_code == SEOUL}
    assert shown == seoul and BUSAN not in shown
    assert "cashpos_session" not in await pg.evaluate("document.cookie")
    assert "서울특별시" in await pg.inner_text("#crumbs")
    await pg.screenshot(path=str(ARTIFACTS / "dashboard-provincial.png"))

    await pg.click("#signout")
    await pg.wait_for_selector("#signin #token")
    await pg.fill("#token", stack.token("finance_director", (JONGNO,)))
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_function(f"() => location.hash === '#/gov/{JONGNO}'")
    await pg.wait_for_selector("#gov-name")
    await pg.goto(f"{stack.api}/dashboard/#/gov/{BUSAN}")
    await pg.wait_for_selector(".error")

"""The forecast on the dashboard, in a real browser (Debian's Chromium via Playwright) against the
real stack (issue #18): the story of tests/test_forecast_stack.py, told to a government of its own.

The government page shows, after the day's chart, the server's forecast: its curve (the API's
bands, to the won), no projected shortfall within 90 days, the floor crossing on the date computed
by hand with its drivers, the projected-shortfall alert's date, the idle cash; it follows an event
that moves the forecast; the old placeholder (a straight line through what the browser saw) is
gone; English too. The national view sorts by the days until the projected shortfall.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cashpos.embedded import Infra
from cashpos.refdata import governments
from streams.publisher import Publisher
from tests.conftest import Stack, new_stack
from tests.events import event
from tests.test_forecast_stack import CASH, FLOOR, ORDER, SMALL, Story, at, day, tell

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
ORG = "4620000"  # 태안군: no other test publishes to it
PLACEHOLDERS = ("단순 추세 외삽", "예측 모델 연결 예정", "연결 예정", "Simple trend")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium"),
]


@pytest.fixture(scope="module")
def bstack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own (see tests/test_forecast_stack.py)."""
    s = new_stack(infra, tmp_path_factory.mktemp("forecast-browser"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


@pytest.fixture(scope="module")
def story(bstack: Stack) -> Story:
    st = Story(ORG, f"fb{time.time_ns()}")
    tell(bstack, st)
    return st


@pytest.fixture(scope="module")
async def browser() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Any, bstack: Stack) -> AsyncIterator[Any]:
    """A page signed in (through the dashboard's own form) with a national read-only token."""
    ctx = await browser.new_context(
        viewport={"width": 1440, "height": 1100}, locale="ko-KR", timezone_id="Asia/Seoul"
    )
    pg = await ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.set_default_timeout(15_000)
    await pg.goto(f"{bstack.api}/dashboard/")
    await pg.fill("#token", bstack.token("national"))
    await pg.click("#signin button[type=submit]")
    await pg.wait_for_function("() => window.cashpos.session !== null")
    yield pg
    await ctx.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


async def api(stack: Stack, path: str, params: dict[str, str] | None = None) -> Any:
    async with httpx.AsyncClient(timeout=10, headers=stack.headers) as c:
        r = await c.get(f"{stack.api}{path}", params=params)
        assert r.status_code == 200, r.text[:300]
        return r.json()


async def drivers(page: Any, crossing: str) -> list[dict[str, str]]:
    return await page.eval_on_selector_all(
        f'.fc-crossing[data-crossing="{crossing}"] .fc-drivers li', "els => els.map(e => ({...e.dataset}))"
    )


async def test_the_government_page_shows_the_servers_forecast(bstack: Stack, story: Story, page: Any) -> None:
    await page.goto(f"{bstack.api}/dashboard/#/gov/{ORG}")
    await page.wait_for_selector('#gov-forecast[data-state="ready"]')
    await page.wait_for_selector("#fc-chart canvas")
    api_fc = await api(bstack, f"/v1/forecast/{ORG}")

    # The curve drawn is the API's, day by day, to the won (the hand-computed one).
    curve = await page.evaluate("() => window.cashpos.forecast")
    assert curve["today"] == day(0) == api_fc["today"]
    assert curve["dates"][0] == day(0) and curve["dates"][-1] == day(89) and len(curve["dates"]) == 90
    assert [int(v) for v in curve["expected"]] == CASH == api_fc["bands"]["expected"]["cash"]
    assert [int(v) for v in curve["confirmed"]] == api_fc["bands"]["confirmed"]["cash"]
    assert curve["floor"] == str(FLOOR)

    # No shortfall within the horizon; below the floor on T0+10, driven by the order, then c1.
    shortfall = await page.locator("#gov-shortfall").inner_text()
    assert "향후 90일 안에 예상되는 부족이 없습니다" in shortfall, shortfall
    floor = page.locator('.fc-crossing[data-crossing="cash_below_floor"]')
    assert await floor.get_attribute("data-date") == day(10)
    assert await floor.get_attribute("data-krw") == "450000000"
    assert await floor.get_attribute("data-days") == "10"
    assert day(10) in await floor.inner_text()
    assert await drivers(page, "cash_below_floor") == [
        {"ref": story.o1, "date": day(10), "kind": "order", "krw": str(-ORDER)},
        {"ref": story.c1, "date": day(5), "kind": "commitment", "krw": str(-SMALL)},
    ]
    text = await floor.inner_text()
    assert "지급명령" in text and "약정 만기" in text and story.o1 in text

    # The projected-shortfall alert (the same engine, per account) names the same date.
    await page.wait_for_selector(f'#fc-alerts li[data-date="{day(10)}"][data-account="general"]')
    alerts = (await api(bstack, "/v1/alerts", {"org": ORG, "rule": "projected_shortfall"}))["alerts"]
    assert [a["projected_date"] for a in alerts] == [day(10)]

    # Idle cash: none over the whole horizon, above the floor for 10 days.
    idle = page.locator("#fc-idle-amount")
    assert (await idle.get_attribute("data-krw"), await idle.get_attribute("data-days")) == ("0", "10")
    assert await page.get_attribute('#fc-idle [data-term="7"]', "data-krw") == "350000000"

    # The placeholder is gone, everywhere on the page.
    body = await page.locator("body").inner_text()
    assert not [p for p in PLACEHOLDERS if p in body], body
    ARTIFACTS.mkdir(exist_ok=True)
    await page.locator("#gov-forecast").screenshot(path=str(ARTIFACTS / "dashboard-forecast.png"))

    # It follows the events: a receipt of 1억 today lifts the curve, the crossing's value with it.
    async with Publisher(bstack.settings) as pub:
        await pub.send(event(f"{story.tag}-more", "receipt", 100_000_000, org=ORG, at=at(0, 30)))
    await page.wait_for_function(
        "() => document.querySelector('.fc-crossing[data-crossing=\"cash_below_floor\"]')?.dataset.krw === '550000000'",
        timeout=10_000,
    )
    curve = await page.evaluate("() => window.cashpos.forecast")
    assert int(curve["expected"][0]) == CASH[0] + 100_000_000

    # English, then back.
    await page.click("#lang")
    assert await page.inner_text("#gov-forecast h2") == "Cash forecast, next 90 days"
    assert "No shortfall projected in the next 90 days" in await page.inner_text("#gov-shortfall")
    assert "Below the" in await page.inner_text("#fc-floor")
    assert "Payment order" in await page.inner_text("#fc-floor")
    await page.wait_for_selector("#fc-chart canvas")
    await page.click("#lang")
    assert await page.inner_text("#gov-forecast h2") == "향후 90일 자금 전망"


async def test_the_national_view_sorts_by_days_until_the_projected_shortfall(
    bstack: Stack, story: Story, page: Any
) -> None:
    await page.goto(f"{bstack.api}/dashboard/#/")
    await page.wait_for_selector(".groups .gov[data-org]")
    mark = f'.gov[data-org="{ORG}"] [data-field="shortfall"]'
    await page.wait_for_selector(f'{mark}[data-days="10"]')
    assert await page.get_attribute(mark, "data-kind") == "floor"
    assert await page.get_attribute(mark, "data-date") == day(10)
    summary = (await api(bstack, "/v1/forecast"))["governments"]
    assert [s["org_code"] for s in summary] == [ORG]  # the only government with events here

    await page.select_option("#sort", "shortfall")
    assert await page.get_attribute("#sort-dir", "data-dir") == "asc"  # the most urgent first
    await page.uncheck("#group")
    first = await page.get_attribute("section.prov.flat .gov[data-org]", "data-org")
    assert first == ORG
    # grouped: its province first, it first in its province
    await page.check("#group")
    prov = governments()[ORG].province_code
    assert await page.get_attribute(".groups section.prov:not(.flat)", "data-province") == prov
    assert await page.get_attribute(f'section.prov[data-province="{prov}"] .gov[data-org]', "data-org") == ORG
    await page.select_option("#sort", "code")

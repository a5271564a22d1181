"""The forecast on the real stack (issue #18): Tansu broker, redis-server, a worker, the API.

One government, a story whose curve is computed by hand below: a receipt, two commitments with due
dates, a payment order for part of the larger one and a confirmed grant that arrives late (after
the order's pay date), with a floor of 6억 set through the API. Cash dips below the floor on the
order's pay date and recovers with the grant; had the grant come first, it never would.

Why below the *floor* and not below zero: with known flows only, a day's projected cash is never
below the available now (every outflow of a known flow is committed already), so cash projected
below zero means available below zero now, an actual ``shortfall``, which inhibits the
``projected_shortfall`` alert (docs/alerts.md). Against a floor (``projected_against_floor``) the
projection warns while the account is not short.

Checked on the API: the account's and the government's bands (every day, exact integers), the
crossings and their drivers, the flows, the idle cash, the summary the national view sorts by; the
position's ``ordered``; the ``projected_shortfall`` alert with the same date and drivers (and no
``shortfall``); ETag/304, the horizon's cut, 404/422/503 and the scope; and, once the clock has
moved two days, the forecast against what happened (``/v1/forecast/accuracy``), by hand too.

A stack of its own: the shared one is seeded by other tests with events across all 243
governments, dated now, which would move this government's clock and figures.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from pydantic import BaseModel

from cashpos.calendar import KST
from cashpos.embedded import Infra
from cashpos.names import RedisKeys
from serving import models
from streams.publisher import Publisher
from tests.conftest import Stack, new_stack
from tests.events import event

pytestmark = pytest.mark.integration

ORG = "4550000"  # 금산군: no other test publishes to it
OTHER = "4540000"  # 논산시: a viewer of it must not see ORG
T0 = dt.date(2026, 6, 1)  # the government's today: every event happens on it (then T0+1, T0+2)

RECEIPT = 1_000_000_000  # 10억 on T0
SMALL = 50_000_000  # commitment c1, due T0+5
BIG = 700_000_000  # commitment c2, due T0+40
ORDER = 500_000_000  # payment order o1 on c2, to pay on T0+10
GRANT = 400_000_000  # confirmed expected receipt s1 (보조금), on T0+20: after the order
FLOOR = 600_000_000  # the account's floor (PUT /v1/thresholds), the projection against it

# The expected (= confirmed: nothing estimated, nothing learned) closing cash, day by day:
#   T0..T0+4    10억                         the receipt
#   T0+5..+9     9.5억   (-0.5억 c1 due)
#   T0+10..+19   4.5억   (-5억 o1 paid)      below the 6억 floor: the crossing, on T0+10
#   T0+20..+39   8.5억   (+4억 the grant)
#   T0+40..+89   6.5억   (-2억 c2's part not ordered, due)
CASH = [1_000_000_000] * 5 + [950_000_000] * 5 + [450_000_000] * 10 + [850_000_000] * 20 + [650_000_000] * 50
# Available (cash - committed) moves with receipts only: 10억 - 7.5억 committed, then + the grant.
AVAILABLE = [250_000_000] * 20 + [650_000_000] * 70


def day(n: int) -> str:
    return (T0 + dt.timedelta(days=n)).isoformat()


def at(n: int, minute: int) -> str:
    return f"{day(n)}T10:{minute:02d}:00+09:00"


class Story:
    """The events of the story for one government, with ids of their own (``tag``)."""

    def __init__(self, org: str, tag: str) -> None:
        self.org, self.tag = org, tag
        self.c1, self.c2, self.o1, self.s1 = f"{tag}-c1", f"{tag}-c2", f"{tag}-o1", f"{tag}-grant"

    def _ev(self, name: str, kind: str, amount: int, minute: int, **extra: Any) -> bytes:
        return event(f"{self.tag}-{name}", kind, amount, org=self.org, at=at(0, minute), **extra)

    def receipt(self) -> bytes:
        return self._ev("r1", "receipt", RECEIPT, 0)

    def rest(self) -> list[bytes]:
        return [
            self._ev("c1", "commitment", SMALL, 10, commitment_id=self.c1, due_date=day(5)),
            self._ev("c2", "commitment", BIG, 11, commitment_id=self.c2, due_date=day(40)),
            event(
                self.o1,
                "payment_order",
                ORDER,
                org=self.org,
                at=at(0, 12),
                commitment_id=self.c2,
                pay_date=day(10),
            ),
            self._ev(
                "s1",
                "expected_receipt",
                GRANT,
                13,
                schedule_id=self.s1,
                expected_date=day(20),
                certainty="confirmed",
                category="grant",
            ),
        ]

    def flows(self, account: str) -> list[dict[str, Any]]:
        """The forecast's flows, by hand: (date, cash, committed, kind, certainty, ref)."""
        rows = [
            (day(5), -SMALL, -SMALL, "commitment", self.c1),
            (day(10), -ORDER, -ORDER, "order", self.o1),
            (day(20), GRANT, 0, "receipt", self.s1),
            (day(40), -(BIG - ORDER), -(BIG - ORDER), "commitment", self.c2),
        ]
        return [
            {
                "date": d,
                "cash": c,
                "committed": m,
                "available": c - m,
                "kind": k,
                "certainty": "confirmed",
                "ref": ref,
                "account": account,
            }
            for d, c, m, k, ref in rows
        ]


def publish(stack: Stack, *raws: bytes) -> None:
    async def go() -> None:
        async with Publisher(stack.settings) as pub:
            for raw in raws:
                await pub.send(raw)

    asyncio.run(go())


def wait_for(
    get: Callable[[], httpx.Response], ok: Callable[[httpx.Response], bool], what: str, timeout: float = 30
) -> httpx.Response:
    deadline = time.monotonic() + timeout
    r = get()
    while not ok(r):
        assert time.monotonic() < deadline, f"{what}: last answer {r.status_code} {r.text[:400]}"
        time.sleep(0.2)
        r = get()
    return r


def tell(stack: Stack, story: Story, floor: int = FLOOR) -> None:
    """Set the floor, publish the story, and wait until the API serves its whole forecast."""
    admin = stack.admin_headers
    r = httpx.put(
        f"{stack.api}/v1/thresholds/{story.org}/general",
        json={"floor_krw": floor, "projected_against_floor": True},
        headers=admin,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    time.sleep(2.5)  # the worker reads overrides once a second (its housekeeping)
    # the receipt first: with the commitments before it the account would be short for a moment
    publish(stack, story.receipt())
    url = f"{stack.api}/v1/positions/{story.org}/general"
    wait_for(
        lambda: httpx.get(url, headers=stack.headers, timeout=10),
        lambda r: r.status_code == 200 and r.json()["totals"]["cash"] == RECEIPT,
        "the receipt",
    )
    publish(stack, *story.rest())
    furl = f"{stack.api}/v1/forecast/{story.org}/general"
    wait_for(
        lambda: httpx.get(furl, headers=stack.headers, timeout=10),
        lambda r: r.status_code == 200 and r.json()["bands"]["expected"]["cash"] == CASH,
        "the forecast of the whole story",
    )


def strict(model: type[BaseModel], r: httpx.Response) -> Any:
    """The body, validated as the OpenAPI model says: exact types, no unknown member."""
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json", r.headers
    model.model_validate_json(r.content, strict=True, extra="forbid")
    return r.json()


@pytest.fixture(scope="module")
def fstack(infra: Infra, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = new_stack(infra, tmp_path_factory.mktemp("forecast"))
    s.start_worker()
    s.start_api()
    s.wait_ready()
    yield s
    s.stop_all()


@pytest.fixture(scope="module")
def story(fstack: Stack) -> Story:
    st = Story(ORG, f"fc{time.time_ns()}")
    tell(fstack, st)
    return st


def test_the_forecast_is_the_hand_computed_curve(fstack: Stack, story: Story) -> None:
    h = fstack.headers
    with httpx.Client(base_url=fstack.api, headers=h, timeout=10) as c:
        acc = strict(models.Forecast, c.get(f"/v1/forecast/{ORG}/general"))
        gov = strict(models.Forecast, c.get(f"/v1/forecast/{ORG}"))

    for doc, account in ((acc, "general"), (gov, None)):
        assert doc["org_code"] == ORG and doc["account"] == account
        assert doc["today"] == day(0) and doc["horizon_days"] == 90
        assert doc["position"] == {"cash": RECEIPT, "committed": SMALL + BIG, "available": 250_000_000}
        assert doc["floor"] == FLOOR
        for band in ("confirmed", "expected"):
            assert doc["bands"][band] == {"cash": CASH, "available": AVAILABLE}, band
        flows = story.flows("general")
        assert doc["flows"] == flows
        order, small = flows[1], flows[0]
        assert doc["crossings"] == {
            "cash_below_zero": None,  # never: see the module's docstring
            "cash_below_floor": {
                "date": day(10),
                "days": 10,
                "value": 450_000_000,
                "threshold": FLOOR,
                "drivers": [order, small],  # the largest decrease first
            },
            "available_below_zero": None,
            # available is below the floor already today, and no flow lowers it
            "available_below_floor": {
                "date": day(0),
                "days": 0,
                "value": 250_000_000,
                "threshold": FLOOR,
                "drivers": [],
            },
        }
        # nothing stays above the floor on every day: 0 idle; above it for 10 days (to T0+9);
        # for a week, the lowest of the first 7 days (9.5억) less the floor
        assert doc["idle_cash"] == {
            "floor": FLOOR,
            "amount": 0,
            "days": 10,
            "ladder": [
                {"term_days": 7, "amount": 350_000_000},
                {"term_days": 14, "amount": 0},
                {"term_days": 30, "amount": 0},
                {"term_days": 60, "amount": 0},
                {"term_days": 90, "amount": 0},
            ],
        }
    assert acc["learned"] == {"observed_days": 0, "recurring": []}  # a fresh government: nothing learned
    assert gov["learned"] is None


def test_the_position_shows_the_order(fstack: Stack, story: Story) -> None:
    r = httpx.get(f"{fstack.api}/v1/positions/{ORG}/general", headers=fstack.headers, timeout=10)
    assert r.status_code == 200, r.text
    (fy,) = r.json()["fiscal_years"]
    assert (fy["cash"], fy["committed"], fy["ordered"]) == (RECEIPT, SMALL + BIG, ORDER)


def test_the_alert_projects_the_same_date_and_drivers(fstack: Stack, story: Story) -> None:
    def projected() -> httpx.Response:
        return httpx.get(
            f"{fstack.api}/v1/alerts",
            params={"org": ORG, "rule": "projected_shortfall"},
            headers=fstack.headers,
            timeout=10,
        )

    r = wait_for(
        projected,
        lambda r: r.status_code == 200 and any(a["projected_date"] == day(10) for a in r.json()["alerts"]),
        "the projected_shortfall alert",
        timeout=15,
    )
    (a,) = r.json()["alerts"]
    assert (a["account"], a["state"], a["threshold"], a["floor"]) == ("general", "raised", FLOOR, FLOOR)
    assert (a["projected_date"], a["projected_cash"]) == (day(10), 450_000_000)
    assert a["drivers"] == [
        {"commitment_id": story.o1, "open": ORDER, "due_date": day(10), "kind": "order"},
        {"commitment_id": story.c1, "open": SMALL, "due_date": day(5), "kind": "commitment"},
    ]
    every = httpx.get(
        f"{fstack.api}/v1/alerts", params={"org": ORG, "state": "all"}, headers=fstack.headers, timeout=10
    ).json()["alerts"]
    rules = sorted(x["rule"] for x in every)
    assert rules == ["below_floor", "projected_shortfall"], every  # never short: nothing inhibits it


def test_the_summary_and_the_scope(fstack: Stack, story: Story) -> None:
    with httpx.Client(base_url=fstack.api, timeout=10) as c:
        mine = strict(models.ForecastSummaryList, c.get("/v1/forecast", headers=fstack.headers))
        assert mine["governments"] == [
            {
                "org_code": ORG,
                "today": day(0),
                "horizon_days": 90,
                "cash": RECEIPT,
                "available": 250_000_000,
                "floor": FLOOR,
                "cash_below_zero": None,
                "cash_below_floor": {"date": day(10), "days": 10, "value": 450_000_000},
                "lowest_cash": {"date": day(10), "days": 10, "value": 450_000_000},
                "idle_cash": 0,
            }
        ]
        assert c.get("/v1/forecast", params={"org": ORG}, headers=fstack.headers).json() == mine
        director = fstack.director_headers(ORG)
        assert c.get(f"/v1/forecast/{ORG}", headers=director).status_code == 200
        assert c.get("/v1/forecast", headers=director).json() == mine
        # a viewer of another government: ORG is unknown to it, its own list empty
        other = fstack.auth("viewer", (OTHER,))
        for path in (f"/v1/forecast/{ORG}", f"/v1/forecast/{ORG}/general"):
            r = c.get(path, headers=other)
            assert (r.status_code, r.json()["reason"]) == (404, "not_found"), path
        assert c.get("/v1/forecast", params={"org": ORG}, headers=other).status_code == 404
        assert c.get("/v1/forecast", headers=other).json() == {"governments": []}
        assert c.get("/v1/forecast/accuracy", headers=other).json() == {"governments": []}
        # no token; a role without read
        assert c.get(f"/v1/forecast/{ORG}").status_code == 401
        assert c.get(f"/v1/forecast/{ORG}", headers=fstack.admin_headers).status_code == 403


def test_errors_horizon_and_conditional_reads(fstack: Stack, story: Story) -> None:
    with httpx.Client(base_url=fstack.api, headers=fstack.headers, timeout=10) as c:
        for path, status, reason in (
            ("/v1/forecast/9999999", 404, "not_found"),
            (f"/v1/forecast/{ORG}/nope", 404, "not_found"),
            (f"/v1/forecast/{ORG}?horizon_days=0", 422, "invalid_request"),
            (f"/v1/forecast/{ORG}?horizon_days=91", 422, "invalid_request"),
        ):
            r = c.get(path)
            assert (r.status_code, r.json()["reason"]) == (status, reason), (path, r.text)
            assert r.headers["content-type"] == "application/problem+json"
        assert c.get("/problems/forecast_unavailable").json()["status"] == 503

        # Nothing to forecast is zero, not missing: an account without a position (from the
        # government's today), a government without any event (from today's Korean date).
        idle = strict(models.Forecast, c.get(f"/v1/forecast/{ORG}/custody"))
        never = strict(models.Forecast, c.get(f"/v1/forecast/{OTHER}"))
        assert idle["today"] == day(0) and idle["account"] == "custody"
        assert never["account"] is None and never["today"] in {
            dt.datetime.now(KST).date().isoformat(),
            (dt.datetime.now(KST) - dt.timedelta(seconds=5)).date().isoformat(),  # midnight
        }
        for doc in (idle, never):
            assert doc["position"] == {"cash": 0, "committed": 0, "available": 0} and doc["floor"] is None
            zero = {"cash": [0] * 90, "available": [0] * 90}
            assert doc["bands"] == {"confirmed": zero, "expected": zero}
            assert set(doc["crossings"].values()) == {None} and doc["flows"] == []
            assert doc["idle_cash"] == {
                "floor": 0,
                "amount": 0,
                "days": 0,
                "ladder": [{"term_days": t, "amount": 0} for t in (7, 14, 30, 60, 90)],
            }
        assert idle["learned"] == {"observed_days": 0, "recurring": []} and never["learned"] is None

        # ten days: the bands' first ten, no crossing on day 10 any more, the flows before it
        ten = strict(models.Forecast, c.get(f"/v1/forecast/{ORG}/general", params={"horizon_days": 10}))
        assert ten["horizon_days"] == 10
        assert ten["bands"]["expected"] == {"cash": CASH[:10], "available": AVAILABLE[:10]}
        assert ten["crossings"]["cash_below_floor"] is None
        assert ten["crossings"]["available_below_floor"]["date"] == day(0)
        assert [f["ref"] for f in ten["flows"]] == [story.c1]
        eleven = c.get(f"/v1/forecast/{ORG}/general", params={"horizon_days": 11}).json()
        assert eleven["crossings"]["cash_below_floor"]["date"] == day(10)

        # conditional: the same forecast answers 304 to its ETag; another horizon is another tag
        first = c.get(f"/v1/forecast/{ORG}")
        tag = first.headers["etag"]
        assert first.headers["cache-control"] == "private, no-cache"
        again = c.get(f"/v1/forecast/{ORG}", headers={"If-None-Match": tag})
        assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == tag
        assert c.get(f"/v1/forecast/{ORG}?horizon_days=30", headers={"If-None-Match": tag}).status_code == 200
        listed = c.get("/v1/forecast")
        assert c.get("/v1/forecast", headers={"If-None-Match": listed.headers["etag"]}).status_code == 304


def test_accuracy_once_the_days_have_passed(fstack: Stack, story: Story) -> None:
    """The clock leaves T0 (a receipt of 0.1억 on T0+1), then T0+1 (one on T0+2): T0's forecast
    of T0+1 (10억, the curve above) is scored against T0+1's close (10.1억): -0.1억."""
    h = fstack.headers
    url = f"{fstack.api}/v1/forecast/{ORG}"
    before = httpx.get(url, headers=h, timeout=10)
    publish(fstack, event(f"{story.tag}-r2", "receipt", 10_000_000, org=ORG, at=f"{day(1)}T09:00:00+09:00"))
    moved = wait_for(
        lambda: httpx.get(url, headers=h, timeout=10),
        lambda r: (
            r.status_code == 200
            and r.json()["today"] == day(1)
            and r.json()["position"]["cash"] == RECEIPT + 10_000_000
        ),
        "the forecast of T0+1",
    )
    assert moved.headers["etag"] != before.headers["etag"]
    # a day later the crossing is the same day, one day nearer
    assert moved.json()["crossings"]["cash_below_floor"]["days"] == 9
    publish(fstack, event(f"{story.tag}-r3", "receipt", 20_000_000, org=ORG, at=f"{day(2)}T09:00:00+09:00"))
    acc = wait_for(
        lambda: httpx.get(f"{fstack.api}/v1/forecast/accuracy", params={"org": ORG}, headers=h, timeout=10),
        lambda r: r.status_code == 200 and bool(r.json()["governments"]),
        "the accuracy",
    )
    body = strict(models.ForecastAccuracyList, acc)
    assert body == {
        "governments": [
            {
                "org_code": ORG,
                "horizons": [
                    {"days_ahead": 1, "days": 1, "mean_abs_error": 10_000_000, "mean_error": -10_000_000}
                ],
            }
        ]
    }
    assert httpx.get(f"{fstack.api}/v1/forecast/accuracy", headers=h, timeout=10).json() == body


def test_a_lost_forecast_is_unavailable_then_written_again(fstack: Stack, story: Story) -> None:
    """Redis loses the account's forecast: 503 (it has figures: never zero). Loses the whole
    government's (its summary with it, as a flush would): the worker writes them again, with no
    event, within its housekeeping."""
    keys = RedisKeys(fstack.namespace)
    url = f"{fstack.api}/v1/forecast/{ORG}"
    h = fstack.headers
    with redis.Redis.from_url(fstack.redis_urls["admin"]) as r:
        assert r.hdel(keys.forecast(ORG), "general") == 1
        gone = httpx.get(f"{url}/general", headers=h, timeout=10)
        assert (gone.status_code, gone.json()["reason"]) == (503, "forecast_unavailable"), gone.text
        assert gone.headers["retry-after"] == "1"
        assert httpx.get(url, headers=h, timeout=10).status_code == 200  # the government's is there
        r.delete(keys.forecast(ORG), keys.forecast_summary)
    t0 = time.monotonic()
    for path in (f"{url}/general", url, f"{fstack.api}/v1/forecast"):

        def get(path: str = path) -> httpx.Response:
            return httpx.get(path, headers=h, timeout=10)

        wait_for(
            get,
            lambda r: r.status_code == 200 and r.json() != {"governments": []},
            f"{path} written again",
            timeout=15,
        )
    assert time.monotonic() - t0 < 5
    back = httpx.get(f"{url}/general", headers=h, timeout=10).json()
    assert back["today"] == day(2) and back["crossings"]["cash_below_floor"]["date"] == day(10)


def test_a_new_floor_is_forecast_without_an_event(fstack: Stack, story: Story) -> None:
    """A threshold override moves the floor: the served crossings follow within seconds, with
    no event (the curve is where it was: 10.3억 now, its low 4.8억 on T0+10, above 4억)."""
    r = httpx.put(
        f"{fstack.api}/v1/thresholds/{ORG}/general",
        json={"floor_krw": 400_000_000, "projected_against_floor": True},
        headers=fstack.admin_headers,
        timeout=10,
    )
    assert r.status_code == 200, r.text
    url = f"{fstack.api}/v1/forecast/{ORG}/general"
    got = wait_for(
        lambda: httpx.get(url, headers=fstack.headers, timeout=10),
        lambda r: r.status_code == 200 and r.json()["floor"] == 400_000_000,
        "the new floor",
        timeout=10,
    ).json()
    assert got["crossings"]["cash_below_floor"] is None
    assert min(got["bands"]["expected"]["cash"]) == 480_000_000
    summary = httpx.get(f"{fstack.api}/v1/forecast", params={"org": ORG}, headers=fstack.headers, timeout=10)
    assert summary.json()["governments"][0]["floor"] == 400_000_000

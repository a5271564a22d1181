// Government view (#/gov/{org}): every account's cash, committed and available; the day's
// movement since 00:00 KST and the last 30 days, both from the server's history; "change today"
// against the server's opening balance; the daily statement (tab, with CSV); the events behind
// every figure (events.js); the latest updates as they arrive; open alerts; and, after the day's
// chart, the server's 90-day forecast (GET /v1/forecast/{org}: the expected cash curve with the
// confirmed band, the projected shortfall and its drivers, idle cash). Every forecast figure is the
// server's: the page draws and labels them, it computes none.

import { closePanel, openBreakdown, openEvents, relabelPanel } from "./events.js";
import { big, esc, krw, krwDelta, krwExact, kstDay, kstTime } from "./format.js";
import { addDays, closings, kstMidnight, opening, sampleTimes, samples, statement, statementURL } from "./history.js";
import { getLang, t } from "./i18n.js";
import { LiveStream } from "./live.js";
import { coverage, getJSON, loadGovernments, setTotals, store, toTotals } from "./store.js";

export const name = "government";

const KPIS = ["cash", "committed", "available", "spendable", "restricted", "change"];
const FEED_MAX = 60;
const MONTH_DAYS = 30;
const STMT_DAYS = 7;
const RETRY_MS = 5000;
const FORECAST_POLL_S = 5; // besides a reload shortly after each update of this government
const FORECAST_AFTER_UPDATE_MS = 800; // the worker writes forecasts at most every 0.5 s after a batch
// Statement columns in the server's order (serving/history.py), money except "events".
const STMT_COLS = ["opening_cash", "receipts_local_tax", "receipts_non_tax", "receipts_grant", "receipts_subsidy",
  "receipts_bond", "receipts_other", "payments", "transfers_in", "transfers_out", "carried_in", "carried_out", "other_cash",
  "closing_cash", "opening_committed", "committed_opened", "committed_paid", "committed_cancelled", "committed_lapsed",
  "committed_carried_in", "committed_carried_out", "other_committed", "closing_committed", "closing_available", "events"];
// Columns that are balances at a day's start or end (their events: as of that instant).
const AT_START = new Set(["opening_cash", "opening_committed"]);

let root = null;
let live = null;
let org = null;
let gov = null; // /v1/governments/{org}: chart of accounts
let rows = new Map(); // "account|fy" -> row (BigInt money)
let years = []; // body.fiscal_years: each year's totals and whether it is closed (final)
let feed = []; // newest first: {ms, items: [{key, name, fy, dCash, dCommitted}], snapshot}
let alerts = null; // null: service unavailable; else Map id -> alert
let asOf = null;
let chart = null;
let chartTimer = null;
let resizeObs = null;
let shellCtx = null;
let tab = "overview"; // overview | statement
let chartMode = "today"; // today | month
// The day from the server: {day, open: {cash, committed, available, rows}, points: [{ms, cash, available}]}
let dayHist = null;
let dayError = false;
let dayBusy = false;
let month = null; // [{date, cash, available, committed}] or null
let monthError = false;
let stmt = { from: null, to: null, rows: null, error: false, busy: false };
let gen = 0; // mount generation: late answers of a previous page are dropped
// The server's forecast of the government: {doc} (the API's body), {unavailable: true} (503: not
// computed yet) or {error: true}; null before the first answer.
let fc = null;
let fcChart = null;
let fcResizeObs = null;
let fcTimer = null;
let fcBusy = false;

function crumbs(ctx) {
  const g = store.govs.get(org);
  ctx.crumbs(g.level === "metropolitan"
    ? [{ label: t("nation"), href: "#/" }, { label: g.name }]
    : [{ label: t("nation"), href: "#/" }, { label: g.province_name, href: `#/gov/${g.province_code}` }, { label: g.name }]);
}

function money(el, v, lang = getLang()) {
  el.textContent = krw(v, lang);
  el.dataset.krw = big(v).toString();
  el.title = krwExact(v, lang);
}

function rowKey(a) { return `${a.account}|${a.fiscal_year}`; }

function toRow(a) {
  return { ...a, cash: big(a.cash), committed: big(a.committed), available: big(a.available) };
}

// --- rendering -----------------------------------------------------------------------------------

function shell() {
  const lang = getLang();
  const g = store.govs.get(org);
  root.innerHTML = `
    <section class="gov-head">
      <div>
        <h1 id="gov-name">${esc(g.name)} <span class="code">${org}</span></h1>
        <div class="muted">${esc(g.province_name)} · ${esc(t("level")[g.level] || g.level)}${g.note ? ` · ${esc(g.note)}` : ""} · <span id="gov-asof"></span></div>
      </div>
      <a class="btn" href="#/">← ${esc(t("back"))}</a>
    </section>
    <section class="kpis" id="gov-kpis">
      ${KPIS.map((k) => `
        <div class="kpi kpi-${k}" title="${esc(t(k + "Help"))}">
          <div class="kpi-label">${esc(t(k))}</div>
          <div class="kpi-value amt clickable" id="gov-kpi-${k}" data-figure="${k}" tabindex="0">—</div>
        </div>`).join("")}
      <div class="kpi kpi-coverage" title="${esc(t("legendHelp"))}">
        <div class="kpi-label">${esc(t("coverage"))} ⓘ</div>
        <div class="kpi-value" id="gov-kpi-coverage">—</div>
      </div>
    </section>
    <nav class="tabs" role="tablist">
      <button type="button" role="tab" class="tab" id="tab-overview" data-tab="overview">${esc(t("tabOverview"))}</button>
      <button type="button" role="tab" class="tab" id="tab-statement" data-tab="statement">${esc(t("tabStatement"))}</button>
    </nav>
    <div id="pane-overview" class="pane">
    <div class="grid2">
      <div class="main-col">
      <section class="panel chart-panel">
        <header><h2 id="chart-title"></h2><small class="muted" id="chart-note"></small>
          <span class="seg" role="group"><button type="button" class="btn" data-mode="today" id="chart-today">${esc(t("chartToday"))}</button><button type="button" class="btn" data-mode="month" id="chart-month">${esc(t("chart30"))}</button></span>
        </header>
        <div id="gov-chart" class="chart"></div>
        <div id="gov-day" class="day-line"></div>
      </section>
      <section class="panel forecast-panel" id="gov-forecast">
        <header><h2>${esc(t("fcTitle"))}</h2><small class="muted" id="fc-note"></small></header>
        <div id="fc-chart" class="chart fc-chart"></div>
        <div id="gov-shortfall-panel" class="fc-facts">
          <div class="fc-block"><h3>${esc(t("shortfall"))}</h3><div id="gov-shortfall" class="shortfall"></div></div>
          <div class="fc-block"><h3>${esc(t("fcFloorTitle"))}</h3><div id="fc-floor"></div></div>
          <div class="fc-block"><h3>${esc(t("idleCash"))}</h3><div id="fc-idle"></div></div>
        </div>
        <small class="muted fc-assume">${esc(t("fcAssumptions"))}</small>
      </section>
      </div>
      <aside class="side">
        <section class="panel" id="gov-alerts-panel">
          <header><h2>${esc(t("alerts"))}</h2><span class="count" id="gov-alert-count"></span></header>
          <div id="gov-alerts" class="alerts"></div>
        </section>
      </aside>
    </div>
    <div class="grid2">
      <section class="panel">
        <header><h2>${esc(t("accounts"))}</h2><small class="muted" id="gov-acc-count"></small><small class="muted" id="gov-years"></small></header>
        <div class="table-wrap">
        <table id="gov-accounts" class="table">
          <thead><tr>
            <th>${esc(t("account"))}</th><th>${esc(t("type"))}</th><th class="num">${esc(t("fiscalYear"))}</th>
            <th class="num">${esc(t("cash"))}</th><th class="num">${esc(t("committed"))}</th><th class="num">${esc(t("available"))}</th>
            <th class="num">${esc(t("lastEvent"))}</th>
          </tr></thead>
          <tbody></tbody>
          <tfoot><tr><th colspan="3">${esc(t("total"))}</th>
            <th class="num amt clickable" data-field="cash" data-figure="cash" tabindex="0"></th><th class="num amt clickable" data-field="committed" data-figure="committed" tabindex="0"></th><th class="num amt clickable" data-field="available" data-figure="available" tabindex="0"></th><th></th></tr></tfoot>
        </table></div>
      </section>
      <section class="panel">
        <header><h2>${esc(t("feed"))}</h2></header>
        <ol id="gov-feed" class="feed"></ol>
      </section>
    </div>
    </div>
    <div id="pane-statement" class="pane">
      <section class="panel">
        <header><h2>${esc(t("stmtTitle"))}</h2></header>
        <form class="toolbar stmt-bar" id="stmt-form">
          <label class="field">${esc(t("stmtFrom"))} <input type="date" id="stmt-from" required></label>
          <label class="field">${esc(t("stmtTo"))} <input type="date" id="stmt-to" required></label>
          <button class="btn" type="submit">${esc(t("stmtShow"))}</button>
          <a class="btn" id="stmt-csv" download>${esc(t("stmtCsv"))}</a>
          <small class="muted">${esc(t("stmtNote"))}</small>
        </form>
        <div class="table-wrap" id="stmt-wrap"></div>
      </section>
    </div>`;
  root.querySelector("#gov-kpis").addEventListener("click", onFigure);
  root.querySelector("#gov-kpis").addEventListener("keydown", (e) => { if (e.key === "Enter") onFigure(e); });
  root.querySelector("#gov-accounts").addEventListener("click", onFigure);
  root.querySelector("#gov-accounts").addEventListener("keydown", (e) => { if (e.key === "Enter") onFigure(e); });
  root.querySelector("#gov-day").addEventListener("click", onFigure);
  root.querySelector("#gov-feed").addEventListener("click", onFigure);
  root.querySelector("#stmt-wrap").addEventListener("click", onStatementFigure);
  for (const b of root.querySelectorAll(".tab")) b.addEventListener("click", () => setTab(b.dataset.tab));
  for (const b of root.querySelectorAll(".seg .btn")) b.addEventListener("click", () => setChartMode(b.dataset.mode));
  const form = root.querySelector("#stmt-form");
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const from = form.querySelector("#stmt-from").value, to = form.querySelector("#stmt-to").value;
    if (from && to && from <= to) loadStatement(from, to);
  });
  paintKpis();
  paintAccounts();
  paintFeed();
  paintAlerts();
  paintTabs();
  paintStatement();
  makeChart();
  paintForecast();
}

function setTab(next) {
  tab = next;
  paintTabs();
  if (tab === "statement" && !stmt.rows && !stmt.busy) {
    const today = kstDay();
    loadStatement(stmt.from || addDays(today, -(STMT_DAYS - 1)), stmt.to || today);
  }
  if (tab === "overview") { makeChart(); makeForecastChart(); }
}

function paintTabs() {
  if (!root || !root.querySelector(".tabs")) return;
  for (const b of root.querySelectorAll(".tab")) {
    b.classList.toggle("active", b.dataset.tab === tab);
    b.setAttribute("aria-selected", String(b.dataset.tab === tab));
  }
  root.querySelector("#pane-overview").hidden = tab !== "overview";
  root.querySelector("#pane-statement").hidden = tab !== "statement";
}

function setChartMode(mode) {
  chartMode = mode;
  if (mode === "month" && !month) loadMonth();
  makeChart();
}

function paintKpis() {
  if (!root || !root.querySelector("#gov-kpis")) return;
  const lang = getLang();
  const tt = store.totals.get(org);
  if (!tt) return;
  for (const k of KPIS) {
    const el = root.querySelector(`#gov-kpi-${k}`);
    if (k === "change") {
      // now − the server's opening balance of today; unknown until the statement has answered
      const d = changeToday();
      if (d === null) {
        el.textContent = "—";
        delete el.dataset.krw;
        el.title = dayError ? t("historyUnavailable") : t("changeHelp");
        el.classList.remove("up", "down");
        continue;
      }
      el.textContent = krwDelta(d, lang);
      el.dataset.krw = d.toString();
      el.title = `${krwExact(d, lang)} · ${t("changeHelp")}`;
      el.classList.toggle("up", d > 0n);
      el.classList.toggle("down", d < 0n);
    } else money(el, tt[k], lang);
  }
  const cov = coverage(tt);
  const c = root.querySelector("#gov-kpi-coverage");
  c.textContent = cov.months === null ? "—" : t("months", cov.months.toFixed(1));
  c.className = `kpi-value band-text-${cov.band}`;
  root.querySelector("#gov-asof").textContent = asOf ? `${t("asOf")} ${kstTime(asOf)} KST` : "";
}

function paintAccounts(changedKeys = new Set()) {
  const body = root && root.querySelector("#gov-accounts tbody");
  if (!body) return;
  const lang = getLang();
  const types = t("types");
  const html = [];
  let active = 0;
  for (const acc of gov.accounts) {
    const mine = [...rows.values()].filter((r) => r.account === acc.account).sort((a, b) => b.fiscal_year - a.fiscal_year);
    if (!mine.length) {
      html.push(`<tr class="idle" data-account="${esc(acc.account)}"><td><span class="acc-name">${esc(acc.name)}</span><span class="acc-code">${esc(acc.account)}</span></td>
        <td><span class="type type-${esc(acc.type)}">${esc(types[acc.type] || acc.type)}</span></td><td class="num muted">—</td>
        <td class="num amt" data-field="cash" data-krw="0">0</td><td class="num amt" data-field="committed" data-krw="0">0</td><td class="num amt" data-field="available" data-krw="0">0</td>
        <td class="num muted">${esc(t("noActivity"))}</td></tr>`);
      continue;
    }
    for (const r of mine) {
      active += 1;
      const k = rowKey(r);
      const cls = [r.available < 0n ? "neg" : "", changedKeys.has(k) ? "flash" : ""].join(" ").trim();
      const cell = (f) => `<td class="num amt clickable${f === "available" && r[f] < 0n ? " neg" : ""}" data-field="${f}" data-krw="${r[f]}" data-events="${esc(r.account)}|${r.fiscal_year}" tabindex="0" title="${esc(krwExact(r[f], lang))}">${esc(krw(r[f], lang))}</td>`;
      html.push(`<tr class="${cls}" data-account="${esc(r.account)}" data-fy="${r.fiscal_year}"><td><span class="acc-name">${esc(acc.name)}</span><span class="acc-code">${esc(acc.account)}</span></td>
        <td><span class="type type-${esc(acc.type)}">${esc(types[acc.type] || acc.type)}</span></td><td class="num">${r.fiscal_year}${r.final ? ` <span class="badge final" title="${esc(t("finalTitle"))}">${esc(t("final"))}</span>` : ""}</td>
        ${cell("cash")}${cell("committed")}${cell("available")}
        <td class="num muted">${r.last_event_at ? kstTime(r.last_event_at) : "—"}</td></tr>`);
    }
  }
  body.innerHTML = html.join("");
  const tt = store.totals.get(org);
  if (tt) for (const f of ["cash", "committed", "available"]) money(root.querySelector(`#gov-accounts tfoot [data-field="${f}"]`), tt[f], lang);
  paintDay();
  root.querySelector("#gov-acc-count").textContent = lang === "en"
    ? `${gov.accounts.length} accounts · ${active} with activity` : `${gov.accounts.length}개 회계 · 거래 ${active}건`;
  // Two fiscal years open (1 January to the close): each year's own figure; the total row is the bank's.
  const ys = root.querySelector("#gov-years");
  ys.textContent = years.length > 1
    ? ` · ${t("yearsOpen")}: ${years.map((y) => `${y.fiscal_year} ${y.final ? t("final") : krw(big(y.available), lang)}`).join(" · ")}` : "";
}

function paintFeed() {
  const ol = root && root.querySelector("#gov-feed");
  if (!ol) return;
  const lang = getLang();
  if (!feed.length) { ol.innerHTML = `<li class="muted empty">${esc(t("feedEmpty"))}</li>`; return; }
  const names = new Map(gov.accounts.map((a) => [a.account, a.name]));
  ol.innerHTML = feed.map((f) => {
    const parts = f.items.map((it) => {
      const bits = [];
      const ev = `data-events="${esc(it.account)}|${it.fy}" data-delta="1" tabindex="0"`;
      if (it.dCash) bits.push(`${esc(t("cash"))} <b class="clickable ${it.dCash > 0n ? "up" : "down"}" title="${esc(krwExact(it.dCash, lang))}" data-krw="${it.dCash}" data-field="cash" ${ev}>${esc(krwDelta(it.dCash, lang))}</b>`);
      if (it.dCommitted) bits.push(`${esc(t("committed"))} <b class="clickable ${it.dCommitted > 0n ? "down" : "up"}" title="${esc(krwExact(it.dCommitted, lang))}" data-krw="${it.dCommitted}" data-field="committed" ${ev}>${esc(krwDelta(it.dCommitted, lang))}</b>`);
      return `<div class="feed-line" data-account="${esc(it.account)}"><span class="acc-name">${esc(names.get(it.account) || it.account)}</span> <small class="muted">${it.fy}</small> ${bits.join(" · ")}</div>`;
    }).join("");
    const sync = f.resumed ? `<div class="sync">${esc(t("feedSnapshot"))}</div>` : "";
    return `<li class="feed-item${f.resumed ? " resumed" : ""}"><time>${kstTime(f.ms)}</time><div>${sync}${parts}</div></li>`;
  }).join("");
}

function paintAlerts() {
  const box = root && root.querySelector("#gov-alerts");
  if (!box) return;
  const list = alerts ? [...alerts.values()] : [];
  root.querySelector("#gov-alert-count").textContent = list.length ? String(list.length) : "";
  if (!list.length) {
    box.innerHTML = `<p class="no-alerts"><span class="ok-dot"></span>${esc(t("noAlerts"))}</p>${alerts === null ? `<small class="muted">${esc(t("alertsUnavailable"))}</small>` : ""}`;
    return;
  }
  box.innerHTML = `<ul>${list.map((a) => {
    const sev = String(a.severity || a.level || "warning").toLowerCase();
    const text = a.message || a.title || a.summary || a.rule || a.kind || JSON.stringify(a);
    const at = a.opened_at || a.at || a.created_at || a.ts_ms;
    return `<li class="alert sev-${esc(sev)}"><span class="sev">${esc(sev)}</span><span>${esc(text)}</span>${at ? `<time>${kstTime(at)}</time>` : ""}</li>`;
  }).join("")}</ul>`;
}

// --- the forecast, from the server ---------------------------------------------------------------

async function loadForecast() {
  if (fcBusy || !org) return;
  fcBusy = true;
  const my = gen, o = org;
  let next;
  try {
    // The browser revalidates with the ETag (Cache-Control: no-cache): a 304 while unchanged.
    next = { doc: await getJSON(`v1/forecast/${o}`) };
  } catch (e) {
    next = e.status === 503 ? { unavailable: true } : { error: true };
    if (fc && fc.doc && !next.unavailable) next = { doc: fc.doc, error: true }; // keep the last one shown
  } finally {
    if (my === gen) fcBusy = false;
  }
  if (my !== gen) return;
  const same = fc && fc.doc && next.doc && JSON.stringify(fc.doc, bigText) === JSON.stringify(next.doc, bigText);
  fc = next;
  if (!same) paintForecast();
}

function bigText(_k, v) { return typeof v === "bigint" ? v.toString() : v; }

function soonForecast() {
  clearTimeout(fcTimer);
  fcTimer = setTimeout(loadForecast, FORECAST_AFTER_UPDATE_MS);
}

/** The Korean dates of the bands' days (the server's today, then one a day). */
function forecastDates(doc) {
  return Array.from({ length: doc.bands.expected.cash.length }, (_, i) => addDays(doc.today, i));
}

/** The forecast as drawn, with the server's exact figures (for operators' consoles and the tests). */
export function forecastCurve() {
  if (!fc || !fc.doc) return null;
  const d = fc.doc;
  const text = (xs) => xs.map((v) => big(v).toString());
  return {
    today: d.today,
    dates: forecastDates(d),
    expected: text(d.bands.expected.cash),
    confirmed: text(d.bands.confirmed.cash),
    floor: d.floor === null ? null : big(d.floor).toString(),
  };
}

function fcMessage() {
  return fc === null ? t("fcLoading") : fc.unavailable ? t("fcUnavailable") : t("loadError");
}

function paintForecast() {
  const panel = root && root.querySelector("#gov-forecast");
  if (!panel) return;
  const doc = fc && fc.doc;
  root.querySelector("#fc-note").textContent = doc ? t("fcNote", doc.today, doc.horizon_days) : "";
  panel.dataset.today = doc ? doc.today : "";
  panel.dataset.state = doc ? (fc.error ? "stale" : "ready") : fc === null ? "loading" : fc.unavailable ? "unavailable" : "error";
  makeForecastChart();
  paintForecastFacts();
}

function makeForecastChart() {
  const el = root && root.querySelector("#fc-chart");
  if (!el) return;
  const doc = fc && fc.doc;
  if (fcChart) fcChart.destroy();
  fcChart = null;
  if (!doc) {
    el.innerHTML = `<div class="loading">${esc(fcMessage())}</div>`;
    return;
  }
  el.innerHTML = "";
  if (!window.uPlot || tab !== "overview") return;
  const U = window.uPlot;
  const stepped = U.paths && U.paths.stepped ? U.paths.stepped({ align: 1 }) : undefined;
  const money = (u, v) => (v == null ? "—" : krw(BigInt(Math.round(v)), getLang()));
  const xs = forecastDates(doc).map((d) => kstMidnight(d) / 1000);
  const doubles = (a) => a.map((v) => Number(v)); // for drawing only: the exact figures are in the DOM
  const series = [
    { label: t("date"), value: (u, v) => (v == null ? "—" : kstDay(v * 1000)) },
    { label: t("fcExpected"), value: money, stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.08)", paths: stepped, points: { show: false } },
    { label: t("fcConfirmed"), value: money, stroke: "#8a94a6", width: 1.5, dash: [5, 4], paths: stepped, points: { show: false } },
  ];
  const data = [xs, doubles(doc.bands.expected.cash), doubles(doc.bands.confirmed.cash)];
  if (doc.floor !== null) {
    series.push({ label: t("fcFloor"), value: money, stroke: "#d32f2f", width: 1, dash: [2, 3], points: { show: false } });
    data.push(xs.map(() => Number(doc.floor)));
  }
  fcChart = new U({
    width: Math.max(300, el.clientWidth), height: 220,
    tzDate: (ts) => U.tzDate(new Date(ts * 1e3), "Asia/Seoul"),
    cursor: { drag: { x: false, y: false } },
    legend: { show: true, live: true },
    scales: {
      x: { time: true },
      // zero in view: how far the curve is from running out is the point of the chart
      y: { range: (u, min, max) => { const lo = Math.min(min, 0), hi = Math.max(max, 0), pad = Math.max((hi - lo) * 0.08, 1e5); return [lo - (lo < 0 ? pad : 0), hi + pad]; } },
    },
    axes: [
      { stroke: "#5b6473", values: axisDay, space: 60, incrs: [86_400, 7 * 86_400, 14 * 86_400, 28 * 86_400], grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
      { stroke: "#5b6473", size: 84, values: axisKrw, grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
    ],
    series,
  }, data, el);
  if (fcResizeObs) fcResizeObs.disconnect();
  fcResizeObs = new ResizeObserver(() => { if (fcChart) fcChart.setSize({ width: Math.max(300, el.clientWidth), height: 220 }); });
  fcResizeObs.observe(el);
}

/** A crossing (the server's first day below a threshold) with the flows that drive it. */
function crossingHtml(name, c, head, lang) {
  const drivers = c.drivers.map((f) => {
    const v = big(f.cash);
    return `<li data-ref="${esc(f.ref)}" data-date="${esc(f.date)}" data-kind="${esc(f.kind)}" data-krw="${v}">
      <time>${esc(f.date)}</time> <span class="fc-kind">${esc(t("fcKinds")[f.kind] || f.kind)}</span> <span class="mono">${esc(f.ref)}</span>${f.account ? ` <span class="acc-code">${esc(f.account)}</span>` : ""}
      <b class="amt ${v < 0n ? "down" : ""}" title="${esc(krwExact(v, lang))}">${esc(krwDelta(v, lang))}</b> <small class="muted">${esc(t("fcCertainty")[f.certainty] || f.certainty)}</small></li>`;
  }).join("");
  return `<div class="fc-crossing" data-crossing="${name}" data-date="${esc(c.date)}" data-days="${c.days}" data-krw="${big(c.value)}" data-threshold="${big(c.threshold)}">
    <p class="fc-head" title="${esc(krwExact(big(c.value), lang))}">${esc(head)}</p>
    ${drivers ? `<div class="muted fc-sub">${esc(t("fcDrivers"))}</div><ol class="fc-drivers">${drivers}</ol>` : ""}</div>`;
}

function paintForecastFacts() {
  const box = root && root.querySelector("#gov-shortfall");
  if (!box) return;
  const lang = getLang();
  const floorBox = root.querySelector("#fc-floor");
  const idleBox = root.querySelector("#fc-idle");
  const doc = fc && fc.doc;
  const money = (v) => krw(big(v), lang);
  // The projected-shortfall alerts: the same engine, judged per account (docs/alerts.md).
  const projected = alerts ? [...alerts.values()].filter((a) => a.rule === "projected_shortfall" && a.projected_date)
    .sort((a, b) => String(a.projected_date).localeCompare(String(b.projected_date))) : [];
  const alertLines = projected.length ? `<div class="muted fc-sub">${esc(t("fcAlerts"))}</div><ul class="fc-alerts" id="fc-alerts">${projected.map((a) =>
    `<li data-date="${esc(a.projected_date)}" data-account="${esc(a.account || "")}">${esc(t("fcAlertOn", a.projected_date, `${a.account} ${(a.fiscal_years || [a.fiscal_year]).join("+")}`))}</li>`).join("")}</ul>` : "";
  if (!doc) {
    box.className = "shortfall";
    delete box.dataset.date;
    box.innerHTML = `<p class="muted">${esc(fcMessage())}</p>${alertLines}`;
    floorBox.innerHTML = "";
    idleBox.innerHTML = "";
    return;
  }
  const zero = doc.crossings.cash_below_zero;
  let head;
  if (big(doc.position.available) < 0n) {
    head = `${t("shortfallNow")}${zero ? ` · ${t("shortfallOn", zero.date, zero.days, null)}` : ""}`;
  } else if (zero) {
    head = t("shortfallOn", zero.date, zero.days, money(zero.value));
  } else {
    head = t("shortfallNone", doc.horizon_days);
  }
  box.className = `shortfall ${zero || big(doc.position.available) < 0n ? "bad" : "ok"}`;
  box.dataset.date = zero ? zero.date : "";
  box.innerHTML = (zero ? crossingHtml("cash_below_zero", zero, head, lang) : `<p class="fc-head">${esc(head)}</p>`) + alertLines;

  const below = doc.crossings.cash_below_floor;
  floorBox.className = doc.floor === null ? "" : below ? "shortfall warn" : "shortfall ok";
  if (doc.floor === null) {
    floorBox.innerHTML = `<p class="muted">${esc(t("floorUnset"))}</p>`;
  } else if (below) {
    floorBox.innerHTML = crossingHtml("cash_below_floor", below, t("floorOn", below.date, below.days, money(doc.floor), money(below.value)), lang);
  } else {
    floorBox.innerHTML = `<p class="fc-head">${esc(t("floorNone", money(doc.floor), doc.horizon_days))}</p>`;
  }

  const idle = doc.idle_cash;
  if (!idle) {
    idleBox.innerHTML = "";
    return;
  }
  const ladder = idle.ladder.map((x) => `<span data-term="${x.term_days}" data-krw="${big(x.amount)}">${esc(t("idleTerm", x.term_days))} ${esc(money(x.amount))}</span>`).join(" · ");
  idleBox.innerHTML = `<p class="fc-head"><b class="amt" id="fc-idle-amount" data-krw="${big(idle.amount)}" data-days="${idle.days}" title="${esc(krwExact(big(idle.amount), lang))}">${esc(money(idle.amount))}</b>
    <small class="muted">${esc(t("idleLine", money(idle.floor), idle.days))}</small></p>
    <div class="fc-ladder muted">${ladder}</div>`;
}

// --- the day and the last 30 days, from the server ----------------------------------------------

/** Available now − the server's opening balance of today (null until the statement answered). */
function changeToday() {
  const tt = store.totals.get(org);
  if (!tt || !dayHist || dayHist.day !== kstDay()) return null;
  return tt.available - dayHist.open.available;
}

/** The day's curve: 00:00 (the statement's opening), every SAMPLE_MIN minutes as of, now (live). */
function dayPoints() {
  if (!dayHist) return [];
  const tt = store.totals.get(org);
  const pts = [{ ms: kstMidnight(dayHist.day), cash: dayHist.open.cash, available: dayHist.open.available }, ...dayHist.points];
  if (tt) pts.push({ ms: Math.max(Date.now(), pts[pts.length - 1].ms + 1), cash: tt.cash, available: tt.available, now: true });
  return pts;
}

/** The curve as drawn, with exact figures (for operators' consoles and the browser tests). */
export function dayCurve() {
  if (!dayHist) return null;
  return { day: dayHist.day, points: dayPoints().map((p) => ({ ms: p.ms, cash: String(p.cash), available: String(p.available), now: !!p.now })) };
}

async function loadDay() {
  if (dayBusy) return;
  dayBusy = true;
  const my = gen, o = org, day = kstDay();
  try {
    const open = await opening(o, day);
    const pts = await samples(o, sampleTimes(day, Date.now()));
    if (my !== gen) return;
    dayHist = { day, open, points: pts };
    dayError = false;
  } catch (e) {
    if (my !== gen) return;
    dayError = true;
    setTimeout(() => { if (my === gen) loadDay(); }, RETRY_MS);
  } finally {
    if (my === gen) dayBusy = false;
  }
  if (my !== gen || !root) return;
  paintKpis();
  paintDay();
  refreshChart();
}

/** A new sampling instant has passed (or the Korean day changed): fetch what is missing. */
async function topUpDay() {
  if (!dayHist || dayBusy) return;
  if (dayHist.day !== kstDay()) { dayHist = null; month = null; loadDay(); if (chartMode === "month") loadMonth(); return; }
  const have = new Set(dayHist.points.map((p) => p.ms));
  const want = sampleTimes(dayHist.day, Date.now()).filter((ms) => !have.has(ms));
  if (!want.length) return;
  dayBusy = true;
  const my = gen;
  try {
    const pts = await samples(org, want);
    if (my !== gen) return;
    dayHist.points = [...dayHist.points, ...pts].sort((x, y) => x.ms - y.ms);
  } catch { /* retried at the next tick */ } finally {
    if (my === gen) dayBusy = false;
  }
  refreshChart();
}

async function loadMonth() {
  const my = gen, o = org, today = kstDay();
  try {
    const rows = await statement(o, addDays(today, -(MONTH_DAYS - 1)), today);
    if (my !== gen) return;
    month = closings(rows);
    monthError = false;
  } catch {
    if (my !== gen) return;
    monthError = true;
    setTimeout(() => { if (my === gen && chartMode === "month") loadMonth(); }, RETRY_MS);
  }
  if (root && chartMode === "month") makeChart();
}

function paintDay() {
  const box = root && root.querySelector("#gov-day");
  if (!box) return;
  const lang = getLang();
  const tt = store.totals.get(org);
  if (!dayHist || !tt) { box.innerHTML = dayError ? `<span class="neg">${esc(t("historyUnavailable"))}</span>` : ""; return; }
  const fig = (id, v, figure, cls = "") => `<b class="amt clickable ${cls}" id="${id}" data-krw="${v}" data-figure="${figure}" tabindex="0" title="${esc(krwExact(v, lang))}">${esc(krw(v, lang))}</b>`;
  const d = tt.available - dayHist.open.available;
  box.innerHTML = `<span>${esc(t("dayOpening"))} ${esc(t("available"))} ${fig("day-open-available", dayHist.open.available, "open-available")}
    · ${esc(t("cash"))} ${fig("day-open-cash", dayHist.open.cash, "open-cash")}</span>
    <span>→ ${esc(t("dayNow"))} ${esc(t("available"))} ${fig("day-now-available", tt.available, "available")}
    · ${esc(t("cash"))} ${fig("day-now-cash", tt.cash, "cash")}</span>
    <span>(${esc(t("change"))} <b class="amt ${d > 0n ? "up" : d < 0n ? "down" : ""}" id="day-change" data-krw="${d}" title="${esc(krwExact(d, lang))}">${esc(krwDelta(d, lang))}</b>)</span>`;
}

/** Axis labels with just enough precision for the tick step: "1.25조" / "4,500억" / "1,118.5억";
 * "₩1.25tn" / "₩111.85bn". */
function axisKrw(u, vals) {
  const en = getLang() === "en";
  const step = vals.length > 1 ? Math.abs(vals[1] - vals[0]) : Math.abs(vals[0] || 1);
  const digits = (unit) => Math.min(4, Math.max(0, Math.ceil(-Math.log10(step / unit) - 1e-9)));
  return vals.map((v) => {
    if (v === null) return "";
    const a = Math.abs(v), sign = v < 0 ? "−" : "";
    const fmt = (unit) => (a / unit).toLocaleString(en ? "en-US" : "ko-KR", { minimumFractionDigits: digits(unit), maximumFractionDigits: digits(unit) });
    if (en) {
      if (a >= 1e12 && step >= 1e10) return `${sign}₩${fmt(1e12)}tn`;
      if (a >= 1e9 && step >= 1e6) return `${sign}₩${fmt(1e9)}bn`;
      return `${sign}₩${fmt(1e6)}m`;
    }
    if (a >= 1e12 && step >= 1e10) return `${sign}${fmt(1e12)}조`;
    if (a >= 1e8 && step >= 1e4) return `${sign}${fmt(1e8)}억`;
    return `${sign}${fmt(1e4)}만`;
  });
}

function axisTime(u, splits) {
  const fine = splits.length > 1 && splits[1] - splits[0] < 60;
  return splits.map((s) => (fine ? kstTime(s * 1000) : kstTime(s * 1000).slice(0, 5)));
}

function axisDay(u, splits) { return splits.map((s) => kstDay(s * 1000).slice(5).replace("-", "/")); }

/** [xs (s), available, cash]: doubles for drawing only; the exact figures are in the DOM. */
function chartData() {
  if (chartMode === "month") {
    const m = month || [];
    return [m.map((d) => kstMidnight(d.date) / 1000), m.map((d) => Number(d.available)), m.map((d) => Number(d.cash))];
  }
  const pts = dayPoints();
  return [pts.map((p) => p.ms / 1000), pts.map((p) => Number(p.available)), pts.map((p) => Number(p.cash))];
}

function paintChartHead() {
  const month30 = chartMode === "month";
  root.querySelector("#chart-title").textContent = t(month30 ? "chart30Title" : "chartTitle");
  const err = month30 ? monthError : dayError;
  root.querySelector("#chart-note").textContent = err ? t("historyUnavailable") : `${t(month30 ? "chart30Note" : "chartNote")} · KST`;
  root.querySelector("#chart-note").classList.toggle("neg", err);
  for (const b of root.querySelectorAll(".seg .btn")) b.classList.toggle("active", b.dataset.mode === chartMode);
  root.querySelector("#gov-chart").dataset.mode = chartMode;
  root.querySelector("#gov-day").hidden = month30;
}

function makeChart() {
  const el = root && root.querySelector("#gov-chart");
  if (!el) return;
  paintChartHead();
  if (!window.uPlot || tab !== "overview") return;
  if (chart) chart.destroy();
  chart = null;
  el.innerHTML = "";
  const U = window.uPlot;
  const width = Math.max(300, el.clientWidth);
  const month30 = chartMode === "month";
  const stepped = U.paths && U.paths.stepped ? U.paths.stepped({ align: 1 }) : undefined;
  const fmtMoney = (u, v) => (v == null ? "—" : krw(BigInt(Math.round(v)), getLang()));
  chart = new U({
    width, height: 260,
    tzDate: (ts) => U.tzDate(new Date(ts * 1e3), "Asia/Seoul"),
    cursor: { drag: { x: false, y: false } },
    legend: { show: true, live: true },
    scales: {
      x: { time: true, range: (u, min, max) => {
        if (month30) {
          // always the 30 days; a day without a statement row (no account had begun) stays empty
          const today = kstDay();
          return [kstMidnight(addDays(today, -(MONTH_DAYS - 1))) / 1000 - 43_200, kstMidnight(today) / 1000 + 43_200];
        }
        // the whole day so far, from 00:00 KST
        const t0 = dayHist ? kstMidnight(dayHist.day) / 1000 : (min ?? 0);
        return [t0, Math.max(max ?? t0, t0 + 60)];
      } },
      y: { range: (u, min, max) => { const pad = Math.max(Math.abs(max - min) * 0.15, Math.abs(max) * 0.001, 1e5); return [min - pad, max + pad]; } },
    },
    axes: [
      { stroke: "#5b6473", values: month30 ? axisDay : axisTime, space: month30 ? 50 : 70, ...(month30 ? { incrs: [86_400, 2 * 86_400, 7 * 86_400] } : {}), grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
      { stroke: "#5b6473", size: 84, values: axisKrw, grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
    ],
    series: [
      { label: month30 ? t("date") : getLang() === "en" ? "Time (KST)" : "시각 (KST)", value: (u, v) => (v == null ? "—" : month30 ? kstDay(v * 1000) : kstTime(v * 1000)) },
      { label: t("available"), value: fmtMoney, stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.08)", paths: month30 ? undefined : stepped, points: { show: month30 } },
      { label: t("cash"), value: fmtMoney, stroke: "#8a94a6", width: 1.5, dash: [5, 4], paths: month30 ? undefined : stepped, points: { show: month30 } },
    ],
  }, chartData(), el);
  if (resizeObs) resizeObs.disconnect();
  resizeObs = new ResizeObserver(() => { if (chart) chart.setSize({ width: Math.max(300, el.clientWidth), height: 260 }); });
  resizeObs.observe(el);
}

function refreshChart() { if (chart && chartMode === "today") chart.setData(chartData()); }

// --- the events behind a figure -------------------------------------------------------------------

const accName = (a) => { const m = gov.accounts.find((x) => x.account === a); return m ? m.name : a; };
const accType = (a) => { const m = gov.accounts.find((x) => x.account === a); return m ? m.type : ""; };

/** The positions (account × fiscal year) that make a total, with their share of it. */
function positionsOf(figure) {
  const out = [];
  const byKey = (rs, f) => rs.map((r) => ({ account: r.account, name: accName(r.account), fy: r.fiscal_year, value: f(r) }));
  if (figure === "open-available" || figure === "open-cash") {
    const f = figure === "open-cash" ? (r) => r.opening_cash : (r) => r.opening_cash - r.opening_committed;
    return byKey(dayHist ? dayHist.open.rows : [], f);
  }
  const live = [...rows.values()];
  if (figure === "restricted") return byKey(live.filter((r) => accType(r.account) === "custody"), (r) => r.cash);
  if (figure === "spendable") return byKey(live.filter((r) => accType(r.account) !== "custody"), (r) => r.available);
  if (figure === "change") {
    const open = new Map((dayHist ? dayHist.open.rows : []).map((r) => [rowKey(r), r.opening_cash - r.opening_committed]));
    for (const r of live) out.push({ account: r.account, name: accName(r.account), fy: r.fiscal_year, value: r.available - (open.get(rowKey(r)) ?? 0n) });
    return out.filter((p) => p.value !== 0n);
  }
  return byKey(live, (r) => r[figure]);
}

function onFigure(e) {
  const el = e.target.closest("[data-events], [data-figure]");
  if (!el || !root.contains(el)) return;
  if (el.dataset.events) {
    const [account, fy] = el.dataset.events.split("|");
    // a feed line is a change, not what the position's events sum to
    openEvents({ org, account, name: accName(account), fy: Number(fy), field: el.dataset.field || "cash", figure: el.dataset.delta ? null : big(el.dataset.krw) });
    return;
  }
  const figure = el.dataset.figure;
  if (figure === "change" && !dayHist) return;
  const atStart = figure.startsWith("open-");
  const field = atStart ? figure.slice(5) : figure === "change" ? "available" : figure;
  openBreakdown({
    org,
    label: `${atStart ? `${t("dayOpening")} ` : ""}${t(figure === "change" ? "change" : field)}`,
    field,
    figure: el.dataset.krw ? big(el.dataset.krw) : null,
    positions: positionsOf(figure),
    asOf: atStart ? kstMidnight(dayHist.day) - 1 : null,
    // a line of "change today" is a difference, not what its events sum to
    linesAreFigures: figure !== "change",
  });
}

// --- the statement tab ----------------------------------------------------------------------------

async function loadStatement(from, to) {
  const my = gen;
  stmt = { from, to, rows: stmt.rows, error: false, busy: true };
  paintStatement();
  try {
    const got = await statement(org, from, to);
    if (my !== gen) return;
    stmt = { from, to, rows: got, error: false, busy: false };
  } catch (e) {
    if (my !== gen) return;
    // 503: the history is being rebuilt or moved; otherwise the server's reason (e.g. a range too long)
    stmt = { from, to, rows: null, error: e.status === 503 ? t("historyUnavailable") : (e.body && e.body.detail) || t("loadError"), busy: false };
  }
  paintStatement();
}

function paintStatement() {
  const wrap = root && root.querySelector("#stmt-wrap");
  if (!wrap) return;
  const lang = getLang();
  if (stmt.from) {
    root.querySelector("#stmt-from").value = stmt.from;
    root.querySelector("#stmt-to").value = stmt.to;
    root.querySelector("#stmt-csv").href = statementURL(org, stmt.from, stmt.to, "csv").href;
  }
  wrap.dataset.busy = stmt.busy ? "1" : "";
  if (stmt.error) { wrap.innerHTML = `<p class="neg" id="stmt-error">${esc(stmt.error)}</p>`; return; }
  if (!stmt.rows) { wrap.innerHTML = `<div class="loading">…</div>`; return; }
  if (!stmt.rows.length) { wrap.innerHTML = `<p class="muted empty">${esc(t("stmtEmpty"))}</p>`; return; }
  const cols = STMT_COLS.filter((c) => stmt.rows.some((r) => r[c] !== 0n));
  const names = t("cols");
  const cell = (r, c, total = false) => {
    const v = r[c];
    if (c === "events") return `<td class="num">${v}</td>`;
    const attrs = total ? `data-total="${esc(r.date)}"` : `data-events="${esc(r.account)}|${r.fiscal_year}" data-date="${esc(r.date)}"`;
    return `<td class="num amt clickable" data-col="${c}" data-krw="${v}" ${attrs} tabindex="0" title="${esc(krwExact(v, lang))}">${v === 0n && !c.startsWith("opening") && !c.startsWith("closing") ? "" : esc(krw(v, lang))}</td>`;
  };
  const byDay = new Map();
  for (const r of stmt.rows) { if (!byDay.has(r.date)) byDay.set(r.date, []); byDay.get(r.date).push(r); }
  const html = [];
  for (const [date, rs] of byDay) {
    for (const r of rs) {
      html.push(`<tr data-date="${esc(date)}" data-account="${esc(r.account)}" data-fy="${r.fiscal_year}"><td>${esc(date)}</td><td><span class="acc-name">${esc(r.account_name || r.account)}</span><span class="acc-code">${esc(r.account)}</span></td><td class="num">${r.fiscal_year}</td>${cols.map((c) => cell(r, c)).join("")}</tr>`);
    }
    const tot = { date };
    for (const c of cols) tot[c] = rs.reduce((s, r) => s + r[c], 0n);
    html.push(`<tr class="day-total" data-date="${esc(date)}"><th>${esc(date)}</th><th colspan="2">${esc(t("dayTotal"))}</th>${cols.map((c) => cell(tot, c, true)).join("")}</tr>`);
  }
  wrap.innerHTML = `<table class="table stmt" id="stmt-table"><thead><tr><th>${esc(t("date"))}</th><th>${esc(t("account"))}</th><th class="num">${esc(t("fiscalYear"))}</th>${cols.map((c) => `<th class="num" data-col="${c}">${esc(names[c] || c)}</th>`).join("")}</tr></thead><tbody>${html.join("")}</tbody></table>`;
}

function onStatementFigure(e) {
  const el = e.target.closest("td[data-col]");
  if (!el) return;
  const c = el.dataset.col;
  const date = el.dataset.date || el.dataset.total;
  // a balance at the day's start: events up to 00:00; anything else: up to the day's end
  const asOf = AT_START.has(c) ? kstMidnight(date) - 1 : kstMidnight(addDays(date, 1)) - 1;
  const field = c.endsWith("committed") || c.startsWith("committed") ? "committed" : c === "closing_available" ? "available" : "cash";
  const isBalance = c.startsWith("opening") || c.startsWith("closing");
  if (el.dataset.total) {
    const rs = stmt.rows.filter((r) => r.date === date);
    openBreakdown({ org, label: `${date} ${t("cols")[c] || c}`, field, figure: big(el.dataset.krw),
      positions: rs.map((r) => ({ account: r.account, name: r.account_name || r.account, fy: r.fiscal_year, value: r[c] })), asOf });
    return;
  }
  const [account, fy] = el.dataset.events.split("|");
  openEvents({ org, account, name: accName(account), fy: Number(fy), asOf, field, figure: isBalance ? big(el.dataset.krw) : null });
}

// --- data ----------------------------------------------------------------------------------------

function applyBody(body, ms, isSnapshot, resumed = false) {
  const next = new Map((body.accounts || []).map((a) => [rowKey(a), toRow(a)]));
  const items = [];
  for (const [k, r] of next) {
    const p = rows.get(k);
    const dCash = r.cash - (p ? p.cash : 0n), dCommitted = r.committed - (p ? p.committed : 0n);
    if (dCash || dCommitted) items.push({ key: k, account: r.account, fy: r.fiscal_year, dCash, dCommitted });
  }
  rows = next;
  years = body.fiscal_years || [];
  asOf = body.as_of || asOf;
  setTotals(org, toTotals(body.totals), ms, body.last_event_at);
  // The first state (REST, then the stream's opening snapshot) is no "update"; a snapshot after
  // a reconnect is: it shows what changed while we were away.
  if (items.length && (!isSnapshot || resumed)) feed.unshift({ ms, items, resumed: isSnapshot });
  if (feed.length > FEED_MAX) feed.length = FEED_MAX;
  if (!root) return;
  paintKpis();
  paintAccounts(new Set(items.map((i) => i.key)));
  paintFeed();
  refreshChart();
}

async function loadAlerts(o) {
  try {
    const body = await getJSON(`v1/alerts?org=${encodeURIComponent(o)}`);
    const list = Array.isArray(body) ? body : body.alerts || body.open || [];
    alerts = new Map(list.map((a, i) => [a.alert_id || a.id || String(i), a]));
  } catch (e) {
    alerts = null; // 404 until the alert service exists; any other error: show none as well
  }
  paintAlerts();
  paintForecastFacts();
}

function onAlert(a) {
  if (!a || (a.org_code && a.org_code !== org)) return;
  if (!alerts) alerts = new Map();
  const id = a.alert_id || a.id || `${Date.now()}`;
  const state = String(a.state || a.status || "open").toLowerCase();
  if (["closed", "resolved", "cleared"].includes(state)) alerts.delete(id); else alerts.set(id, a);
  paintAlerts();
  paintForecastFacts();
}

export async function mount(el, arg, ctx) {
  gen += 1;
  root = el;
  org = arg;
  rows = new Map();
  feed = [];
  alerts = null;
  asOf = null;
  tab = "overview";
  fc = null;
  fcBusy = false;
  chartMode = "today";
  dayHist = null;
  dayError = false;
  dayBusy = false;
  month = null;
  monthError = false;
  stmt = { from: null, to: null, rows: null, error: false, busy: false };
  root.className = "view government";
  root.innerHTML = `<div class="loading">…</div>`;
  try {
    await loadGovernments();
    if (!store.govs.has(org)) {
      root.innerHTML = `<div class="error">${esc(t("unknownGov"))}: ${esc(org)} · <a href="#/">${esc(t("back"))}</a></div>`;
      ctx.crumbs([{ label: t("nation"), href: "#/" }, { label: org }]);
      return;
    }
    shellCtx = ctx;
    crumbs(ctx);
    gov = await getJSON(`v1/governments/${org}`);
    try {
      const pos = await getJSON(`v1/positions/${org}`);
      applyBody(pos, Date.now(), true);
    } catch (e) {
      if (e.status !== 503) throw e;
      store.notReady.add(org);
    }
  } catch (e) {
    if (root === el) root.innerHTML = `<div class="error">${esc(t("loadError"))}</div>`;
    setTimeout(() => { if (root === el && org === arg) mount(el, arg, ctx); }, 3000);
    return;
  }
  if (root !== el || org !== arg) return;
  shell();
  loadAlerts(org);
  loadDay();
  loadForecast();
  live = new LiveStream({
    org,
    on: {
      snapshot(d) {
        const b = d.governments && d.governments[org];
        if (b) applyBody(b, Date.now(), true, snapshots > 0);
        snapshots += 1;
      },
      positions(d) {
        const b = d.governments && d.governments[org];
        if (!b) return;
        applyBody(b, d.written_ms || Date.now(), false);
        soonForecast(); // its forecast follows the batch within about half a second
      },
      alerts: onAlert,
    },
  });
  let snapshots = 0;
  ctx.live = live;
  live.start();
  let ticks = 0;
  chartTimer = setInterval(() => {
    refreshChart();
    if (++ticks % 10 === 0) topUpDay(); // a new 15-minute instant, or a new Korean day
    if (ticks % FORECAST_POLL_S === 0) loadForecast(); // a 304 while it is unchanged
  }, 1000);
}

export function unmount() {
  gen += 1;
  closePanel();
  if (live) live.stop();
  live = null;
  clearInterval(chartTimer);
  clearTimeout(fcTimer);
  fcTimer = null;
  if (resizeObs) resizeObs.disconnect();
  resizeObs = null;
  if (fcResizeObs) fcResizeObs.disconnect();
  fcResizeObs = null;
  if (chart) chart.destroy();
  chart = null;
  if (fcChart) fcChart.destroy();
  fcChart = null;
  root = null;
}

export function relabel() {
  if (!root || !gov) return;
  if (shellCtx) crumbs(shellCtx);
  shell();
  relabelPanel();
}

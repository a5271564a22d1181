// Government view (#/gov/{org}): every account's cash, committed and available; a live chart of
// the day's movement; the latest updates as they arrive; open alerts; projected shortfall.

import { big, esc, krw, krwDelta, krwExact, kstTime } from "./format.js";
import { getLang, t } from "./i18n.js";
import { LiveStream } from "./live.js";
import { changeToday, coverage, getJSON, loadGovernments, setTotals, store, toTotals } from "./store.js";

export const name = "government";

const KPIS = ["cash", "committed", "available", "spendable", "restricted", "change"];
const FEED_MAX = 60;
const MIN_WINDOW_S = 30;

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
          <div class="kpi-value amt" id="gov-kpi-${k}" data-krw="0">—</div>
        </div>`).join("")}
      <div class="kpi kpi-coverage" title="${esc(t("legendHelp"))}">
        <div class="kpi-label">${esc(t("coverage"))} ⓘ</div>
        <div class="kpi-value" id="gov-kpi-coverage">—</div>
      </div>
    </section>
    <div class="grid2">
      <section class="panel chart-panel">
        <header><h2>${esc(t("chartTitle"))}</h2><small class="muted">${esc(t("chartNote"))} · KST</small>
</header>
        <div id="gov-chart" class="chart"></div>
      </section>
      <aside class="side">
        <section class="panel" id="gov-alerts-panel">
          <header><h2>${esc(t("alerts"))}</h2><span class="count" id="gov-alert-count"></span></header>
          <div id="gov-alerts" class="alerts"></div>
        </section>
        <section class="panel" id="gov-shortfall-panel">
          <header><h2>${esc(t("shortfall"))}</h2></header>
          <div id="gov-shortfall" class="shortfall"></div>
          <small class="muted">${esc(t("shortfallNote"))}</small>
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
          <tfoot><tr><th colspan="3">${esc(lang === "en" ? "Total" : "합계")}</th>
            <th class="num amt" data-field="cash"></th><th class="num amt" data-field="committed"></th><th class="num amt" data-field="available"></th><th></th></tr></tfoot>
        </table></div>
      </section>
      <section class="panel">
        <header><h2>${esc(t("feed"))}</h2></header>
        <ol id="gov-feed" class="feed"></ol>
      </section>
    </div>`;
  paintKpis();
  paintAccounts();
  paintFeed();
  paintAlerts();
  paintShortfall();
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
      const d = changeToday(org);
      el.textContent = krwDelta(d, lang);
      el.dataset.krw = d.toString();
      el.title = krwExact(d, lang);
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
      const cell = (f) => `<td class="num amt${f === "available" && r[f] < 0n ? " neg" : ""}" data-field="${f}" data-krw="${r[f]}" title="${esc(krwExact(r[f], lang))}">${esc(krw(r[f], lang))}</td>`;
      html.push(`<tr class="${cls}" data-account="${esc(r.account)}" data-fy="${r.fiscal_year}"><td><span class="acc-name">${esc(acc.name)}</span><span class="acc-code">${esc(acc.account)}</span></td>
        <td><span class="type type-${esc(acc.type)}">${esc(types[acc.type] || acc.type)}</span></td><td class="num">${r.fiscal_year}${r.final ? ` <span class="badge final" title="${esc(t("finalTitle"))}">${esc(t("final"))}</span>` : ""}</td>
        ${cell("cash")}${cell("committed")}${cell("available")}
        <td class="num muted">${r.last_event_at ? kstTime(r.last_event_at) : "—"}</td></tr>`);
    }
  }
  body.innerHTML = html.join("");
  const tt = store.totals.get(org);
  if (tt) for (const f of ["cash", "committed", "available"]) money(root.querySelector(`#gov-accounts tfoot [data-field="${f}"]`), tt[f], lang);
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
      if (it.dCash) bits.push(`${esc(t("cash"))} <b class="${it.dCash > 0n ? "up" : "down"}" title="${esc(krwExact(it.dCash, lang))}" data-krw="${it.dCash}">${esc(krwDelta(it.dCash, lang))}</b>`);
      if (it.dCommitted) bits.push(`${esc(t("committed"))} <b class="${it.dCommitted > 0n ? "down" : "up"}" title="${esc(krwExact(it.dCommitted, lang))}" data-krw="${it.dCommitted}">${esc(krwDelta(it.dCommitted, lang))}</b>`);
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

function paintShortfall() {
  // The server's projection, not the browser's: the projected_shortfall alert rule (open
  // commitments by due date and the account's recent outflow, docs/alerts.md) judges every
  // account; this panel shows the earliest date it found, or that it found none.
  const box = root && root.querySelector("#gov-shortfall");
  if (!box) return;
  const tt = store.totals.get(org);
  let text, cls = "";
  if (tt && tt.available < 0n) { text = t("shortfallNow"); cls = "bad"; } else if (alerts === null) {
    text = t("alertsUnavailable");
  } else {
    const ahead = [...alerts.values()].filter((a) => a.rule === "projected_shortfall" && a.projected_date)
      .sort((a, b) => String(a.projected_date).localeCompare(String(b.projected_date)));
    if (ahead.length) {
      const a = ahead[0];
      text = t("shortfallOn", a.projected_date, `${a.account} ${(a.fiscal_years || [a.fiscal_year]).join("+")}`);
      cls = "bad";
    } else { text = t("shortfallNone"); cls = "ok"; }
  }
  box.className = `shortfall ${cls}`;
  box.textContent = text;
}

// --- chart ---------------------------------------------------------------------------------------

function chartData() {
  const h = store.history.get(org) || { t: [], available: [], cash: [] };
  const now = Date.now() / 1000;
  const xs = [...h.t], av = [...h.available];
  if (xs.length) { xs.push(Math.max(now, xs[xs.length - 1] + 0.001)); av.push(av[av.length - 1]); }
  return [xs, av];
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

/** Shade the part of the window before the first value we have: no data, not "no change". */
function shadeNoData(u) {
  const xs = u.data[0];
  if (!xs.length) return;
  const left = u.bbox.left, x0 = Math.round(u.valToPos(xs[0], "x", true));
  if (x0 - left < 4) return;
  const ctx = u.ctx;
  ctx.save();
  ctx.fillStyle = "#f4f6f9";
  ctx.fillRect(left, u.bbox.top, x0 - left, u.bbox.height);
  ctx.fillStyle = "#9aa3b1";
  ctx.font = `${12 * devicePixelRatio}px ${getComputedStyle(document.body).fontFamily}`;
  ctx.textAlign = "center";
  ctx.fillText(t("chartNoData"), left + (x0 - left) / 2, u.bbox.top + u.bbox.height / 2);
  ctx.restore();
}

function makeChart() {
  const el = root.querySelector("#gov-chart");
  if (!el || !window.uPlot) return;
  if (chart) chart.destroy();
  const U = window.uPlot;
  const width = Math.max(300, el.clientWidth);
  const stepped = U.paths && U.paths.stepped ? U.paths.stepped({ align: 1 }) : undefined;
  chart = new U({
    width, height: 260,
    tzDate: (ts) => U.tzDate(new Date(ts * 1e3), "Asia/Seoul"),
    cursor: { drag: { x: false, y: false } },
    legend: { show: true, live: true },
    hooks: { drawClear: [shadeNoData] },
    scales: { x: { time: true, range: (u, min, max) => {
      // Everything since the first value we have, plus a margin on the left that grows with it
      // (at least 30 s), so a freshly opened page already shows a readable line.
      const span = max - (min ?? max);
      return [max - Math.max(MIN_WINDOW_S, span * 1.25), max];
    } }, y: { range: (u, min, max) => { const pad = Math.max(Math.abs(max - min) * 0.25, Math.abs(max) * 0.001, 1e5); return [min - pad, max + pad]; } } },
    axes: [
      { stroke: "#5b6473", values: axisTime, space: 70, grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
      { stroke: "#5b6473", size: 70, values: axisKrw, grid: { stroke: "#eef0f3" }, ticks: { stroke: "#dfe3e8" } },
    ],
    series: [
      { label: getLang() === "en" ? "Time (KST)" : "시각 (KST)", value: (u, v) => (v == null ? "—" : kstTime(v * 1000)) },
      { label: t("available"), value: (u, v) => (v == null ? "—" : krw(BigInt(Math.round(v)), getLang())), stroke: "#1f5fbf", width: 2, fill: "rgba(31,95,191,0.08)", paths: stepped, points: { show: false } },
    ],
  }, chartData(), el);
  if (resizeObs) resizeObs.disconnect();
  resizeObs = new ResizeObserver(() => { if (chart) chart.setSize({ width: Math.max(300, el.clientWidth), height: 260 }); });
  resizeObs.observe(el);
}

function refreshChart() { if (chart) chart.setData(chartData()); }

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
  paintShortfall();
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
  paintShortfall();
}

function onAlert(a) {
  if (!a || (a.org_code && a.org_code !== org)) return;
  if (!alerts) alerts = new Map();
  const id = a.alert_id || a.id || `${Date.now()}`;
  const state = String(a.state || a.status || "open").toLowerCase();
  if (["closed", "resolved", "cleared"].includes(state)) alerts.delete(id); else alerts.set(id, a);
  paintAlerts();
  paintShortfall();
}

export async function mount(el, arg, ctx) {
  root = el;
  org = arg;
  rows = new Map();
  feed = [];
  alerts = null;
  asOf = null;
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
  live = new LiveStream({
    org,
    on: {
      snapshot(d) {
        const b = d.governments && d.governments[org];
        if (b) applyBody(b, Date.now(), true, snapshots > 0);
        snapshots += 1;
      },
      positions(d) { const b = d.governments && d.governments[org]; if (b) applyBody(b, d.written_ms || Date.now(), false); },
      alerts: onAlert,
    },
  });
  let snapshots = 0;
  ctx.live = live;
  live.start();
  chartTimer = setInterval(() => { refreshChart(); }, 1000);
}

export function unmount() {
  if (live) live.stop();
  live = null;
  clearInterval(chartTimer);
  if (resizeObs) resizeObs.disconnect();
  resizeObs = null;
  if (chart) chart.destroy();
  chart = null;
  root = null;
}

export function relabel() {
  if (!root || !gov) return;
  if (shellCtx) crumbs(shellCtx);
  shell();
}

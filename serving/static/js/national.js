// National view: 243 governments grouped by their 17 provinces, coloured by the months of
// outflow their spendable funds cover; national and provincial totals; search; sort (also by the
// days until the server's forecast projects a shortfall: GET /v1/forecast).

import { esc, krw, krwDelta, krwExact, kstDay } from "./format.js";
import { kstMidnight, summaryAt } from "./history.js";
import { getLang, t } from "./i18n.js";
import { LiveStream } from "./live.js";
import { coverage, getJSON, loadGovernments, setTotals, store, sumTotals, toTotals } from "./store.js";

export const name = "national";

// "전국" for national roles; a provincial official's view is its province (the server sends only
// the governments in the signed-in role's scope).
function scopeLabel() {
  const me = store.session;
  if (!me || me.all_governments) return t("nation");
  return store.provinces.length === 1 ? store.provinces[0].name : t("scopeTitle", me.orgs.length);
}

const SORTS = ["code", "available", "cash", "committed", "change", "coverage", "shortfall"];
const SORT_LABEL = { code: "sortCode", available: "sortAvailable", cash: "sortCash", committed: "sortCommitted", change: "sortChange", coverage: "sortCoverage", shortfall: "sortShortfall" };
const ASCENDING = new Set(["coverage", "shortfall"]); // the most urgent first
const FORECAST_POLL_MS = 10_000;
const KPIS = ["cash", "committed", "available", "spendable", "change"];
const RETRY_MS = 5000;
const DAY_CHECK_MS = 30_000;

let root = null;
let live = null;
let tiles = new Map(); // org -> tile element
let sections = new Map(); // province code -> section element
let layoutTimer = null;
let shellCtx = null;
const ui = loadUi();

// --- change today ---------------------------------------------------------------------------------
// Available now − the available of today's opening, the same figure as the government view (its
// statement's opening). The openings of all the caller's governments come from ONE
// GET /v1/summary?as_of= read at 00:00 KST − 1 ms: as_of is inclusive and the statement's opening
// is every event before 00:00. Kept across views for the Korean day; read again when it changes.
// A refused read (503 history_unavailable: a worker not answering) shows no change, never a guess.

// --- the forecast in brief -------------------------------------------------------------------------
// Per government the server's forecast summary (GET /v1/forecast: the first day its expected cash
// is below zero and below its floor, with the days until then). Read on mount and every 10 s (a
// 304 while unchanged); a government without one sorts last.

let forecasts = new Map(); // org -> summary
let forecastTimer = null;

async function loadForecasts() {
  try {
    const body = await getJSON("v1/forecast");
    forecasts = new Map(body.governments.map((g) => [g.org_code, g]));
  } catch { return; /* kept as they were; read again at the next tick */ }
  if (!root || !tiles.size) return;
  for (const org of tiles.keys()) paintForecastMark(org);
  if (ui.sort === "shortfall") scheduleLayout();
}

/** The sort key "days until projected shortfall": below zero first (by its days), then below
 * the floor only (by its days), then none; the server's days, compared, never computed here. */
function shortfallKey(org) {
  const s = forecasts.get(org);
  if (!s) return [2, 0];
  if (s.cash_below_zero) return [0, s.cash_below_zero.days];
  if (s.cash_below_floor) return [1, s.cash_below_floor.days];
  return [2, 0];
}

function cmpKeys(a, b) { return cmp(a[0], b[0]) || cmp(a[1], b[1]); }

function paintForecastMark(org) {
  const el = tiles.get(org);
  const mark = el && el.querySelector('[data-field="shortfall"]');
  if (!mark) return;
  const s = forecasts.get(org);
  const zero = s && s.cash_below_zero, floor = s && s.cash_below_floor;
  const c = zero || floor;
  mark.textContent = zero ? t("tileShort", zero.days) : floor ? t("tileFloor", floor.days) : "";
  mark.className = `gov-fc${zero ? " fc-zero" : floor ? " fc-floor" : ""}`;
  mark.dataset.kind = zero ? "zero" : floor ? "floor" : "";
  mark.dataset.days = c ? String(c.days) : "";
  mark.dataset.date = c ? c.date : "";
  mark.title = c ? `${c.date} (${t(zero ? "shortfall" : "fcFloorTitle")})` : "";
}

let openings = null; // {day, byOrg: Map org -> {cash, committed, available}} of today
let openBusy = false;
let openError = false;
let openTimer = null;
let dayTimer = null;

async function loadOpenings() {
  if (openBusy) return;
  const day = kstDay();
  if (openings && openings.day === day) return;
  openBusy = true;
  clearTimeout(openTimer);
  openTimer = null;
  try {
    const byOrg = await summaryAt(kstMidnight(day) - 1);
    openings = { day, byOrg };
    openError = false;
  } catch {
    openError = true;
    if (root) openTimer = setTimeout(loadOpenings, RETRY_MS);
  } finally {
    openBusy = false;
  }
  paintAll();
}

/** Available now − today's opening available (BigInt), or null while the opening is unknown. */
function changeToday(org) {
  const tt = store.totals.get(org);
  if (!tt || !openings || openings.day !== kstDay()) return null;
  const o = openings.byOrg.get(org);
  return o ? tt.available - o.available : null;
}

/** Σ change today over orgs; null unless every one with a position is known (no partial sums). */
function sumChange(orgs) {
  let s = 0n;
  for (const o of orgs) {
    if (!store.totals.has(o)) continue;
    const d = changeToday(o);
    if (d === null) return null;
    s += d;
  }
  return s;
}

function loadUi() {
  const d = { q: "", sort: "code", dir: "desc", group: true };
  try {
    const u = { ...d, ...JSON.parse(sessionStorage.getItem("cashpos.national") || "{}"), q: "" };
    return SORTS.includes(u.sort) ? u : { ...u, sort: "code" }; // a sort saved by an older page
  } catch { return d; }
}
function saveUi() {
  try { sessionStorage.setItem("cashpos.national", JSON.stringify({ sort: ui.sort, dir: ui.dir, group: ui.group })); } catch { /* ignore */ }
}

function metric(org, key) {
  const tt = store.totals.get(org);
  if (key === "change") return changeToday(org) ?? -Infinity; // unknown: last
  if (key === "coverage") {
    const c = coverage(tt);
    return c.band === "none" ? Infinity : c.band === "neg" ? -Infinity : c.months ?? Infinity;
  }
  return tt ? tt[key] : 0n;
}

function cmp(a, b) { return a < b ? -1 : a > b ? 1 : 0; }

function orderOrgs(orgs) {
  if (ui.sort === "code") return [...orgs].sort((a, b) => store.govs.get(a).order - store.govs.get(b).order);
  const sign = ui.dir === "asc" ? 1 : -1;
  if (ui.sort === "shortfall") {
    return [...orgs].sort((a, b) => sign * cmpKeys(shortfallKey(a), shortfallKey(b)) || store.govs.get(a).order - store.govs.get(b).order);
  }
  return [...orgs].sort((a, b) => sign * cmp(metric(a, ui.sort), metric(b, ui.sort)) || store.govs.get(a).order - store.govs.get(b).order);
}

function matches(org, q) {
  if (!q) return true;
  const g = store.govs.get(org);
  const hay = `${g.name} ${g.org_code} ${g.province_name}`.toLowerCase();
  return q.toLowerCase().split(/\s+/).every((w) => hay.includes(w));
}

function money(el, v, lang = getLang()) {
  el.textContent = krw(v, lang);
  el.dataset.krw = v.toString();
  el.title = krwExact(v, lang);
}

function delta(el, v, lang = getLang(), quietZero = false) {
  el.classList.toggle("up", v !== null && v > 0n);
  el.classList.toggle("down", v !== null && v < 0n);
  if (v === null) {
    el.textContent = quietZero ? "" : "—";
    delete el.dataset.krw;
    el.title = openError ? t("historyUnavailable") : t("changeHelp");
    return;
  }
  el.textContent = quietZero && v === 0n ? "" : krwDelta(v, lang);
  el.dataset.krw = v.toString();
  el.title = `${t("change")}: ${krwExact(v, lang)} · ${t("changeHelp")}`;
}

// --- rendering -----------------------------------------------------------------------------------

function shell() {
  const sortOpts = SORTS.map((s) => `<option value="${s}">${esc(t(SORT_LABEL[s]))}</option>`).join("");
  const bands = ["neg", "lt1", "lt2", "ok", "none"].map((b) => `<span class="legend-item"><i class="sw band-${b}"></i>${esc(t("band")[b])}</span>`).join("");
  root.innerHTML = `
    <section class="kpis" id="nat-kpis" aria-label="${esc(scopeLabel())}">
      ${KPIS.map((k) => `
        <div class="kpi kpi-${k}" title="${esc(t(k + "Help"))}">
          <div class="kpi-label">${esc(scopeLabel())} ${esc(t(k))}</div>
          <div class="kpi-value amt" id="kpi-${k}" data-krw="0">—</div>
        </div>`).join("")}
      <div class="kpi kpi-counts">
        <div class="kpi-label">${esc(t("governments"))}</div>
        <div class="kpi-value"><span id="kpi-count">${store.govs.size}</span><span class="kpi-sub" id="kpi-neg"></span></div>
      </div>
    </section>
    <section class="toolbar">
      <label class="search"><span class="sr-only">${esc(t("search"))}</span>
        <input id="search" type="search" placeholder="${esc(t("search"))}" autocomplete="off" value="${esc(ui.q)}"></label>
      <label class="field">${esc(t("sort"))}
        <select id="sort">${sortOpts}</select></label>
      <button id="sort-dir" class="btn" type="button"></button>
      <label class="check"><input id="group" type="checkbox"> ${esc(t("group"))}</label>
      <span id="result-count" class="muted"></span>
      <div class="legend" title="${esc(t("legendHelp"))}"><span class="legend-title">${esc(t("legendTitle"))} ⓘ</span>${bands}</div>
    </section>
    <div id="nat-empty" class="empty" hidden>${esc(t("noMatch"))}</div>
    <div id="nat-groups" class="groups"></div>`;
  root.querySelector("#sort").value = ui.sort;
  root.querySelector("#group").checked = ui.group;
  root.querySelector("#sort-dir").textContent = ui.dir === "asc" ? `↑ ${t("asc")}` : `↓ ${t("desc")}`;
  root.querySelector("#sort-dir").dataset.dir = ui.dir;
  root.querySelector("#sort-dir").disabled = ui.sort === "code";

  root.querySelector("#search").addEventListener("input", (e) => { ui.q = e.target.value.trim(); layout(); });
  root.querySelector("#sort").addEventListener("change", (e) => {
    ui.sort = e.target.value;
    ui.dir = ASCENDING.has(ui.sort) ? "asc" : "desc";
    saveUi(); relabelToolbar(); layout();
  });
  root.querySelector("#sort-dir").addEventListener("click", () => {
    ui.dir = ui.dir === "asc" ? "desc" : "asc";
    saveUi(); relabelToolbar(); layout();
  });
  root.querySelector("#group").addEventListener("change", (e) => { ui.group = e.target.checked; saveUi(); layout(); });

  // One section per province plus the flat list; tiles are created once and moved around.
  const groups = root.querySelector("#nat-groups");
  tiles = new Map();
  sections = new Map();
  for (const p of store.provinces) {
    const sec = document.createElement("section");
    sec.className = "prov";
    sec.dataset.province = p.code;
    sec.innerHTML = `
      <header class="prov-head">
        <h2><a href="#/gov/${p.code}">${esc(p.name)}</a></h2>
        <span class="prov-count muted">${esc(t("govCount", p.orgs.length))}</span>
        <dl class="prov-totals">
          <div><dt>${esc(t("available"))}</dt><dd class="amt strong" data-field="available"></dd></div>
          <div><dt>${esc(t("cash"))}</dt><dd class="amt" data-field="cash"></dd></div>
          <div><dt>${esc(t("committed"))}</dt><dd class="amt" data-field="committed"></dd></div>
          <div><dt>${esc(t("change"))}</dt><dd class="amt delta" data-field="change"></dd></div>
        </dl>
      </header>
      <div class="tiles"></div>`;
    sections.set(p.code, sec);
    groups.append(sec);
  }
  const flat = document.createElement("section");
  flat.className = "prov flat";
  flat.dataset.province = "all";
  flat.innerHTML = `<div class="tiles"></div>`;
  sections.set("all", flat);
  groups.append(flat);

  for (const [org, g] of store.govs) {
    const a = document.createElement("a");
    a.className = "gov band-none";
    a.dataset.org = org;
    a.href = `#/gov/${org}`;
    a.innerHTML = `
      <div class="gov-top"><span class="gov-name">${esc(g.name)}</span>${g.level === "metropolitan" ? `<span class="badge">${esc(t("metro"))}</span>` : ""}${g.level === "metropolitan" ? "" : `<span class="gov-prov">${esc(g.province_name)}</span>`}<span class="gov-code">${org}</span></div>
      <div class="gov-main"><span class="gov-avail amt" data-field="available"></span><span class="gov-change amt delta" data-field="change"></span></div>
      <div class="gov-sub"><span class="lbl">${esc(t("cashShort"))}</span> <span class="amt" data-field="cash"></span><span class="lbl">${esc(t("committedShort"))}</span> <span class="amt" data-field="committed"></span></div>
      <div class="gov-fc" data-field="shortfall"></div>`;
    tiles.set(org, a);
  }
  for (const org of tiles.keys()) { paintTile(org); paintForecastMark(org); }
  paintTotals();
  layout();
}

function relabelToolbar() {
  const b = root.querySelector("#sort-dir");
  b.textContent = ui.dir === "asc" ? `↑ ${t("asc")}` : `↓ ${t("desc")}`;
  b.dataset.dir = ui.dir;
  b.disabled = ui.sort === "code";
}

function paintTile(org) {
  const el = tiles.get(org);
  if (!el) return;
  const lang = getLang();
  const tt = store.totals.get(org);
  const g = store.govs.get(org);
  const cov = coverage(tt);
  el.className = `gov band-${store.notReady.has(org) ? "none" : cov.band}`;
  if (!tt) {
    el.querySelector('[data-field="available"]').textContent = store.notReady.has(org) ? t("notReady") : "—";
    return;
  }
  money(el.querySelector('[data-field="available"]'), tt.available, lang);
  money(el.querySelector('[data-field="cash"]'), tt.cash, lang);
  money(el.querySelector('[data-field="committed"]'), tt.committed, lang);
  delta(el.querySelector('[data-field="change"]'), changeToday(org), lang, true);
  const cm = cov.months === null ? "—" : t("months", cov.months.toFixed(1));
  el.title = `${g.name} (${org}) · ${g.province_name}\n${t("available")}: ${krwExact(tt.available, lang)}\n${t("cash")}: ${krwExact(tt.cash, lang)}\n${t("committed")}: ${krwExact(tt.committed, lang)}\n${t("spendable")}: ${krwExact(tt.spendable, lang)}\n${t("coverage")}: ${cm}`;
}

function paintTotals() {
  const lang = getLang();
  const n = sumTotals(store.govs.keys());
  for (const k of KPIS) {
    const el = root.querySelector(`#kpi-${k}`);
    if (k === "change") delta(el, sumChange(store.govs.keys()), lang); else money(el, n[k], lang);
  }
  let neg = 0, short = 0;
  for (const org of store.govs.keys()) {
    const b = coverage(store.totals.get(org)).band;
    if (b === "neg") neg += 1; else if (b === "lt1") short += 1;
  }
  root.querySelector("#kpi-neg").innerHTML = ` <span class="pill band-neg" title="${esc(t("band").neg)}">${neg}</span> <span class="pill band-lt1" title="${esc(t("band").lt1)}">${short}</span>`;
  for (const p of store.provinces) {
    const s = sumTotals(p.orgs);
    const sec = sections.get(p.code);
    for (const k of ["available", "cash", "committed"]) money(sec.querySelector(`.prov-totals [data-field="${k}"]`), s[k], lang);
    delta(sec.querySelector('.prov-totals [data-field="change"]'), sumChange(p.orgs), lang);
  }
}

/** Filter and order: tiles are moved (appendChild), never rebuilt. */
function layout() {
  clearTimeout(layoutTimer);
  layoutTimer = null;
  if (!root) return;
  let shown = 0;
  const flat = sections.get("all");
  root.querySelector("#nat-groups").classList.toggle("is-flat", !ui.group);
  if (ui.group) {
    flat.hidden = true;
    let provs = [...store.provinces];
    if (ui.sort !== "code") {
      const sign = ui.dir === "asc" ? 1 : -1;
      const key = (p) => {
        if (ui.sort === "shortfall") return p.orgs.map(shortfallKey).reduce((m, k) => (cmpKeys(k, m) < 0 ? k : m), [2, 0]);
        if (ui.sort === "coverage") { const c = coverage(sumTotals(p.orgs)); return c.months ?? Infinity; }
        if (ui.sort === "change") return sumChange(p.orgs) ?? -Infinity;
        return sumTotals(p.orgs)[ui.sort];
      };
      const keys = new Map(provs.map((p) => [p.code, key(p)]));
      const order = ui.sort === "shortfall" ? cmpKeys : cmp;
      provs.sort((a, b) => sign * order(keys.get(a.code), keys.get(b.code)));
    }
    const groups = root.querySelector("#nat-groups");
    for (const p of provs) {
      const sec = sections.get(p.code);
      const box = sec.querySelector(".tiles");
      const vis = orderOrgs(p.orgs).filter((o) => matches(o, ui.q));
      for (const o of vis) box.append(tiles.get(o));
      for (const o of p.orgs) if (!vis.includes(o) && tiles.get(o).parentNode === box) tiles.get(o).remove();
      sec.hidden = vis.length === 0;
      shown += vis.length;
      groups.insertBefore(sec, flat);
    }
  } else {
    for (const p of store.provinces) sections.get(p.code).hidden = true;
    flat.hidden = false;
    const box = flat.querySelector(".tiles");
    const vis = orderOrgs([...store.govs.keys()]).filter((o) => matches(o, ui.q));
    const set = new Set(vis);
    for (const [o, el] of tiles) if (!set.has(o) && el.parentNode) el.remove();
    for (const o of vis) box.append(tiles.get(o));
    shown = vis.length;
  }
  root.querySelector("#result-count").textContent = t("results", shown, store.govs.size);
  root.querySelector("#nat-empty").hidden = shown > 0;
}

function scheduleLayout() {
  if (ui.sort === "code" && !ui.q) return; // order does not depend on values
  if (!layoutTimer) layoutTimer = setTimeout(layout, 300);
}

function flash(org) {
  const el = tiles.get(org);
  if (!el) return;
  el.classList.remove("flash");
  void el.offsetWidth; // restart the animation
  el.classList.add("flash");
}

// --- data ------------------------------------------------------------------------------------

function applyGovernments(govs, ms, isSnapshot) {
  for (const [org, body] of Object.entries(govs)) {
    if (!store.govs.has(org)) continue;
    const prev = store.totals.get(org);
    const next = toTotals(body.totals);
    setTotals(org, next, ms, body.last_event_at);
    if (root) {
      paintTile(org);
      if (!isSnapshot || (prev && prev.available !== next.available)) flash(org);
    }
  }
}

export async function mount(el, _arg, ctx) {
  root = el;
  root.className = "view national";
  root.innerHTML = `<div class="loading">…</div>`;
  shellCtx = ctx;
  ctx.crumbs([{ label: scopeLabel() }]);
  live = new LiveStream({
    on: {
      snapshot(d) {
        for (const o of d.not_ready || []) store.notReady.add(o);
        applyGovernments(d.governments || {}, Date.now(), true);
        if (root && tiles.size) { paintTotals(); layout(); }
      },
      positions(d) {
        for (const o of d.not_ready || []) store.notReady.add(o);
        applyGovernments(d.governments || {}, d.written_ms || Date.now(), false);
        if (root && tiles.size) { paintTotals(); scheduleLayout(); }
      },
    },
  });
  ctx.live = live;
  try {
    await loadGovernments();
    ctx.crumbs([{ label: scopeLabel() }]); // the scope's name is known now
    try {
      const summary = await getJSON("v1/summary");
      for (const row of summary.governments) setTotals(row.org_code, toTotals(row));
    } catch (e) {
      if (e.status !== 503) throw e; // 503: being rebuilt; the stream's snapshot fills in
    }
  } catch (e) {
    root.innerHTML = `<div class="error">${esc(t("loadError"))}</div>`;
    setTimeout(() => { if (root === el && live) { unmount(); mount(el, _arg, ctx); } }, 3000);
    return;
  }
  if (root !== el || !live) return;
  shell();
  live.start();
  loadOpenings();
  loadForecasts();
  forecastTimer = setInterval(loadForecasts, FORECAST_POLL_MS);
  // the Korean day changed: today's openings are another read
  dayTimer = setInterval(() => { if (openings && openings.day !== kstDay()) { paintAll(); loadOpenings(); } }, DAY_CHECK_MS);
}

function paintAll() {
  if (!root || !tiles.size) return;
  for (const org of tiles.keys()) paintTile(org);
  paintTotals();
  layout();
}

export function unmount() {
  if (live) live.stop();
  live = null;
  clearTimeout(layoutTimer);
  layoutTimer = null;
  clearTimeout(openTimer);
  openTimer = null;
  clearInterval(dayTimer);
  dayTimer = null;
  clearInterval(forecastTimer);
  forecastTimer = null;
  root = null;
  tiles = new Map();
  sections = new Map();
}

export function relabel() {
  if (shellCtx) shellCtx.crumbs([{ label: scopeLabel() }]);
  if (root && tiles.size) shell();
}

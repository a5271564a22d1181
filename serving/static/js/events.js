// The events behind a figure: a side panel listing, for one account × fiscal year, the events
// that built it (event time order), each with its effect, the running balance after it and its
// source coordinates (topic/partition/offset), paged with the server's `next` cursor. A total
// opens its breakdown by account × fiscal year first, each line leading to its events.

import { esc, krw, krwDelta, krwExact, kstDay, kstTime } from "./format.js";
import { eventsPage } from "./history.js";
import { getLang, t } from "./i18n.js";

const PAGE = 100;
let box = null;
let state = null; // {org, account, name, fy, asOf, next, lines, total, sumCash, sumCommitted}

function ensureBox() {
  if (box && document.body.contains(box)) return box;
  box = document.createElement("aside");
  box.id = "events-panel";
  box.className = "drawer";
  box.hidden = true;
  box.setAttribute("role", "dialog");
  box.setAttribute("aria-modal", "false");
  document.body.append(box);
  document.addEventListener("keydown", (e) => { if (e.key === "Escape") closePanel(); });
  return box;
}

export function closePanel() {
  if (box) { box.hidden = true; box.innerHTML = ""; }
  state = null;
}

function head(title, sub) {
  return `<header class="drawer-head"><div><h2>${esc(title)}</h2><small class="muted">${sub}</small></div>
    <button class="btn" type="button" id="events-close" aria-label="${esc(t("close"))}">✕</button></header>`;
}

function bindClose() { box.querySelector("#events-close").addEventListener("click", closePanel); }

/** A total's breakdown: the positions that make it, each opening its events. */
export function openBreakdown({ org, label, field, figure, positions, asOf = null, linesAreFigures = true }) {
  ensureBox();
  state = null;
  const lang = getLang();
  const sum = positions.reduce((s, p) => s + p.value, 0n);
  box.hidden = false;
  box.dataset.kind = "breakdown";
  box.innerHTML = `${head(label, `${esc(t("breakdownNote"))}`)}
    <div class="table-wrap"><table class="table" id="breakdown"><thead><tr><th>${esc(t("account"))}</th><th class="num">${esc(t("fiscalYear"))}</th><th class="num">${esc(t(field))}</th></tr></thead>
    <tbody>${positions.map((p) => `<tr class="clickable" data-account="${esc(p.account)}" data-fy="${p.fy}" data-krw="${p.value}" tabindex="0">
      <td><span class="acc-name">${esc(p.name)}</span><span class="acc-code">${esc(p.account)}</span></td><td class="num">${p.fy}</td>
      <td class="num amt" title="${esc(krwExact(p.value, lang))}">${esc(krw(p.value, lang))}</td></tr>`).join("")}</tbody>
    <tfoot><tr><th colspan="2">${esc(t("total"))}</th><th class="num amt" data-krw="${sum}" title="${esc(krwExact(sum, lang))}">${esc(krw(sum, lang))}</th></tr></tfoot></table></div>
    ${figure !== null && figure !== sum ? `<p class="neg">${esc(t("breakdownMismatch"))}</p>` : ""}`;
  bindClose();
  for (const tr of box.querySelectorAll("#breakdown tbody tr")) {
    const go = () => {
      const p = positions.find((x) => x.account === tr.dataset.account && String(x.fy) === tr.dataset.fy);
      openEvents({ org, account: p.account, name: p.name, fy: p.fy, asOf, field, figure: linesAreFigures ? p.value : null });
    };
    tr.addEventListener("click", go);
    tr.addEventListener("keydown", (e) => { if (e.key === "Enter") go(); });
  }
}

/** The events of one account × fiscal year (as of asOf ms, if given). */
export async function openEvents({ org, account, name, fy, asOf = null, field = "cash", figure = null }) {
  ensureBox();
  state = { org, account, name, fy, asOf, field, figure, next: null, lines: [], total: null, sumCash: 0n, sumCommitted: 0n, loading: true };
  box.hidden = false;
  box.dataset.kind = "events";
  paint();
  await more();
}

async function more() {
  const s = state;
  if (!s) return;
  s.loading = true;
  paintFoot();
  try {
    const page = await eventsPage(s.org, s.account, s.fy, { asOf: s.asOf, cursor: s.next, limit: PAGE });
    if (state !== s) return;
    s.lines.push(...page.lines);
    for (const l of page.lines) { s.sumCash += l.cash; s.sumCommitted += l.committed; }
    s.next = page.next;
    s.total = page.total;
    s.chain = page.chain;
    s.error = null;
    appendRows(page.lines);
  } catch (e) {
    if (state !== s) return;
    s.error = e.status === 503 ? t("historyUnavailable") : t("loadError");
  }
  s.loading = false;
  paintFoot();
}

function paint() {
  const s = state;
  const lang = getLang();
  const when = s.asOf !== null ? `${t("asOf")} ${kstDay(s.asOf)} ${kstTime(s.asOf)} KST` : t("upToNow");
  box.innerHTML = `${head(`${s.name} · ${s.fy}`, `${esc(s.account)} · ${esc(when)} · ${esc(t("eventsNote"))}`)}
    ${s.figure !== null ? `<div class="drawer-figure">${esc(t(s.field))} <b class="amt" id="events-figure" data-krw="${s.figure}" title="${esc(krwExact(s.figure, lang))}">${esc(krw(s.figure, lang))}</b></div>` : ""}
    <div class="table-wrap drawer-body"><table class="table" id="events-table"><thead><tr>
      <th>${esc(t("occurredAt"))}</th><th>${esc(t("kind"))}</th><th>${esc(t("eventId"))}</th>
      <th class="num">${esc(t("cashEffect"))}</th><th class="num">${esc(t("committedEffect"))}</th>
      <th class="num">${esc(t("cashAfter"))}</th><th class="num">${esc(t("committedAfter"))}</th>
      <th>${esc(t("sourceCoords"))}</th><th>${esc(t("runningHash"))}</th></tr></thead><tbody></tbody></table></div>
    <footer class="drawer-foot" id="events-foot"></footer>`;
  bindClose();
  appendRows(s.lines);
  paintFoot();
}

function appendRows(lines) {
  const body = box && box.querySelector("#events-table tbody");
  if (!body) return;
  const lang = getLang();
  const kinds = t("kinds");
  const amt = (v, cls = "") => `<td class="num amt ${cls}" title="${esc(krwExact(v, lang))}">${v === 0n ? "" : esc(krw(v, lang))}</td>`;
  const dlt = (v) => `<td class="num amt ${v > 0n ? "up" : v < 0n ? "down" : ""}" title="${esc(krwExact(v, lang))}">${v === 0n ? "" : esc(krwDelta(v, lang))}</td>`;
  body.insertAdjacentHTML("beforeend", lines.map((l) => {
    const src = l.source ? `${l.source.topic} · p${l.source.partition} · @${l.source.offset}` : "—";
    return `<tr data-event-id="${esc(l.event_id ?? "")}" data-occurred="${esc(l.occurred_at)}" data-cash="${l.cash}" data-committed="${l.committed}" data-cash-after="${l.cash_after}" data-committed-after="${l.committed_after}"${l.source ? ` data-topic="${esc(l.source.topic)}" data-partition="${l.source.partition}" data-offset="${l.source.offset}"` : ""}>
      <td><time datetime="${esc(l.occurred_at)}">${kstDay(l.occurred_at)} ${kstTime(l.occurred_at)}</time></td>
      <td>${esc((l.kind && kinds[l.kind]) || l.kind || (l.event_id === null ? t("lapse") : "—"))}</td>
      <td class="mono" title="${esc(l.event_id ?? l.commitment_id ?? "")}">${esc(l.event_id ?? l.commitment_id ?? "—")}</td>
      ${dlt(l.cash)}${dlt(l.committed)}${amt(l.cash_after)}${amt(l.committed_after)}
      <td class="mono">${esc(src)}</td><td class="mono" title="${esc(l.running_hash)}">${esc(l.running_hash.slice(0, 12))}…</td></tr>`;
  }).join(""));
}

function paintFoot() {
  const foot = box && box.querySelector("#events-foot");
  if (!foot || !state) return;
  const s = state;
  const lang = getLang();
  const parts = [];
  if (s.total !== null) parts.push(`<span id="events-count" data-shown="${s.lines.length}" data-total="${s.total}">${esc(t("eventsShown", s.lines.length, s.total))}</span>`);
  parts.push(`<span>${esc(t("cashEffect"))} Σ <b class="amt" id="events-sum-cash" data-krw="${s.sumCash}" title="${esc(krwExact(s.sumCash, lang))}">${esc(krw(s.sumCash, lang))}</b></span>`);
  parts.push(`<span>${esc(t("committedEffect"))} Σ <b class="amt" id="events-sum-committed" data-krw="${s.sumCommitted}" title="${esc(krwExact(s.sumCommitted, lang))}">${esc(krw(s.sumCommitted, lang))}</b></span>`);
  if (s.chain) parts.push(`<span class="mono" title="${esc(t("chainHead"))}: ${esc(s.chain.head)}">${esc(t("chainHead"))} ${esc(String(s.chain.head).slice(0, 12))}…</span>`);
  if (s.error) parts.push(`<span class="neg">${esc(s.error)}</span>`);
  foot.innerHTML = parts.join(" · ") + (s.next ? ` <button class="btn" type="button" id="events-more"${s.loading ? " disabled" : ""}>${esc(t("more"))}</button>` : "");
  foot.dataset.complete = !s.loading && !s.next && !s.error && s.total !== null ? "1" : "";
  const b = foot.querySelector("#events-more");
  if (b) b.addEventListener("click", () => more());
}

export function relabelPanel() {
  if (box && !box.hidden && state) paint();
}

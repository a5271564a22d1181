// The server's history (event time, Korean days): the day's curve from 00:00 KST, daily closings,
// the statement, and the events behind a figure (serving/history.py). Money stays BigInt.

import { big, kstDay } from "./format.js";
import { API, getJSON } from "./store.js";

export const SAMPLE_MIN = 15; // the day's curve: positions as of every 15 minutes (≤ 96 reads a day)
const PARALLEL = 6;

/** Epoch ms of 00:00 KST of a Korean day "YYYY-MM-DD". */
export function kstMidnight(day) { return Date.parse(`${day}T00:00:00+09:00`); }

/** "YYYY-MM-DD" n days after day (calendar arithmetic, no time zone involved). */
export function addDays(day, n) {
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + n);
  return d.toISOString().slice(0, 10);
}

export function iso(ms) { return new Date(ms).toISOString(); }

const MONEY_COLS = (c) => c !== "date" && c !== "account" && c !== "account_name" && c !== "fiscal_year";

function toRow(r) {
  const out = { ...r };
  for (const k of Object.keys(r)) if (MONEY_COLS(k)) out[k] = big(r[k]);
  return out;
}

export function statementURL(org, from, to, format = null) {
  const u = new URL(`v1/statements/${org}`, API);
  u.searchParams.set("from", from);
  u.searchParams.set("to", to);
  if (format) u.searchParams.set("format", format);
  return u;
}

/** Statement rows (money as BigInt), one per day × account × fiscal year. */
export async function statement(org, from, to) {
  const body = await getJSON(`v1/statements/${org}?from=${from}&to=${to}`);
  return body.rows.map(toRow);
}

/** Sum of columns over rows: {col: BigInt}. */
export function sumRows(rows, cols) {
  const s = Object.fromEntries(cols.map((c) => [c, 0n]));
  for (const r of rows) for (const c of cols) s[c] += r[c];
  return s;
}

/** Per day: Σ closing cash / available over the accounts (days in order). */
export function closings(rows) {
  const by = new Map();
  for (const r of rows) {
    const d = by.get(r.date) || { date: r.date, cash: 0n, available: 0n, committed: 0n };
    d.cash += r.closing_cash;
    d.available += r.closing_available;
    d.committed += r.closing_committed;
    by.set(r.date, d);
  }
  return [...by.values()].sort((a, b) => a.date.localeCompare(b.date));
}

/** Totals of the government as they stood at ms (event time). */
export async function positionsAt(org, ms) {
  const body = await getJSON(`v1/positions/${org}?as_of=${encodeURIComponent(iso(ms))}`);
  return { ms, cash: big(body.totals.cash), committed: big(body.totals.committed), available: big(body.totals.available) };
}

/** The caller's governments as they stood at ms (event time), from one read of every worker:
 *  Map org -> {cash, committed, available} (BigInt); throws (503 history_unavailable) if any
 *  worker cannot answer (never a partial sum). */
export async function summaryAt(ms) {
  const body = await getJSON(`v1/summary?as_of=${encodeURIComponent(iso(ms))}`);
  const out = new Map();
  for (const g of body.governments) out.set(g.org_code, { cash: big(g.cash), committed: big(g.committed), available: big(g.available) });
  return out;
}

/** The instants sampled for the day's curve: every SAMPLE_MIN minutes after 00:00, before now. */
export function sampleTimes(day, nowMs) {
  const t0 = kstMidnight(day), step = SAMPLE_MIN * 60_000, out = [];
  for (let t = t0 + step; t < nowMs && t < t0 + 86_400_000; t += step) out.push(t);
  return out;
}

/** Positions as of each instant, PARALLEL requests at a time; in order. */
export async function samples(org, times) {
  const out = new Array(times.length);
  let next = 0;
  async function worker() {
    while (next < times.length) {
      const i = next++;
      out[i] = await positionsAt(org, times[i]);
    }
  }
  await Promise.all(Array.from({ length: Math.min(PARALLEL, times.length) }, worker));
  return out;
}

/** The day's opening (Σ of the statement's opening over the accounts) and its rows. */
export async function opening(org, day = kstDay()) {
  const rows = await statement(org, day, day);
  const s = sumRows(rows, ["opening_cash", "opening_committed", "closing_cash", "closing_committed"]);
  return {
    day,
    rows,
    cash: s.opening_cash,
    committed: s.opening_committed,
    available: s.opening_cash - s.opening_committed,
    closingCash: s.closing_cash,
    closingAvailable: s.closing_cash - s.closing_committed,
  };
}

/** One page of the events behind a position (account × fiscal year), as of `asOf` (ms) if given. */
export async function eventsPage(org, account, fy, { asOf = null, cursor = null, limit = 100 } = {}) {
  const q = new URLSearchParams({ fiscal_year: String(fy), limit: String(limit) });
  if (asOf !== null) q.set("as_of", iso(asOf));
  if (cursor) q.set("cursor", cursor);
  const body = await getJSON(`v1/positions/${org}/${encodeURIComponent(account)}/events?${q}`);
  for (const l of body.lines) for (const k of ["cash", "committed", "cash_after", "committed_after"]) l[k] = big(l[k]);
  return body;
}

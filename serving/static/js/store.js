// Client-side state shared by both views: reference data, each government's totals (BigInt),
// the day's history per government (for charts), and the "change today" baselines.

import { big, kstDay, parseJSON } from "./format.js";

const MONEY = ["cash", "committed", "available", "restricted", "spendable"];

export const store = {
  govs: new Map(), // org -> {org_code, name, level, province_code, province_name, order}
  provinces: [], // [{code, name, orgs: [org...]}] in the shipped order
  totals: new Map(), // org -> {cash, committed, available, restricted, spendable} as BigInt
  lastEventAt: new Map(), // org -> ISO time of the government's latest applied event
  notReady: new Set(),
  history: new Map(), // org -> {t: [s], available: [n], cash: [n]} (today, Korea time)
  lastWriteMs: 0,
  session: null, // the signed-in principal: {name, role, permissions, all_governments, orgs}
};

export const API = new URL("../", location.href); // the page lives at /dashboard/

export async function getJSON(path) {
  const r = await fetch(new URL(path.replace(/^\//, ""), API), { headers: { Accept: "application/json" } });
  const text = await r.text();
  const body = text ? parseJSON(text) : null;
  if (r.status === 401 && store.session) location.reload(); // signed out or expired: sign in again
  if (!r.ok) {
    const err = new Error(`${r.status} ${path}`);
    err.status = r.status;
    err.body = body;
    throw err;
  }
  return body;
}

export async function loadGovernments() {
  if (store.govs.size) return;
  const { governments } = await getJSON("v1/governments");
  const byProv = new Map();
  governments.forEach((g, i) => {
    store.govs.set(g.org_code, { ...g, order: i });
    if (!byProv.has(g.province_code)) byProv.set(g.province_code, { code: g.province_code, name: g.province_name, orgs: [] });
    byProv.get(g.province_code).orgs.push(g.org_code);
  });
  store.provinces = [...byProv.values()];
}

export function toTotals(t) {
  const out = {};
  for (const k of MONEY) out[k] = big(t[k]);
  return out;
}

// --- change today ------------------------------------------------------------------------------
// Baseline = the first available value this browser saw today (Korea time), kept in
// localStorage so a reload keeps it; it resets at 00:00 KST. Changes that happened before the
// page was first opened today are not visible client-side.

const BASE_KEY = "cashpos.baseline";
let baseDay = null;
let baselines = new Map();
let saveTimer = null;

function loadBaselines() {
  const today = kstDay();
  if (baseDay === today) return;
  baseDay = today;
  baselines = new Map();
  try {
    const saved = JSON.parse(localStorage.getItem(BASE_KEY) || "null");
    if (saved && saved.day === today) for (const [k, v] of Object.entries(saved.values)) baselines.set(k, BigInt(v));
  } catch { /* unavailable or corrupt: start afresh */ }
  for (const h of store.history.values()) { h.t.length = 0; h.available.length = 0; h.cash.length = 0; }
}

function saveBaselines() {
  if (saveTimer) return;
  saveTimer = setTimeout(() => {
    saveTimer = null;
    const values = {};
    for (const [k, v] of baselines) values[k] = v.toString();
    try { localStorage.setItem(BASE_KEY, JSON.stringify({ day: baseDay, values })); } catch { /* full */ }
  }, 1000);
}

export function changeToday(org) {
  loadBaselines();
  const t = store.totals.get(org);
  const b = baselines.get(org);
  if (!t || b === undefined) return 0n;
  return t.available - b;
}

// --- updates -----------------------------------------------------------------------------------

/** Record one government's totals (BigInt) at time ms; returns the previous totals. */
export function setTotals(org, totals, ms = Date.now(), lastEventAt = null) {
  loadBaselines();
  const prev = store.totals.get(org);
  store.totals.set(org, totals);
  store.notReady.delete(org);
  if (lastEventAt) store.lastEventAt.set(org, lastEventAt);
  if (!baselines.has(org)) { baselines.set(org, totals.available); saveBaselines(); }
  let h = store.history.get(org);
  if (!h) { h = { t: [], available: [], cash: [] }; store.history.set(org, h); }
  const s = ms / 1000;
  const changed = !prev || prev.available !== totals.available || prev.cash !== totals.cash;
  if (changed || !h.t.length) {
    if (h.t.length && s <= h.t[h.t.length - 1]) {
      h.available[h.available.length - 1] = Number(totals.available);
      h.cash[h.cash.length - 1] = Number(totals.cash);
    } else {
      h.t.push(s); h.available.push(Number(totals.available)); h.cash.push(Number(totals.cash));
    }
    if (h.t.length > 20000) { h.t.splice(0, 5000); h.available.splice(0, 5000); h.cash.splice(0, 5000); }
  }
  return prev;
}

export function sumTotals(orgs) {
  const s = { cash: 0n, committed: 0n, available: 0n, restricted: 0n, spendable: 0n, change: 0n };
  for (const o of orgs) {
    const t = store.totals.get(o);
    if (!t) continue;
    for (const k of MONEY) s[k] += t[k];
    s.change += changeToday(o);
  }
  return s;
}

// --- months of outflow covered (estimate) ----------------------------------------------------
// We have no outflow history yet, so monthly outflow is approximated from what we have:
//   monthly outflow ≈ max(committed, cash / 3)
// (open commitments fall due within about a month; cash on hand normally ≈ three months of
// outflow). Coverage = spendable (available less custody cash) / that estimate. Red whenever
// available or spendable is negative. Replace `monthlyOutflow` when real outflow data exists.

export function monthlyOutflow(t) {
  const byCash = t.cash > 0n ? t.cash / 3n : 0n;
  return t.committed > byCash ? t.committed : byCash;
}

export function coverage(t) {
  if (!t) return { band: "none", months: null };
  const spend = t.spendable ?? t.available;
  const est = monthlyOutflow(t);
  if (t.available < 0n || spend < 0n) {
    return { band: "neg", months: est > 0n ? Number((spend * 10n) / est) / 10 : null };
  }
  if (est <= 0n) return { band: spend > 0n ? "ok" : "none", months: null };
  const months = Number((spend * 10n) / est) / 10;
  return { band: months < 1 ? "lt1" : months < 2 ? "lt2" : "ok", months };
}

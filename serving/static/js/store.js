// Client-side state shared by both views: reference data and each government's totals (BigInt).
// History (the day's curve, "change today") comes from the server: history.js.

import { big, parseJSON } from "./format.js";

const MONEY = ["cash", "committed", "available", "restricted", "spendable"];

export const store = {
  govs: new Map(), // org -> {org_code, name, level, province_code, province_name, order}
  provinces: [], // [{code, name, orgs: [org...]}] in the shipped order
  totals: new Map(), // org -> {cash, committed, available, restricted, spendable} as BigInt
  lastEventAt: new Map(), // org -> ISO time of the government's latest applied event
  notReady: new Set(),
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

// --- updates -----------------------------------------------------------------------------------

/** Record one government's totals (BigInt); returns the previous totals. */
export function setTotals(org, totals, ms = Date.now(), lastEventAt = null) {
  const prev = store.totals.get(org);
  store.totals.set(org, totals);
  store.notReady.delete(org);
  if (lastEventAt) store.lastEventAt.set(org, lastEventAt);
  return prev;
}

export function sumTotals(orgs) {
  const s = { cash: 0n, committed: 0n, available: 0n, restricted: 0n, spendable: 0n };
  for (const o of orgs) {
    const t = store.totals.get(o);
    if (!t) continue;
    for (const k of MONEY) s[k] += t[k];
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

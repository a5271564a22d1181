// The dashboard shell: sign-in, hash router (#/ national, #/gov/{org} one government), language
// toggle, clock and the freshness indicator shared by both views. What the views show is what the
// server lets the signed-in role see: the national view of a provincial official is its province.

import { age, kstDateTime } from "./format.js";
import { getLang, setLang, t } from "./i18n.js";
import { store } from "./store.js";
import * as national from "./national.js";
import * as government from "./government.js";
import { signInForm, signOut, whoami } from "./session.js";

const STALE_MS = 10_000;
const $ = (id) => document.getElementById(id);
const viewEl = $("view");

const ctx = {
  live: null,
  crumbs(items) {
    $("crumbs").innerHTML = "";
    items.forEach((it, i) => {
      if (i) $("crumbs").append(Object.assign(document.createElement("span"), { className: "sep", textContent: "›" }));
      const el = document.createElement(it.href ? "a" : "span");
      if (it.href) el.href = it.href;
      el.textContent = it.label;
      $("crumbs").append(el);
    });
  },
};

let current = null;

function route() {
  const m = location.hash.match(/^#\/gov\/(\d{7})\b/);
  const next = m ? { mod: government, arg: m[1] } : { mod: national, arg: null };
  if (current) current.mod.unmount();
  ctx.live = null;
  current = next;
  window.scrollTo(0, 0);
  next.mod.mount(viewEl, next.arg, ctx);
}

function applyLang() {
  document.documentElement.lang = getLang();
  document.title = `${t("title")} · cashpos`;
  $("title").textContent = t("title");
  $("subtitle").textContent = t("subtitle");
  $("lang").textContent = t("lang");
  $("signout").textContent = t("signOut");
  paintWho();
}

function paintWho() {
  const me = store.session;
  $("who").hidden = $("signout").hidden = !me;
  if (!me) return;
  const role = t("roleNames")[me.role] || me.role;
  $("who").textContent = `${me.name} · ${role}`;
  $("who").title = me.all_governments ? "" : t("scopeTitle", me.orgs.length);
}

$("signout").addEventListener("click", async () => {
  await signOut();
  location.hash = "#/";
  location.reload();
});

$("lang").addEventListener("click", () => {
  setLang(getLang() === "ko" ? "en" : "ko");
  applyLang();
  if (current) current.mod.relabel();
  tick();
});

// Freshness: time since the last frame of any kind (updates, or a heartbeat every ~2 s).
function tick() {
  const live = ctx.live;
  const lang = getLang();
  $("clock").textContent = kstDateTime(Date.now(), lang);
  const conn = $("conn");
  const banner = $("banner");
  if (!live) return;
  const since = live.lastMessageAt ? Date.now() - live.lastMessageAt : null;
  const stale = since !== null && since > STALE_MS;
  const state = stale ? "stale" : live.state === "closed" ? "reconnecting" : live.state;
  conn.dataset.state = state;
  $("conn-label").textContent = t(state);
  $("fresh").textContent = since === null ? "" : t("updated", age(since, lang));
  $("fresh").dataset.ageMs = since === null ? "" : String(since);
  let warn = "";
  if (stale) warn = t("staleWarning");
  else if (!live.serverLive) warn = t("hubDown");
  banner.hidden = !warn;
  banner.textContent = warn;
  document.body.classList.toggle("is-stale", stale);
}

async function boot() {
  applyLang();
  let me = await whoami();
  if (!me) {
    me = await signInForm(viewEl);
  }
  store.session = me;
  paintWho();
  if (!me.permissions.includes("read")) {
    viewEl.className = "view";
    viewEl.innerHTML = `<div class="error">${t("noBalanceRole")}</div>`;
    return;
  }
  // One government in scope: its page is the home page.
  if (!me.all_governments && me.orgs.length === 1 && !location.hash.startsWith("#/gov/")) {
    history.replaceState(null, "", `#/gov/${me.orgs[0]}`);
  }
  window.addEventListener("hashchange", route);
  route();
}

boot().catch(() => {
  viewEl.innerHTML = `<div class="error">${t("loadError")}</div>`;
  setTimeout(() => location.reload(), 3000);
});
setInterval(tick, 100);

// For operators' consoles and the browser tests.
window.cashpos = {
  store,
  get live() { return ctx.live; },
  get view() { return current && current.mod.name; },
  get session() { return store.session; },
  get dayCurve() { return current && current.mod.dayCurve ? current.mod.dayCurve() : null; },
  get forecast() { return current && current.mod.forecastCurve ? current.mod.forecastCurve() : null; },
};

// Signing in: the token is exchanged for an HttpOnly cookie (POST /v1/session), so page scripts
// never hold it; writes echo the CSRF cookie in X-CSRF-Token.

import { API, getJSON } from "./store.js";
import { t } from "./i18n.js";

const esc = (s) => String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));

/** The signed-in principal (role, permissions, orgs), or null when not signed in. */
export async function whoami() {
  try {
    return await getJSON("v1/session");
  } catch (e) {
    if (e.status === 401) return null;
    throw e;
  }
}

export function csrfToken() {
  const m = document.cookie.match(/(?:^|;\s*)cashpos_csrf=([^;]+)/);
  return m ? decodeURIComponent(m[1]) : "";
}

export async function signOut() {
  await fetch(new URL("v1/session", API), { method: "DELETE", headers: { "X-CSRF-Token": csrfToken() } });
}

/** Render the sign-in form into el; resolves with the principal once a token is accepted. */
export function signInForm(el) {
  return new Promise((resolve) => {
    el.className = "view signin";
    el.innerHTML = `
      <form class="signin-card" id="signin" autocomplete="off">
        <h2>${esc(t("signInTitle"))}</h2>
        <p>${esc(t("signInHelp"))}</p>
        <label for="token">${esc(t("tokenLabel"))}</label>
        <input id="token" name="token" type="password" required spellcheck="false" autocomplete="off">
        <div class="signin-error" id="signin-error" role="alert" hidden></div>
        <button class="btn primary" type="submit">${esc(t("signIn"))}</button>
      </form>`;
    const form = el.querySelector("#signin");
    form.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const token = form.token.value.trim();
      const r = await fetch(new URL("v1/session", API), {
        method: "POST",
        headers: { "Content-Type": "application/json", Accept: "application/json" },
        body: JSON.stringify({ token }),
      });
      if (!r.ok) {
        const err = el.querySelector("#signin-error");
        err.hidden = false;
        err.textContent = t("badToken");
        return;
      }
      form.token.value = "";
      resolve(await r.json());
    });
    form.token.focus();
  });
}

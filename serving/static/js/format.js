// Parsing and formatting: exact money (BigInt), Korean units (조/억/만원), Korea time.
//
// Money arrives as JSON integers. Per government they are far below 2^53, but national sums of
// cash can reach ~1e14–1e15 KRW and the contract allows events up to 1e15 each, so a national
// total may exceed Number.MAX_SAFE_INTEGER (9,007,199,254,740,991 ≈ 9.0e15). We therefore never
// trust a double for money: parseJSON keeps every integer that is not a safe integer as a BigInt
// (using the JSON.parse reviver's source text where the browser has it, else a tokenizer that
// quotes long integer literals first), and the app turns every money field into a BigInt with
// big() and sums with BigInt. Doubles are only used to draw the chart.

const BIG_TAG = "\u0000big:";

function reviverWithSource(key, value, ctx) {
  if (typeof value === "number" && !Number.isSafeInteger(value) && ctx && /^-?\d+$/.test(ctx.source)) {
    return BigInt(ctx.source);
  }
  return value;
}

let sourceAccess = null;
function hasSourceAccess() {
  if (sourceAccess === null) {
    try {
      sourceAccess = JSON.parse("[9007199254740993]", (k, v, ctx) =>
        (k === "0" && ctx && ctx.source === "9007199254740993") ? "ok" : v)[0] === "ok";
    } catch { sourceAccess = false; }
  }
  return sourceAccess;
}

/** JSON.parse that keeps integers beyond ±2^53 exact, as BigInt. */
export function parseJSON(text) {
  if (hasSourceAccess()) return JSON.parse(text, reviverWithSource);
  // Fallback: quote integer literals of 16+ digits (outside strings), then revive them.
  const quoted = text.replace(/"(?:[^"\\]|\\.)*"|-?\d{16,}(?![\d.eE])/g,
    (m) => (m[0] === '"' ? m : `"${BIG_TAG}${m}"`));
  return JSON.parse(quoted, (k, v) =>
    (typeof v === "string" && v.startsWith(BIG_TAG)) ? BigInt(v.slice(BIG_TAG.length)) : v);
}

/** Any money value (BigInt, safe integer, numeric string) as BigInt; null/undefined as 0n. */
export function big(v) {
  if (typeof v === "bigint") return v;
  if (v === null || v === undefined || v === "") return 0n;
  if (typeof v === "number") return BigInt(Math.trunc(v));
  return BigInt(v);
}

const MAN = 10_000n, EOK = 100_000_000n, JO = 1_000_000_000_000n;

/** 1234567 -> "1,234,567" (BigInt-safe). */
export function group(v) {
  const s = big(v).toString();
  const neg = s.startsWith("-");
  const d = neg ? s.slice(1) : s;
  return (neg ? "-" : "") + d.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

function abs(v) { return v < 0n ? -v : v; }

/** Korean display: "1조 2,345억원", "2,345억원", "3,210만원", "9,500원". Rounded to the unit. */
export function krwKo(value) {
  const v = big(value);
  const a = abs(v);
  let s;
  if (a >= EOK) {
    const eokTotal = (a + EOK / 2n) / EOK;
    const jo = eokTotal / 10_000n, eok = eokTotal % 10_000n;
    if (jo > 0n) s = eok > 0n ? `${group(jo)}조 ${group(eok)}억원` : `${group(jo)}조원`;
    else s = `${group(eok)}억원`;
  } else if (a >= MAN) {
    const man = (a + MAN / 2n) / MAN;
    s = man >= 10_000n ? "1억원" : `${group(man)}만원`;
  } else {
    s = `${group(a)}원`;
  }
  return (v < 0n ? "−" : "") + s;
}

/** English display: "₩1.23 tn", "₩234.5 bn", "₩12.3 m", "₩950,000". */
export function krwEn(value) {
  const v = big(value);
  const a = abs(v);
  const n = Number(a);
  let s;
  if (a >= JO) s = `₩${(n / 1e12).toFixed(n >= 1e14 ? 1 : 2)} tn`;
  else if (a >= 1_000_000_000n) s = `₩${(n / 1e9).toFixed(n >= 1e11 ? 0 : 1)} bn`;
  else if (a >= 1_000_000n) s = `₩${(n / 1e6).toFixed(1)} m`;
  else s = `₩${group(a)}`;
  return (v < 0n ? "−" : "") + s;
}

/** Exact amount for titles: "1,234,567,890원" / "KRW 1,234,567,890". */
export function krwExact(value, lang) {
  return lang === "en" ? `KRW ${group(value)}` : `${group(value)}원`;
}

export function krw(value, lang) { return lang === "en" ? krwEn(value) : krwKo(value); }

/** Signed change: "+1,234억원" / "−12만원" / "0". */
export function krwDelta(value, lang) {
  const v = big(value);
  if (v === 0n) return lang === "en" ? "±0" : "±0원";
  return (v > 0n ? "+" : "") + krw(v, lang);
}

/** A BigInt as a double, for charts only (precision beyond 2^53 is irrelevant on a chart). */
export function toNumber(v) { return Number(big(v)); }

// --- Korea time -------------------------------------------------------------------------------

export const TZ = "Asia/Seoul";
const timeFmt = new Intl.DateTimeFormat("en-GB", { timeZone: TZ, hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
const dayFmt = new Intl.DateTimeFormat("en-CA", { timeZone: TZ, year: "numeric", month: "2-digit", day: "2-digit" });
const dateTimeFmt = {
  ko: new Intl.DateTimeFormat("ko-KR", { timeZone: TZ, month: "long", day: "numeric", weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }),
  en: new Intl.DateTimeFormat("en-GB", { timeZone: TZ, day: "numeric", month: "short", weekday: "short", hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false }),
};

function asDate(t) { return t instanceof Date ? t : new Date(typeof t === "string" ? Date.parse(t) : t); }

/** "14:03:27" in Korea time. */
export function kstTime(t) { return t ? timeFmt.format(asDate(t)) : "—"; }
/** "2025-03-14": the Korean calendar day of an instant. */
export function kstDay(t = Date.now()) { return dayFmt.format(asDate(t)); }
/** "3월 14일 (금) 14:03:27" / "Fri 14 Mar, 14:03:27" + " KST". */
export function kstDateTime(t, lang) { return `${dateTimeFmt[lang === "en" ? "en" : "ko"].format(asDate(t))} KST`; }

/** Age for the freshness indicator: "0.4초" / "0.4 s", "1분 5초" / "1 min 5 s". */
export function age(ms, lang) {
  const s = Math.max(0, ms) / 1000;
  if (s < 60) return lang === "en" ? `${s.toFixed(1)} s` : `${s.toFixed(1)}초`;
  const m = Math.floor(s / 60), r = Math.floor(s % 60);
  return lang === "en" ? `${m} min ${r} s` : `${m}분 ${r}초`;
}

export function esc(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

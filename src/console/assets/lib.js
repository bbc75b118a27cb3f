// Shared helpers of the console pages: DOM building (no innerHTML, so no
// server text is ever parsed as markup), JSON calls, number formatting.

/** An element: h("td", {class: "num"}, "1.5", otherNode). */
export function h(tag, attrs = {}, ...children) {
  const svg = ["svg", "g", "rect", "line", "text", "path", "title"].includes(tag);
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag)
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

export const $ = (id) => document.getElementById(id);

/** Replaces an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const c of children.flat()) if (c) el.append(c instanceof Node ? c : String(c));
}

let whenSignedOut = () => {};

/** What to do when a call finds the session gone (expired, or signed out elsewhere). */
export function onSignedOut(handler) {
  whenSignedOut = handler;
}

/**
 * A JSON call with the session cookie. State-changing calls carry
 * Content-Type: application/json (the server refuses cookie-authenticated
 * ones without it). Resolves to {status, data}; data is the parsed body.
 */
export async function api(method, path, body) {
  const init = { method, credentials: "same-origin", headers: {} };
  if (body !== undefined || method !== "GET") {
    init.headers["content-type"] = "application/json";
    init.body = body === undefined ? undefined : JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (res.status === 401 && !path.endsWith("/session")) whenSignedOut();
  let data = null;
  const text = await res.text();
  if (text) {
    try { data = JSON.parse(text); } catch { data = { error: { message: text } }; }
  }
  return { status: res.status, data };
}

/** The message of an error body in either shape the gateway uses. */
export function errorText(r) {
  const e = r.data && r.data.error;
  if (!e) return `HTTP ${r.status}`;
  return typeof e === "string" ? e : e.message || e.code || `HTTP ${r.status}`;
}

/** USD from exact integer nano-USD, for display only. */
export function usdOfNanos(nanos, digits) {
  return usd(Number(nanos) / 1e9, digits);
}

export function usd(value, digits) {
  if (value === null || value === undefined) return "—";
  const v = Number(value);
  if (v === 0) return "$0";
  if (digits === undefined) {
    // Cents from a dollar up, 4 decimals from a cent up, else 3
    // significant digits (small requests cost millionths of a dollar).
    const a = Math.abs(v);
    digits = a >= 1 ? 2 : a >= 0.01 ? 4 : Math.min(12, 2 - Math.floor(Math.log10(a)));
  }
  return (v < 0 ? "-$" : "$") + Math.abs(v).toFixed(digits);
}

/** A price per 1M tokens, trimmed of trailing zeros. */
export function price(value) {
  if (value === null || value === undefined) return "—";
  return "$" + Number(Number(value).toPrecision(12)).toString();
}

export function count(n) {
  return Number(n || 0).toLocaleString("en-US");
}

/** Compact numbers for axes: 1.2k, 3.4M. */
export function compact(n) {
  const a = Math.abs(n);
  if (a >= 1e9) return +(n / 1e9).toPrecision(3) + "G";
  if (a >= 1e6) return +(n / 1e6).toPrecision(3) + "M";
  if (a >= 1e3) return +(n / 1e3).toPrecision(3) + "k";
  return +n.toPrecision(3) + "";
}

export function table(headers, rows, numeric = []) {
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((t, i) => h("th", { class: numeric.includes(i) ? "num" : null }, t)))),
    h("tbody", {}, rows.map((r) => h("tr", {}, r.map((c, i) => h("td", { class: numeric.includes(i) ? "num" : null }, c))))));
}

/** Offers `text` as a file download (a Blob: nothing goes to the server). */
export function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = h("a", { href: url, download: name });
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

/**
 * Copies `text`; where the clipboard API is missing (a page not served
 * over https or from localhost), selects `el` for Ctrl+C instead.
 */
export async function copy(text, el, button) {
  try {
    await navigator.clipboard.writeText(text);
    button.textContent = "Copied";
  } catch {
    const range = document.createRange();
    range.selectNodeContents(el);
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    button.textContent = "Selected: press Ctrl+C";
  }
}

export function csv(rows) {
  const cell = (v) => {
    const s = String(v ?? "");
    return /[",\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
  };
  return rows.map((r) => r.map(cell).join(",")).join("\n") + "\n";
}

/** Shows one view of a page and marks its nav button. */
export function show(view) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== "view-" + view;
  for (const b of document.querySelectorAll("header nav button")) {
    b.classList.toggle("active", b.dataset.view === view);
  }
}

export function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

// The operator's view on the admin listener: channels and their last hour,
// spend by group over time, top keys and users, recent requests, the
// config generation and the last reload error. Signed in with the admin
// token, exchanged for an HttpOnly cookie (never stored by this page).

import { h, $, fill, api, errorText, usdOfNanos, count, compact, table, ago, onSignedOut } from "./lib.js";
import { barChart, topSeries } from "./chart.js";

const state = { range: "48h" };
const HOUR = 3600_000, DAY = 24 * HOUR;

function badge(text, kind) {
  return h("span", { class: "badge " + (kind || text) }, text);
}

async function loadConfig() {
  const r = await api("GET", "/admin/config");
  if (r.status !== 200) return;
  const c = r.data;
  fill($("config-line"), `config generation ${c.generation}`,
    c.loaded_at_ms ? h("span", { class: "muted" }, ` · loaded ${ago(c.loaded_at_ms)}`) : null);
  fill($("reload-error"), c.last_reload_error
    ? h("div", { class: "notice", id: "reload-error-text" },
        h("strong", {}, `Last reload refused (${ago(c.last_reload_error.at_ms)}): `), c.last_reload_error.message,
        " — the gateway keeps serving the previous good config.")
    : null);
}

async function loadChannels() {
  const r = await api("GET", "/admin/channels");
  if (r.status !== 200) return fill($("channels"), h("p", { class: "error" }, errorText(r)));
  const rows = r.data.channels.map((c) => {
    const rate = c.requests_last_hour ? (100 * c.failures_last_hour) / c.requests_last_hour : 0;
    return [c.name, c.type, badge(c.state),
      c.cooldown_remaining_seconds ? `${c.cooldown_remaining_seconds} s` : "—",
      count(c.requests_last_hour), count(c.failures_last_hour),
      c.requests_last_hour ? h("span", { class: rate >= 20 ? "error" : null }, rate.toFixed(1) + " %") : "—",
      c.last_error || "—"];
  });
  fill($("channels"), table(["channel", "type", "state", "cooldown", "attempts (1 h)", "failures (1 h)", "failure rate", "last error"],
    rows, [4, 5, 6]));
}

/** Hour or day labels from the start of each bucket. */
function buckets(range) {
  const now = Date.now();
  if (range === "48h") {
    const start = Math.floor(now / HOUR) * HOUR - 47 * HOUR;
    return Array.from({ length: 48 }, (_, i) => new Date(start + i * HOUR).toISOString().slice(0, 13) + ":00Z");
  }
  const start = Math.floor(now / DAY) * DAY - 29 * DAY;
  return Array.from({ length: 30 }, (_, i) => new Date(start + i * DAY).toISOString().slice(0, 10));
}

async function loadSpend() {
  const range = state.range;
  const dim = range === "48h" ? "hour" : "day";
  const r = await api("GET", `/admin/usage?from=${range}&group_by=${dim},group`);
  if (r.status !== 200) return fill($("spend-chart"), h("p", { class: "error" }, errorText(r)));
  const keys = buckets(range);
  const index = new Map(keys.map((k, i) => [k, i]));
  const by = new Map();
  for (const row of r.data.rows) {
    const i = index.get(row[dim]);
    if (i === undefined) continue;
    if (!by.has(row.group)) by.set(row.group, { name: row.group, values: keys.map(() => 0) });
    by.get(row.group).values[i] += row.cost_nano_usd / 1e9;
  }
  const labels = keys.map((k) => (dim === "hour" ? k.slice(11, 13) + "h" : k.slice(5)));
  fill($("spend-chart"), barChart({
    labels, series: topSeries([...by.values()]), yTitle: "spend (USD)",
    xTitle: dim === "hour" ? "hour (UTC)" : "day (UTC)", fmt: (v) => "$" + compact(v),
    title: `Spend per ${dim} by group, total ${usdOfNanos(r.data.total.cost_nano_usd)}`,
  }));
}

async function loadTop(dim, target) {
  const r = await api("GET", `/admin/usage?from=30d&group_by=${dim}`);
  if (r.status !== 200) return fill($(target), h("p", { class: "error" }, errorText(r)));
  const rows = r.data.rows.filter((x) => x[dim]).sort((a, b) => b.cost_nano_usd - a.cost_nano_usd).slice(0, 10);
  fill($(target), rows.length
    ? table([dim, "requests", "tokens", "spend (USD)"], rows.map((x) => [x[dim], count(x.requests),
        count(x.input + x.output + x.cached_input + x.cache_write + x.cache_write_1h), usdOfNanos(x.cost_nano_usd)]), [1, 2, 3])
    : h("p", { class: "muted" }, "No spend yet."));
}

async function loadRecent() {
  const r = await api("GET", "/admin/requests?from=24h&limit=50&order=newest");
  if (r.status !== 200) return fill($("recent"), h("p", { class: "error" }, errorText(r)));
  const rows = r.data.requests.map((x) => [new Date(x.at_ms).toISOString().replace("T", " ").slice(0, 19),
    x.key, x.user || "—", x.group, x.model, x.channel,
    count((x.input || 0) + (x.output || 0) + (x.cached_input || 0) + (x.cache_write || 0) + (x.cache_write_1h || 0)),
    usdOfNanos(x.cost_nanos)]);
  fill($("recent"), rows.length
    ? table(["time (UTC)", "key", "user", "group", "model", "channel", "tokens", "cost (USD)"], rows, [6, 7])
    : h("p", { class: "muted" }, "No request in the last 24 hours."));
}

async function loadAll() {
  await Promise.all([loadConfig(), loadChannels(), loadSpend(), loadTop("key", "top-keys"),
    loadTop("user", "top-users"), loadRecent()]);
  document.body.dataset.ready = "1";
}

function signedIn(yes, tokenRequired) {
  $("view-admin").hidden = !yes;
  $("signin").hidden = yes;
  $("refresh").hidden = !yes;
  $("signout").hidden = !yes || !tokenRequired;
  if (yes) loadAll();
  else document.body.dataset.ready = "1";
}

async function main() {
  onSignedOut(() => signedIn(false));
  $("signin").addEventListener("submit", async (e) => {
    e.preventDefault();
    const input = $("signin-token");
    const r = await api("POST", "/admin/session", { token: input.value });
    input.value = "";
    $("signin-error").hidden = r.status === 200;
    $("signin-error").textContent = `Sign-in failed: ${errorText(r)}`;
    if (r.status === 200) signedIn(true, true);
  });
  $("signout").addEventListener("click", async () => {
    await api("DELETE", "/admin/session");
    fill($("config-line"));
    signedIn(false);
  });
  $("refresh").addEventListener("click", loadAll);
  for (const b of $("spend-range").children) {
    b.addEventListener("click", () => {
      state.range = b.dataset.range;
      for (const x of $("spend-range").children) x.classList.toggle("active", x === b);
      loadSpend();
    });
  }
  const s = await api("GET", "/admin/session");
  signedIn(s.status === 200, s.data?.token_required !== false);
}

main();

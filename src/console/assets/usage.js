// Usage of the signed-in user, last 30 days: spend (USD) and tokens per
// day, stacked by model, group or key, for all keys or one; a table and a
// CSV download made here from the same JSON (exact nano-USD in the CSV).

import { h, $, fill, api, errorText, usdOfNanos, count, compact, table, download, csv } from "./lib.js";
import { barChart, topSeries } from "./chart.js";

const state = { data: null, by: "model" };
const TOKEN_KINDS = ["input", "output", "cached_input", "cache_write", "cache_write_1h"];
const tokensOf = (r) => TOKEN_KINDS.reduce((s, k) => s + (r[k] || 0), 0);

function selectedRows() {
  const key = $("usage-key").value;
  return state.data.rows.filter((r) => !key || r.key === key);
}

/** Per series (a model, group or key), one value per day. */
function series(rows, value) {
  const days = state.data.days;
  const index = new Map(days.map((d, i) => [d, i]));
  const by = new Map();
  for (const r of rows) {
    const name = r[state.by] || "—";
    if (!by.has(name)) by.set(name, { name, values: days.map(() => 0) });
    by.get(name).values[index.get(r.day)] += value(r);
  }
  return topSeries([...by.values()]);
}

function render() {
  if (!state.data) return;
  const rows = selectedRows();
  const labels = state.data.days.map((d) => d.slice(5));
  const usdFmt = (v) => "$" + compact(v);
  fill($("usage-spend"), barChart({
    labels, series: series(rows, (r) => r.cost_nano_usd / 1e9),
    title: `Spend per day by ${state.by}`, yTitle: "spend (USD)", xTitle: "day (UTC)", fmt: usdFmt,
  }));
  fill($("usage-tokens"), barChart({
    labels, series: series(rows, tokensOf),
    title: `Tokens per day by ${state.by}`, yTitle: "tokens", xTitle: "day (UTC)",
  }));
  const sums = new Map();
  for (const r of rows) {
    const id = r.day + "\u0000" + (r[state.by] || "—");
    const s = sums.get(id) || { day: r.day, name: r[state.by] || "—", requests: 0, tokens: 0, input: 0, output: 0, cost: 0 };
    s.requests += r.requests; s.tokens += tokensOf(r); s.input += r.input; s.output += r.output; s.cost += r.cost_nano_usd;
    sums.set(id, s);
  }
  const lines = [...sums.values()].sort((a, b) => (a.day < b.day ? 1 : a.day > b.day ? -1 : b.cost - a.cost));
  fill($("usage-table"), lines.length
    ? table(["day", state.by, "requests", "input tokens", "output tokens", "all tokens", "spend (USD)"],
        lines.map((s) => [s.day, s.name, count(s.requests), count(s.input), count(s.output), count(s.tokens), usdOfNanos(s.cost)]),
        [2, 3, 4, 5, 6])
    : h("p", { class: "muted" }, "No usage in the last 30 days."));
}

function downloadCsv() {
  if (!state.data) return;
  const header = ["day", "key", "model", "group", "requests", ...TOKEN_KINDS, "estimated", "cost_nano_usd", "cost_usd"];
  const rows = selectedRows().map((r) => [r.day, r.key, r.model, r.group, r.requests,
    ...TOKEN_KINDS.map((k) => r[k]), r.estimated, r.cost_nano_usd, (r.cost_nano_usd / 1e9).toFixed(9)]);
  download(`tollgate-usage-${state.data.days.at(-1)}.csv`, "text/csv", csv([header, ...rows]));
}

export async function loadUsage() {
  const r = await api("GET", "/api/usage/daily");
  if (r.status !== 200) {
    fill($("usage-spend"), h("p", { class: "error" }, errorText(r)));
    return;
  }
  state.data = r.data;
  render();
}

export function initUsage() {
  for (const b of $("usage-by").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      state.by = b.dataset.by;
      for (const x of $("usage-by").children) x.classList.toggle("active", x === b);
      render();
    });
  }
  $("usage-key").addEventListener("change", render);
  $("usage-csv").addEventListener("click", downloadCsv);
}

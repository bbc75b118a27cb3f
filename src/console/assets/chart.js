// Stacked bar charts as SVG, built in the browser (no chart library):
// labelled axes, the unit on the y axis, a legend and a tooltip per bar.

import { h, compact } from "./lib.js";

const W = 1000, H = 300, R = 12, T = 28, B = 48;

/** A "nice" top of the y axis and its tick step. */
function niceScale(max) {
  if (!(max > 0)) return { top: 1, step: 0.25 };
  const raw = max / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  return { top: step * Math.ceil(max / step), step };
}

/**
 * labels: x categories (e.g. days); series: [{name, values}] stacked;
 * yTitle: the axis title with its unit; fmt: how a value is printed.
 */
export function barChart({ labels, series, yTitle, xTitle, fmt = compact, title }) {
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const { top, step } = niceScale(Math.max(0, ...totals));
  const ticks = [];
  for (let v = 0; v <= top + step / 2; v += step) ticks.push(v);
  // Room on the left for the longest tick label and the axis title.
  const L = 34 + 7 * Math.max(...ticks.map((v) => fmt(v).length));
  const plotW = W - L - R, plotH = H - T - B;
  const y = (v) => T + plotH - (v / top) * plotH;
  const bw = plotW / Math.max(1, labels.length);
  const svg = h("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title || yTitle });
  if (title) svg.append(h("text", { class: "title", x: L, y: 14 }, title));
  for (const v of ticks) {
    svg.append(h("line", { class: "gridline", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(h("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end" }, fmt(v)));
  }
  const every = Math.ceil(labels.length / 10);
  labels.forEach((label, i) => {
    let base = 0;
    series.forEach((s, k) => {
      const v = s.values[i] || 0;
      if (v <= 0) return;
      const rect = h("rect", {
        class: "c" + (k % 8), x: L + i * bw + bw * 0.12, width: Math.max(1, bw * 0.76),
        y: y(base + v), height: Math.max(0.5, y(base) - y(base + v)),
      }, h("title", {}, `${label} · ${s.name}: ${fmt(v)}`));
      svg.append(rect);
      base += v;
    });
    if (i % every === 0) {
      svg.append(h("text", { x: L + i * bw + bw / 2, y: T + plotH + 14, "text-anchor": "middle" }, label));
    }
  });
  svg.append(h("line", { class: "axis", x1: L, x2: W - R, y1: T + plotH, y2: T + plotH }));
  svg.append(h("line", { class: "axis", x1: L, x2: L, y1: T, y2: T + plotH }));
  svg.append(h("text", { x: 12, y: T + plotH / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${T + plotH / 2})` }, yTitle));
  if (xTitle) svg.append(h("text", { x: L + plotW / 2, y: H - 8, "text-anchor": "middle" }, xTitle));
  const legend = h("div", { class: "legend" },
    series.map((s, k) => h("span", {}, h("span", { class: "swatch c" + (k % 8) }), s.name)));
  return h("div", { class: "chart-box" }, svg, legend);
}

/** Top-n series by total, the rest summed as "other". */
export function topSeries(series, n = 7) {
  const sum = (s) => s.values.reduce((a, b) => a + b, 0);
  const sorted = [...series].sort((a, b) => sum(b) - sum(a));
  if (sorted.length <= n + 1) return sorted;
  const rest = sorted.slice(n);
  const other = { name: "other", values: rest[0].values.map((_, i) => rest.reduce((a, s) => a + (s.values[i] || 0), 0)) };
  return [...sorted.slice(0, n), other];
}

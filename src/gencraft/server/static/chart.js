// A small SVG line chart for the studio (no library, no build step).
// studio.lineChart(el, series, {xLabel, yLabel, title}) draws every series [{name, points: [[x, y]...],
// color, dots}] on shared axes; el.dataset.points counts the points drawn (what the browser test watches).
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

  function svg(tag, attrs, text) {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  function fmt(v) { return Math.abs(v) >= 1000 ? v.toLocaleString() : String(+v.toPrecision(4)); }

  function lineChart(host, series, opts = {}) {
    const W = opts.width || 560, H = opts.height || 260, m = { l: 52, r: 12, t: 22, b: 34 };
    const all = series.flatMap((s) => s.points);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img",
                              "aria-label": opts.title || "chart" });
    host.replaceChildren(root);
    host.dataset.points = String(all.length);
    if (opts.title) root.append(svg("text", { x: m.l, y: 14, class: "chart-title" }, opts.title));
    if (!all.length) {
      root.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" },
                      opts.empty || "no points yet"));
      return;
    }
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    const pad = (y1 - y0) * 0.08 || Math.abs(y0) * 0.1 || 1;
    y0 -= pad; y1 += pad;
    const X = (x) => m.l + (x - x0) / (x1 - x0) * (W - m.l - m.r);
    const Y = (y) => H - m.b - (y - y0) / (y1 - y0) * (H - m.t - m.b);
    for (const t of ticks(y0, y1, 5)) {
      root.append(svg("line", { x1: m.l, x2: W - m.r, y1: Y(t), y2: Y(t), class: "grid-line" }));
      root.append(svg("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end", class: "tick" }, fmt(t)));
    }
    for (const t of ticks(x0, x1, 6)) {
      root.append(svg("text", { x: X(t), y: H - m.b + 16, "text-anchor": "middle", class: "tick" }, fmt(t)));
    }
    root.append(svg("text", { x: W - m.r, y: H - 4, "text-anchor": "end", class: "axis-label" }, opts.xLabel || "step"));
    if (opts.yLabel) root.append(svg("text", { x: 4, y: m.t - 8, class: "axis-label" }, opts.yLabel));
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const pts = s.points.slice().sort((a, b) => a[0] - b[0]);
      if (!pts.length) return;
      const g = svg("g", { class: "series", "data-name": s.name, "data-points": pts.length });
      g.append(svg("polyline", { points: pts.map((p) => `${X(p[0])},${Y(p[1])}`).join(" "), fill: "none",
                                 stroke: color, "stroke-width": s.dots ? 2 : 1.3, opacity: s.dots ? 1 : 0.75 }));
      if (s.dots) for (const p of pts) g.append(svg("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: color }));
      root.append(g);
    });
    const legend = svg("g", { class: "legend" });
    series.filter((s) => s.points.length).forEach((s, i) => {
      const y = m.t + 4 + i * 14, color = s.color || COLORS[series.indexOf(s) % COLORS.length];
      legend.append(svg("rect", { x: W - m.r - 150, y: y - 8, width: 10, height: 3, fill: color }));
      legend.append(svg("text", { x: W - m.r - 136, y: y - 4, class: "legend-text" }, s.name));
    });
    root.append(legend);
  }

  window.studio = Object.assign(window.studio || {}, { lineChart, COLORS });
})();

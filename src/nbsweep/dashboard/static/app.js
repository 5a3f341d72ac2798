// nbsweep dashboard: one page, hash-routed, polling the server for what changed.
// Every string from the store (values, names, keys, errors) reaches the DOM as text
// (textContent and attributes), never as markup.
"use strict";

const POLL_MS = 1000;
const COLORS = ["#2f6fde", "#e4572e", "#1b8a4b", "#b7791f", "#7a2e8e", "#17a2b8", "#d63384",
  "#6c757d", "#20c997", "#fd7e14"];
const STATES = ["running", "pending", "finished", "failed", "stopped", "crashed"];

// ---- DOM helpers -------------------------------------------------------------------------

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null) continue;
    node.appendChild(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); return node; }

function number(value) {
  if (typeof value === "number") return value;
  if (value === "NaN") return NaN;
  if (value === "Infinity") return Infinity;
  if (value === "-Infinity") return -Infinity;
  return null;
}

function show(value) {
  if (value === null || value === undefined) return "–";
  if (typeof value === "number") {
    if (Number.isInteger(value)) return String(value);
    const magnitude = Math.abs(value);
    return magnitude !== 0 && (magnitude < 1e-3 || magnitude >= 1e6)
      ? value.toExponential(3) : String(Number(value.toPrecision(6)));
  }
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  if (value < 60) return value.toFixed(1) + "s";
  const minutes = Math.floor(value / 60);
  return minutes < 60 ? `${minutes}m${String(Math.round(value % 60)).padStart(2, "0")}s`
    : `${Math.floor(minutes / 60)}h${String(minutes % 60).padStart(2, "0")}m`;
}

function stateBadge(state) { return el("span", { className: `state state-${state}` }, state); }

async function getJSON(url) {
  const response = await fetch(url, { credentials: "same-origin", cache: "no-store" });
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function postJSON(url, body) {
  const response = await fetch(url, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
  });
  const answer = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

function setLive(text) { document.getElementById("live").textContent = text; }

// ---- routing -----------------------------------------------------------------------------

let view = null;  // the current view: { stop() }

function route() {
  if (view) view.stop();
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const main = clear(document.getElementById("main"));
  const where = document.getElementById("where");
  if (parts[0] === "sweep" && parts[1]) view = new SweepView(main, where, parts[1]);
  else if (parts[0] === "run" && parts[1]) view = new RunView(main, where, parts[1]);
  else if (parts[0] === "compare" && parts[1] && parts[2]) view = new CompareView(main, where, parts[1], parts[2]);
  else view = new SweepsView(main, where);
}

class Poller {
  constructor(work) { this.work = work; this.stopped = false; this.timer = null; this.tick(); }
  async tick() {
    if (this.stopped) return;
    try { await this.work(); setLive("live · " + new Date().toLocaleTimeString()); }
    catch (error) { setLive("not updated: " + error.message); }
    if (!this.stopped) this.timer = setTimeout(() => this.tick(), POLL_MS);
  }
  stop() { this.stopped = true; clearTimeout(this.timer); }
}

// ---- the sweeps list ---------------------------------------------------------------------

class SweepsView {
  constructor(main, where) {
    where.textContent = "sweeps";
    this.body = el("tbody");
    main.append(el("h1", {}, "Sweeps"), el("div", { className: "card scroll" },
      el("table", { id: "sweeps" }, el("thead", {}, el("tr", {},
        ["sweep", "name", "state", "method", "metric", ...STATES, "best", "created"].map((h) => el("th", {}, h)))),
      this.body)));
    this.poller = new Poller(() => this.refresh());
  }
  async refresh() {
    const sweeps = await getJSON("/api/sweeps");
    clear(this.body);
    for (const sweep of sweeps) {
      const open = () => { location.hash = `#/sweep/${encodeURIComponent(sweep.sweep_id)}`; };
      this.body.append(el("tr", { onclick: open, "data-sweep": sweep.sweep_id },
        el("td", {}, el("a", { href: `#/sweep/${encodeURIComponent(sweep.sweep_id)}` }, sweep.sweep_id)),
        el("td", {}, sweep.name || ""), el("td", {}, stateBadge(sweep.state)),
        el("td", {}, sweep.method || ""),
        el("td", {}, sweep.metric ? `${sweep.metric.name} (${sweep.metric.goal})` : "–"),
        STATES.map((state) => el("td", { className: "num" }, sweep.totals[state] || 0)),
        el("td", { className: "num" }, sweep.best ? show(sweep.best.metric) : "–"),
        el("td", {}, new Date(sweep.created_at * 1000).toLocaleString())));
    }
    if (!sweeps.length) this.body.append(el("tr", {}, el("td", { colspan: 13, className: "muted" }, "no sweeps in this store yet")));
  }
  stop() { this.poller.stop(); }
}

// ---- a sweep -----------------------------------------------------------------------------

class SweepView {
  constructor(main, where, sweepId) {
    this.sweepId = sweepId;
    where.textContent = `sweep ${sweepId}`;
    this.version = 0;
    this.sweep = null;
    this.runs = new Map();
    this.importance = null;
    this.keys = [];
    this.sort = { key: "metric", descending: null };  // null: the metric's goal decides
    this.stateFilter = "";
    this.brushes = new Map();  // axis name -> [low, high] in the axis's own units
    this.selected = new Set();
    this.history = { key: null, after: 0, rows: new Map() };
    this.charts = {};
    this.build(main);
    this.poller = new Poller(() => this.refresh());
  }

  build(main) {
    const action = (name) => el("button", { "data-action": name, onclick: () => this.control(name) }, name);
    this.header = el("div", { id: "sweep-header" });
    this.said = el("span", { className: "said", id: "said" });
    this.stateSelect = el("select", { id: "state-filter", onchange: () => { this.stateFilter = this.stateSelect.value; this.drawTable(); this.drawParallel(); } },
      el("option", { value: "" }, "every state"), STATES.map((s) => el("option", { value: s }, s)));
    this.chips = el("span", { id: "brushes" });
    this.compareButton = el("button", { id: "compare", disabled: true, onclick: () => {
      const [a, b] = [...this.selected];
      location.hash = `#/compare/${encodeURIComponent(a)}/${encodeURIComponent(b)}`;
    } }, "compare two");
    this.tableHead = el("thead");
    this.tableBody = el("tbody");
    this.shownCount = el("span", { className: "muted", id: "shown" });
    this.metricChart = el("div", { id: "metric-chart" });
    this.parallel = el("div", { id: "parallel" });
    this.importanceBox = el("div", { id: "importance" });
    this.slices = el("div", { className: "slices", id: "slices" });
    this.keySelect = el("select", { id: "history-key", onchange: () => this.chooseKey(this.keySelect.value) });
    this.historyChart = el("div", { id: "history-chart" });
    this.config = el("pre", { id: "config" });
    main.append(
      this.header,
      el("div", { className: "toolbar" }, ["pause", "resume", "stop", "cancel"].map(action), this.said),
      el("h2", {}, "Leaderboard"),
      el("div", { className: "toolbar" }, this.stateSelect, this.chips, this.compareButton, this.shownCount),
      el("div", { className: "card scroll" }, el("table", { id: "runs" }, this.tableHead, this.tableBody)),
      el("div", { className: "grid2" },
        el("div", {}, el("h2", {}, "Metric per trial (best so far)"), el("div", { className: "card" }, this.metricChart)),
        el("div", {}, el("h2", {}, "Parameter importance"), el("div", { className: "card" }, this.importanceBox))),
      el("h2", {}, "Parallel coordinates ", el("span", { className: "muted" }, "(drag along an axis to filter; click it to clear)")),
      el("div", { className: "card" }, this.parallel),
      el("h2", {}, "Metric against each parameter"),
      el("div", { className: "card" }, this.slices),
      el("h2", {}, "History ", this.keySelect),
      el("div", { className: "card" }, this.historyChart),
      el("h2", {}, "Config"), this.config);
  }

  async refresh() {
    const changes = await getJSON(`/api/sweeps/${encodeURIComponent(this.sweepId)}?since=${this.version}`);
    if (changes.complete) this.runs.clear();
    for (const run of changes.runs) this.runs.set(run.run_id, run);
    this.now = changes.now;
    const changed = changes.version !== this.version || changes.complete;
    this.version = changes.version;
    if (changes.sweep) this.sweep = changes.sweep;
    this.importance = changes.importance;
    if (JSON.stringify(changes.keys) !== JSON.stringify(this.keys)) { this.keys = changes.keys; this.drawKeys(); }
    if (changed) this.draw();
    await this.refreshHistory();
  }

  draw() {
    this.drawHeader();
    this.drawTable();
    this.drawMetric();
    this.drawImportance();
    this.drawParallel();
    this.drawSlices();
    this.config.textContent = JSON.stringify(this.sweep.config, null, 2);
  }

  get metricName() { return this.sweep && this.sweep.metric ? this.sweep.metric.name : null; }
  get maximize() { return !!(this.sweep && this.sweep.metric && this.sweep.metric.goal === "maximize"); }
  get parameters() {
    const names = new Set();
    for (const run of this.runs.values()) for (const name of Object.keys(run.parameters)) names.add(name);
    return [...names].sort();
  }

  drawHeader() {
    const sweep = this.sweep;
    clear(this.header).append(
      el("h1", {}, `Sweep ${sweep.sweep_id}`, sweep.name ? ` · ${sweep.name}` : ""),
      el("dl", { className: "facts" },
        el("dt", {}, "state"), el("dd", { id: "sweep-state" }, stateBadge(sweep.state)),
        el("dt", {}, "method"), el("dd", {}, sweep.method || "–"),
        el("dt", {}, "metric"), el("dd", {}, sweep.metric ? `${sweep.metric.name} (${sweep.metric.goal})` : "none"),
        el("dt", {}, "runs"), el("dd", { id: "totals" }, STATES.filter((s) => sweep.totals[s]).map((s) => `${s} ${sweep.totals[s]}`).join(" · ") || "none yet"),
        el("dt", {}, "best"), el("dd", {}, sweep.best ? `${show(sweep.best.metric)} (run ${sweep.best.run_id})` : "–")));
  }

  // -- the leaderboard --

  visibleRuns() {
    return [...this.runs.values()].filter((run) => {
      if (this.stateFilter && run.state !== this.stateFilter) return false;
      for (const [axis, [low, high]] of this.brushes) {
        const value = axis === "\u0000metric" ? number(run.metric) : run.parameters[axis];
        const position = this.axisPosition(axis, value);
        if (position === null || position < low || position > high) return false;
      }
      return true;
    });
  }

  columns() {
    const metric = this.metricName || "metric";
    return [
      { key: "number", title: "#", value: (r) => r.number },
      { key: "run_id", title: "run", value: (r) => r.run_id },
      { key: "state", title: "state", value: (r) => r.state, cell: (r) => stateBadge(r.state) },
      { key: "metric", title: metric, value: (r) => number(r.metric) },
      ...this.parameters.map((name) => ({ key: "p:" + name, title: name, value: (r) => r.parameters[name] })),
      { key: "duration", title: "duration", value: (r) => this.duration(r), cell: (r) => seconds(this.duration(r)) },
      { key: "agent", title: "agent", value: (r) => (r.agent ? `${r.agent.host}:${r.agent.pid}` : "") },
      { key: "error", title: "reason", value: (r) => r.error || "" },
    ];
  }

  duration(run) {
    if (run.started_at === null) return null;
    const end = run.finished_at !== null ? run.finished_at : (run.state === "running" ? this.now : null);
    return end === null ? null : Math.max(0, end - run.started_at);
  }

  sortedRuns(runs, columns) {
    const column = columns.find((c) => c.key === this.sort.key) || columns[0];
    let descending = this.sort.descending;
    if (descending === null) descending = column.key === "metric" ? this.maximize : false;
    const missing = (v) => v === null || v === undefined || (typeof v === "number" && Number.isNaN(v));
    return runs.slice().sort((a, b) => {
      const x = column.value(a), y = column.value(b);
      if (missing(x) || missing(y)) return missing(x) - missing(y) || a.number - b.number;
      const order = typeof x === "number" && typeof y === "number" ? x - y : String(x).localeCompare(String(y));
      return (descending ? -order : order) || a.number - b.number;
    });
  }

  drawTable() {
    const columns = this.columns();
    const descending = this.sort.descending === null
      ? (this.sort.key === "metric" ? this.maximize : false) : this.sort.descending;
    clear(this.tableHead).append(el("tr", {}, el("th", {}, ""), columns.map((column) => el("th", {
      "data-key": column.key,
      className: column.key === this.sort.key ? (descending ? "sorted-desc" : "sorted-asc") : "",
      onclick: () => {
        this.sort = { key: column.key, descending: column.key === this.sort.key ? !descending : false };
        this.drawTable();
      },
    }, column.title))));
    const visible = this.visibleRuns();
    clear(this.tableBody);
    for (const run of this.sortedRuns(visible, columns)) {
      const box = el("input", { type: "checkbox", checked: this.selected.has(run.run_id),
        onclick: (event) => { event.stopPropagation(); this.toggle(run.run_id, box.checked); } });
      this.tableBody.append(el("tr", { "data-run": run.run_id, onclick: () => { location.hash = `#/run/${encodeURIComponent(run.run_id)}`; } },
        el("td", {}, box),
        columns.map((column) => {
          const value = column.value(run);
          const cell = column.cell ? column.cell(run) : show(value);
          return el("td", { className: column.key === "error" ? "error" : (typeof value === "number" ? "num" : "") }, cell);
        })));
    }
    this.shownCount.textContent = `${visible.length} of ${this.runs.size} runs`;
    clear(this.chips);
    for (const [axis, [low, high]] of this.brushes) {
      const name = axis === "\u0000metric" ? (this.metricName || "metric") : axis;
      this.chips.append(el("span", { className: "chip" }, `${name}: ${this.rangeText(axis, low, high)}`,
        el("button", { title: "clear", onclick: () => { this.brushes.delete(axis); this.drawTable(); this.drawParallel(); } }, "×")));
    }
  }

  toggle(runId, on) {
    if (on) this.selected.add(runId); else this.selected.delete(runId);
    this.compareButton.disabled = this.selected.size !== 2;
  }

  async control(action) {
    try { this.said.textContent = (await postJSON(`/api/sweeps/${encodeURIComponent(this.sweepId)}/control`, { action })).said; }
    catch (error) { this.said.textContent = error.message; }
    this.version = 0;
  }

  // -- charts --

  drawMetric() {
    const runs = [...this.runs.values()].sort((a, b) => a.number - b.number);
    const xs = [], ys = [], best = [];
    let top = null;
    for (const run of runs) {
      const value = number(run.metric);
      xs.push(run.number);
      ys.push(value === null || !Number.isFinite(value) ? null : value);
      if (ys[ys.length - 1] !== null && (top === null || (this.maximize ? value > top : value < top))) top = value;
      best.push(top);
    }
    const data = [xs, ys, best];
    const name = this.metricName || "metric";
    if (this.charts.metric && this.charts.metricLabel === name) { this.charts.metric.setData(data); return; }
    if (this.charts.metric) this.charts.metric.destroy();
    this.charts.metricLabel = name;
    this.charts.metric = new uPlot({
      width: Math.max(360, this.metricChart.clientWidth || 460), height: 240,
      scales: { x: { time: false } },
      axes: [{ label: "trial" }, { label: name }],
      series: [{ label: "trial" },
        { label: name, stroke: COLORS[0], paths: () => null, points: { show: true, size: 6, fill: COLORS[0] } },
        { label: "best so far", stroke: COLORS[2], width: 2, paths: uPlot.paths.stepped({ align: 1 }), points: { show: false } }],
    }, data, this.metricChart);
  }

  drawImportance() {
    const box = clear(this.importanceBox);
    const table = this.importance;
    if (!table || !table.parameters.length) { box.append(el("p", { className: "muted" }, "needs three runs with a metric and a parameter that varies")); return; }
    box.append(el("table", {}, el("thead", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "importance"), el("th", {}, "correlation"))),
      el("tbody", {}, table.parameters.map((row) => el("tr", { "data-parameter": row.parameter },
        el("td", {}, row.parameter),
        el("td", {}, el("span", { className: "bar", style: null, "data-width": row.importance }), " ", show(row.importance)),
        el("td", {}, show(row.correlation)))))),
      el("p", { className: "muted" }, `${table.how}; ${table.runs} runs.`));
    for (const bar of box.querySelectorAll(".bar")) bar.style.width = `${Math.round(120 * (Number(bar.dataset.width) || 0))}px`;
  }

  // An axis maps its values onto 0..1: numbers linearly (log if they span decades and are
  // positive), anything else as evenly spaced categories.
  axes() {
    const axes = [];
    const runs = [...this.runs.values()];
    const add = (name, label, values) => {
      const numbers = values.filter((v) => typeof v === "number" && Number.isFinite(v));
      if (numbers.length && numbers.length === values.filter((v) => v !== null && v !== undefined).length) {
        let low = Math.min(...numbers), high = Math.max(...numbers);
        const log = low > 0 && high / low >= 100;
        if (log) { low = Math.log10(low); high = Math.log10(high); }
        if (low === high) { low -= 1; high += 1; }
        axes.push({ name, label, kind: log ? "log" : "linear", low, high });
      } else {
        const categories = [...new Set(values.filter((v) => v !== null && v !== undefined).map((v) => show(v)))].sort();
        axes.push({ name, label, kind: "category", categories });
      }
    };
    for (const name of this.parameters) add(name, name, runs.map((r) => r.parameters[name]));
    add("\u0000metric", this.metricName || "metric", runs.map((r) => { const v = number(r.metric); return v === null || !Number.isFinite(v) ? null : v; }));
    this.axisByName = new Map(axes.map((axis) => [axis.name, axis]));
    return axes;
  }

  axisPosition(name, value) {
    const axis = this.axisByName && this.axisByName.get(name);
    if (!axis || value === null || value === undefined) return null;
    if (axis.kind === "category") {
      const index = axis.categories.indexOf(show(value));
      return index < 0 ? null : (axis.categories.length === 1 ? 0.5 : index / (axis.categories.length - 1));
    }
    if (typeof value !== "number" || !Number.isFinite(value)) return null;
    const v = axis.kind === "log" ? Math.log10(value) : value;
    return (v - axis.low) / (axis.high - axis.low);
  }

  rangeText(name, low, high) {
    const axis = this.axisByName && this.axisByName.get(name);
    if (!axis) return "";
    if (axis.kind === "category") {
      return axis.categories.filter((_, i) => { const p = axis.categories.length === 1 ? 0.5 : i / (axis.categories.length - 1); return p >= low && p <= high; }).join(", ");
    }
    const at = (p) => { const v = axis.low + p * (axis.high - axis.low); return show(axis.kind === "log" ? 10 ** v : v); };
    return `${at(low)} … ${at(high)}`;
  }

  drawParallel() {
    const axes = this.axes();
    const width = Math.max(520, this.parallel.clientWidth || 900), height = 300, top = 24, bottom = 24;
    const span = height - top - bottom;
    const x = (i) => 40 + (i * (width - 80)) / Math.max(1, axes.length - 1);
    const y = (p) => top + (1 - p) * span;
    const chart = svg("svg", { width, height, id: "parallel-svg" });
    const visible = new Set(this.visibleRuns().map((r) => r.run_id));
    const metricAxis = axes[axes.length - 1];
    for (const run of this.runs.values()) {
      const points = axes.map((axis, i) => {
        const value = axis.name === "\u0000metric" ? number(run.metric) : run.parameters[axis.name];
        const p = this.axisPosition(axis.name, value);
        return p === null ? null : `${x(i)},${y(p)}`;
      });
      if (points.some((p) => p === null) && !points.some((p) => p !== null)) continue;
      const shade = this.axisPosition(metricAxis.name, number(run.metric));
      const color = shade === null ? "#98a2b3" : `hsl(${Math.round(220 - 200 * (this.maximize ? shade : 1 - shade))},70%,45%)`;
      chart.append(svg("polyline", { className: null, class: visible.has(run.run_id) ? "line" : "line out",
        points: points.filter((p) => p !== null).join(" "), stroke: color, "data-run": run.run_id }));
    }
    axes.forEach((axis, i) => {
      const group = svg("g", { class: "axis", "data-axis": axis.name === "\u0000metric" ? "metric" : axis.name });
      group.append(svg("line", { x1: x(i), x2: x(i), y1: top, y2: top + span }));
      group.append(svg("text", { x: x(i), y: 12, "text-anchor": "middle" }, axis.label));
      const ticks = axis.kind === "category" ? axis.categories.map((c, j) => [axis.categories.length === 1 ? 0.5 : j / (axis.categories.length - 1), c])
        : [0, 0.5, 1].map((p) => [p, this.rangeText(axis.name, p, p).split(" … ")[0]]);
      for (const [p, label] of ticks) group.append(svg("text", { x: x(i) + 4, y: y(p) + 4 }, label));
      const brush = this.brushes.get(axis.name);
      if (brush) group.append(svg("rect", { class: "brush", x: x(i) - 7, width: 14, y: y(brush[1]), height: Math.max(2, y(brush[0]) - y(brush[1])) }));
      // A wide transparent strip to drag on.
      const strip = svg("rect", { x: x(i) - 12, width: 24, y: top, height: span, fill: "transparent", "data-strip": axis.name === "\u0000metric" ? "metric" : axis.name, style: null });
      strip.style.cursor = "crosshair";
      strip.addEventListener("mousedown", (event) => this.startBrush(event, axis.name, chart, top, span));
      group.append(strip);
      chart.append(group);
    });
    clear(this.parallel).append(chart);
  }

  startBrush(event, name, chart, top, span) {
    event.preventDefault();
    const box = chart.getBoundingClientRect();
    const at = (clientY) => Math.min(1, Math.max(0, 1 - (clientY - box.top - top) / span));
    const start = at(event.clientY);
    let moved = false;
    const move = (e) => {
      const now = at(e.clientY);
      if (Math.abs(now - start) > 0.01) moved = true;
      if (moved) { this.brushes.set(name, [Math.min(start, now), Math.max(start, now)]); this.drawParallel(); this.drawTable(); }
    };
    const up = () => {
      window.removeEventListener("mousemove", move);
      window.removeEventListener("mouseup", up);
      if (!moved) this.brushes.delete(name);
      this.drawParallel(); this.drawTable();
    };
    window.addEventListener("mousemove", move);
    window.addEventListener("mouseup", up);
  }

  drawSlices() {
    const box = clear(this.slices);
    const axes = this.axes().filter((a) => a.name !== "\u0000metric");
    const metricAxis = this.axisByName.get("\u0000metric");
    if (!metricAxis || metricAxis.kind === "category") { box.append(el("p", { className: "muted" }, "no metric values yet")); return; }
    for (const axis of axes) {
      const w = 260, h = 180, pad = 30;
      const plot = svg("svg", { width: w, height: h, "data-slice": axis.name });
      plot.append(svg("text", { x: w / 2, y: 12, "text-anchor": "middle" }, axis.label));
      plot.append(svg("line", { x1: pad, x2: w - 8, y1: h - pad, y2: h - pad, stroke: "#98a2b3" }));
      plot.append(svg("line", { x1: pad, x2: pad, y1: 18, y2: h - pad, stroke: "#98a2b3" }));
      for (const run of this.runs.values()) {
        const px = this.axisPosition(axis.name, run.parameters[axis.name]);
        const py = this.axisPosition("\u0000metric", number(run.metric));
        if (px === null || py === null) continue;
        plot.append(svg("circle", { cx: pad + px * (w - pad - 12), cy: h - pad - py * (h - pad - 22), r: 3, fill: COLORS[0], "fill-opacity": 0.7 },
          svg("title", {}, `${run.run_id}: ${show(run.parameters[axis.name])} → ${show(number(run.metric))}`)));
      }
      const ends = axis.kind === "category" ? [axis.categories[0], axis.categories[axis.categories.length - 1]]
        : [this.rangeText(axis.name, 0, 0).split(" … ")[0], this.rangeText(axis.name, 1, 1).split(" … ")[0]];
      plot.append(svg("text", { x: pad, y: h - 10 }, ends[0]));
      plot.append(svg("text", { x: w - 8, y: h - 10, "text-anchor": "end" }, ends[1]));
      box.append(plot);
    }
  }

  // -- history --

  drawKeys() {
    const chosen = this.history.key || (this.keys.includes(this.metricName) ? this.metricName : this.keys[0]);
    append(clear(this.keySelect), this.keys.map((k) => el("option", { value: k, selected: k === chosen }, k)));
    if (chosen && chosen !== this.history.key) this.chooseKey(chosen);
  }

  chooseKey(key) {
    this.history = { key, after: 0, rows: new Map() };
    if (this.charts.history) { this.charts.history.destroy(); this.charts.history = null; }
    this.refreshHistory();
  }

  async refreshHistory() {
    const key = this.history.key;
    if (!key || this.historyBusy) return;
    this.historyBusy = true;
    try {
      let more = true, grew = false;
      while (more && key === this.history.key) {
        const answer = await getJSON(`/api/sweeps/${encodeURIComponent(this.sweepId)}/history?key=${encodeURIComponent(key)}&after=${this.history.after}`);
        if (key !== this.history.key) break;
        for (const [runId, points] of Object.entries(answer.runs)) {
          if (!this.history.rows.has(runId)) this.history.rows.set(runId, []);
          const rows = this.history.rows.get(runId);
          for (const [step, value] of points) rows.push([step, number(value)]);
          grew = true;
        }
        this.history.after = answer.after;
        more = answer.more;
      }
      if (grew || !this.charts.history) this.drawHistory();
    } finally { this.historyBusy = false; }
  }

  drawHistory() {
    const byRun = this.history.rows;
    const steps = [...new Set([...byRun.values()].flatMap((rows) => rows.map((r) => r[0])))].sort((a, b) => a - b);
    const index = new Map(steps.map((s, i) => [s, i]));
    const ids = [...byRun.keys()];
    const data = [steps];
    for (const id of ids) {
      const line = new Array(steps.length).fill(null);
      for (const [step, value] of byRun.get(id)) line[index.get(step)] = Number.isFinite(value) ? value : null;
      data.push(line);
    }
    if (this.charts.history) this.charts.history.destroy();
    clear(this.historyChart);
    if (!ids.length) { this.historyChart.append(el("p", { className: "muted" }, "nothing logged yet")); this.charts.history = null; return; }
    this.historyChart.dataset.runs = String(ids.length);
    this.historyChart.dataset.rows = String([...byRun.values()].reduce((n, rows) => n + rows.length, 0));
    const series = [{ label: "step" }, ...ids.map((id, i) => {
      const run = this.runs.get(id);
      const stopped = run && run.state === "stopped";
      return { label: id, stroke: stopped ? "#c0352b" : COLORS[i % COLORS.length], width: 1, dash: stopped ? [4, 3] : undefined, spanGaps: true, points: { show: steps.length < 40 } };
    })];
    this.charts.history = new uPlot({
      width: Math.max(520, this.historyChart.clientWidth || 900), height: 280,
      scales: { x: { time: false } }, legend: { show: ids.length <= 12 },
      axes: [{ label: "step" }, { label: this.history.key }], series,
    }, data, this.historyChart);
  }

  stop() { this.poller.stop(); for (const chart of Object.values(this.charts)) if (chart && chart.destroy) chart.destroy(); }
}

// ---- a run -------------------------------------------------------------------------------

function curveChart(target, title, lines) {
  // lines: [{label, points: [[step, value]], color}]
  const steps = [...new Set(lines.flatMap((l) => l.points.map((p) => p[0])))].sort((a, b) => a - b);
  const index = new Map(steps.map((s, i) => [s, i]));
  const data = [steps, ...lines.map((line) => {
    const values = new Array(steps.length).fill(null);
    for (const [step, value] of line.points) { const v = number(value); values[index.get(step)] = Number.isFinite(v) ? v : null; }
    return values;
  })];
  return new uPlot({
    width: 420, height: 200, title, scales: { x: { time: false } },
    series: [{ label: "step" }, ...lines.map((l) => ({ label: l.label, stroke: l.color, spanGaps: true, points: { show: steps.length < 40 } }))],
  }, data, target);
}

class RunView {
  constructor(main, where, runId) {
    this.runId = runId;
    where.textContent = `run ${runId}`;
    this.main = main;
    this.charts = [];
    this.shown = null;
    this.poller = new Poller(() => this.refresh());
  }

  async refresh() {
    const run = await getJSON(`/api/runs/${encodeURIComponent(this.runId)}`);
    const fingerprint = JSON.stringify([run.state, run.summary, run.error, run.heartbeat_at, Object.values(run.curves).map((c) => c.length)]);
    if (fingerprint === this.shown) return;
    const stateChanged = !this.run || this.run.state !== run.state || this.run.notebook !== run.notebook;
    this.shown = fingerprint;
    this.run = run;
    this.draw(stateChanged);
    if (!["running", "pending"].includes(run.state) && run.notebook) this.poller.stop();
  }

  draw(reloadNotebook) {
    const run = this.run;
    for (const chart of this.charts) chart.destroy();
    this.charts = [];
    const keepFrame = !reloadNotebook && this.frame;
    clear(this.main);
    const duration = run.started_at === null ? null : ((run.finished_at || Date.now() / 1000) - run.started_at);
    this.main.append(
      el("h1", {}, `Run ${run.run_id} `, el("span", { className: "muted" }, `#${run.number} of sweep `),
        el("a", { href: `#/sweep/${encodeURIComponent(run.sweep_id)}` }, run.sweep_id)),
      el("div", { className: "toolbar" },
        run.state === "running" ? el("button", { id: "stop-run", onclick: async () => {
          try { this.said.textContent = (await postJSON(`/api/runs/${encodeURIComponent(run.run_id)}/stop`)).said; }
          catch (error) { this.said.textContent = error.message; }
        } }, "stop this run") : null,
        this.said = el("span", { className: "said" })),
      el("div", { className: "grid2" },
        el("div", { className: "card" }, el("dl", { className: "facts", id: "run-facts" },
          el("dt", {}, "state"), el("dd", { id: "run-state" }, stateBadge(run.state)),
          run.error ? [el("dt", {}, "reason"), el("dd", { id: "run-error", className: "error" }, run.error)] : null,
          el("dt", {}, run.metric_name || "metric"), el("dd", {}, show(number(run.metric))),
          el("dt", {}, "duration"), el("dd", {}, seconds(duration)),
          el("dt", {}, "agent"), el("dd", {}, run.agent ? `${run.agent.host} (pid ${run.agent.pid})` : "–"),
          el("dt", {}, "started"), el("dd", {}, run.started_at ? new Date(run.started_at * 1000).toLocaleString() : "–"))),
        el("div", { className: "card" }, el("h2", {}, "Values"), el("table", { id: "run-values" }, el("tbody", {},
          Object.entries(run.parameters).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, show(v)))))),
          el("h2", {}, "Summary"), el("table", { id: "run-summary" }, el("tbody", {},
            Object.entries(run.summary).map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, show(number(v) ?? v)))))))),
      el("h2", {}, "Curves"),
      this.curves = el("div", { className: "slices", id: "run-curves" }),
      el("h2", {}, "Executed notebook ", run.notebook && !run.notebook_problem
        ? el("a", { href: `/runs/${encodeURIComponent(run.run_id)}/notebook.ipynb`, id: "download", download: true }, "download .ipynb") : null),
      this.notebookBox = el("div", {}));
    for (const [key, points] of Object.entries(run.curves)) {
      const box = el("div", { "data-curve": key });
      this.curves.append(box);
      this.charts.push(curveChart(box, key, [{ label: run.run_id, points, color: COLORS[0] }]));
    }
    if (!Object.keys(run.curves).length) this.curves.append(el("p", { className: "muted" }, "nothing logged"));
    if (run.notebook_problem) this.notebookBox.append(el("p", { className: "muted", id: "notebook-problem" }, run.notebook_problem));
    else if (keepFrame) this.notebookBox.append(keepFrame);
    else {
      // sandbox with no allowances: the notebook's own scripts never run, and it has no
      // access to this page (its server-side policy says the same).
      this.frame = el("iframe", { className: "notebook", id: "notebook", sandbox: "", title: "executed notebook",
        src: `/runs/${encodeURIComponent(run.run_id)}/notebook.html` });
      this.notebookBox.append(this.frame);
    }
  }

  stop() { this.poller.stop(); for (const chart of this.charts) chart.destroy(); }
}

// ---- two runs side by side ---------------------------------------------------------------

class CompareView {
  constructor(main, where, first, second) {
    where.textContent = `runs ${first} and ${second}`;
    this.main = main;
    this.ids = [first, second];
    this.charts = [];
    this.load();
  }

  async load() {
    try { this.runs = await Promise.all(this.ids.map((id) => getJSON(`/api/runs/${encodeURIComponent(id)}`))); }
    catch (error) { this.main.append(el("p", {}, error.message)); return; }
    const [a, b] = this.runs;
    const names = [...new Set([...Object.keys(a.parameters), ...Object.keys(b.parameters)])].sort();
    const summary = [...new Set([...Object.keys(a.summary), ...Object.keys(b.summary)])].sort();
    const row = (name, x, y) => el("tr", { className: show(x) === show(y) ? "" : "differs", "data-name": name },
      el("td", {}, name), el("td", {}, show(x)), el("td", {}, show(y)));
    this.main.append(el("h1", {}, `Runs ${a.run_id} and ${b.run_id}`),
      el("div", { className: "card" }, el("table", { id: "compare-values" },
        el("thead", {}, el("tr", {}, el("th", {}, ""), el("th", {}, a.run_id), el("th", {}, b.run_id))),
        el("tbody", {},
          row("state", a.state, b.state),
          names.map((n) => row(n, a.parameters[n], b.parameters[n])),
          summary.map((n) => row(n, a.summary[n], b.summary[n]))))),
      el("h2", {}, "Curves"), this.curves = el("div", { className: "slices", id: "compare-curves" }));
    const keys = [...new Set([...Object.keys(a.curves), ...Object.keys(b.curves)])].sort();
    for (const key of keys) {
      const box = el("div", { "data-curve": key });
      this.curves.append(box);
      this.charts.push(curveChart(box, key, [
        { label: a.run_id, points: a.curves[key] || [], color: COLORS[0] },
        { label: b.run_id, points: b.curves[key] || [], color: COLORS[1] }]));
    }
  }

  stop() { for (const chart of this.charts) chart.destroy(); }
}

// ---- start -------------------------------------------------------------------------------

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  // The token set the cookie on this first request: keep it out of the address bar.
  if (new URLSearchParams(location.search).has("token")) history.replaceState(null, "", "/" + location.hash);
  route();
});

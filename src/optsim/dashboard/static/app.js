// optsim dashboard: the runs table, the plot and a run's page, from the server's JSON endpoints.
"use strict";

const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
const DASHES = ["solid", "dash", "dashdot", "dot"];
const $ = (id) => document.getElementById(id);

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

async function getJSON(url) {
  const response = await fetch(url);
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

function filterParams() {
  const p = new URLSearchParams();
  for (const name of ["experiment", "method", "status"]) {
    const v = $("f-" + name).value;
    if (v) p.append(name, v);
  }
  for (const item of $("f-where").value.split(";")) {
    if (item.trim()) p.append("where", item.trim());
  }
  return p;
}

function fillSelect(select, values, keepFirst) {
  const current = select.value;
  while (select.options.length > (keepFirst ? 1 : 0)) select.remove(select.options.length - 1);
  for (const v of values) select.add(new Option(v, v));
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

function fmt(v, digits) {
  if (v === null || v === undefined) return "-";
  return typeof v === "number" ? (digits ? v.toExponential(digits) : String(v)) : String(v);
}

async function loadRuns() {
  const data = await getJSON("/api/runs?" + filterParams());
  $("store").textContent = "store: " + data.store + " (read-only)";
  fillSelect($("f-experiment"), data.experiments, true);
  fillSelect($("f-method"), data.methods, true);
  fillSelect($("f-status"), data.statuses, true);
  if (!$("p-x").options.length) fillSelect($("p-x"), data.x_axes, false);
  lastRuns = data.runs;
  renderRows(PAGE);
  $("run-count").textContent = "(" + data.runs.length + ")";
  document.body.dataset.runs = String(data.runs.length);
}

// the table shows the first rows of a long list, more on demand (thousands of rows slow a page down)
const PAGE = 1000;
let lastRuns = [];

function renderRows(limit) {
  const body = $("runs").tBodies[0];
  const rows = document.createDocumentFragment();
  for (const r of lastRuns.slice(0, limit)) {
    const tr = document.createElement("tr");
    tr.dataset.id = r.id;
    const cells = [r.id, r.experiment, r.label, r.method, r.seed, r.status, r.rounds, fmt(r.final_metric, 3),
                   r.wall_time === null ? "-" : r.wall_time.toFixed(2), r.stale ? "stale: " + r.stale : "this"];
    cells.forEach((v, i) => {
      const td = document.createElement("td");
      td.textContent = v === null || v === undefined ? "-" : String(v);
      if ([0, 4, 6, 7, 8].includes(i)) td.className = "num";
      if (i === 5) td.className = "status-" + r.status;
      if (i === 9 && r.stale) td.className = "stale";
      tr.appendChild(td);
    });
    tr.addEventListener("click", () => showRun(r.id).catch((e) => showError(e.message)));
    rows.appendChild(tr);
  }
  body.replaceChildren(rows);
  const more = $("more-runs");
  more.hidden = lastRuns.length <= limit;
  more.textContent = "show " + Math.min(PAGE, lastRuns.length - limit) + " more of " + (lastRuns.length - limit);
  more.onclick = () => renderRows(limit + PAGE);
}

function plotParams() {
  const p = filterParams();
  p.set("x", $("p-x").value || "rounds");
  if ($("p-y").value) p.set("y", $("p-y").value);
  if ($("p-best").checked) p.set("best", "1");
  return p;
}

async function loadPlot() {
  const params = plotParams();
  for (const f of ["png", "pdf", "csv"]) {
    const e = new URLSearchParams(params);
    e.set("format", f);
    $("export-" + f).href = "/api/export?" + e;
  }
  params.set("max_points", "1000");
  const data = await getJSON("/api/curves?" + params);
  const families = [...new Set(data.curves.map((c) => c.family))];
  const seen = {};
  const traces = [];
  for (const c of data.curves) {
    const colour = PALETTE[families.indexOf(c.family) % PALETTE.length];
    const k = (seen[c.family] = (seen[c.family] || 0) + 1) - 1;
    const dash = c.statuses.includes("diverged") ? "dot" : DASHES[k % DASHES.length];
    if (c.lo) {
      traces.push({x: c.x, y: c.lo, mode: "lines", line: {width: 0, color: colour}, hoverinfo: "skip",
                   showlegend: false, legendgroup: c.label, name: c.label + " min", meta: "band"});
      traces.push({x: c.x, y: c.hi, mode: "lines", line: {width: 0, color: colour}, fill: "tonexty",
                   fillcolor: colour + "26", hoverinfo: "skip", showlegend: false, legendgroup: c.label,
                   name: c.label + " max", meta: "band"});
    }
    traces.push({x: c.x, y: c.mean, mode: "lines", name: c.label, legendgroup: c.label, meta: "mean",
                 line: {color: colour, width: 1.6, dash: dash}});
  }
  const layout = {
    margin: {l: 70, r: 20, t: 20, b: 50},
    xaxis: {title: {text: data.xlabel}, type: $("p-logx").checked ? "log" : "linear"},
    yaxis: {title: {text: data.ylabel}, type: $("p-logy").checked ? "log" : "linear", exponentformat: "e"},
    legend: {font: {size: 10}}, showlegend: true,
  };
  await Plotly.react($("plot"), traces, layout, {displaylogo: false, responsive: true});
  $("plot-note").textContent = data.curves.length + " curves from " + data.runs + " runs; y = " + data.y +
    "; mean over seeds with the min-max band; at most 1000 points per curve are drawn (exports hold them all)";
  document.body.dataset.curves = String(data.curves.length);
}

async function showRun(id) {
  const run = await getJSON("/api/run/" + encodeURIComponent(id));
  $("run-view").hidden = false;
  $("run-title").textContent = run.id + ": " + run.label + " (" + run.status + ")";
  const meta = run.meta || {};
  $("run-paper").textContent = [meta.paper ? "paper: " + meta.paper : "",
    meta.stepsize !== undefined && meta.stepsize !== null ? "stepsize: " + meta.stepsize : "",
    "checkpoint: " + (run.checkpoint ? run.checkpoint + " bytes" : "none"),
    run.stale ? "made by another build: " + run.stale : ""].filter(Boolean).join(" · ");
  const info = Object.assign({}, run);
  for (const k of ["config", "meta", "columns"]) delete info[k];
  $("run-info").textContent = JSON.stringify(info, null, 2);
  $("run-config").textContent = JSON.stringify(run.config, null, 2);
  $("run-meta").textContent = JSON.stringify(run.meta, null, 2);
  const metric = (run.meta && run.meta.metric) || "f_gap";
  fillSelect($("run-y"), run.columns.filter((c) => c !== "round"), false);
  fillSelect($("run-x"), ["round"].concat(run.columns.filter((c) => c !== "round")), false);
  if (run.columns.includes(metric) && !$("run-y").dataset.touched) $("run-y").value = metric;
  $("run-view").dataset.id = run.id;
  await drawRunTrace();
  location.hash = "run/" + run.id;
  document.body.dataset.run = String(run.id);
}

async function drawRunTrace() {
  const id = $("run-view").dataset.id;
  const y = $("run-y").value, x = $("run-x").value || "round";
  if (!id || !y) return;
  const t = await getJSON("/api/trace/" + id + "?columns=" + encodeURIComponent(x + "," + y) + "&max_points=2000");
  const positive = t.columns[y].every((v) => v === null || v > 0);
  await Plotly.react($("run-plot"), [{x: t.columns[x], y: t.columns[y], mode: "lines", name: y}],
    {margin: {l: 70, r: 20, t: 20, b: 50}, xaxis: {title: {text: x}},
     yaxis: {exponentformat: "e", title: {text: y + (t.length > t.index.length ? " (" + t.index.length + " of " + t.length +
       " rows)" : "")}, type: positive ? "log" : "linear"}},
    {displaylogo: false, responsive: true});
}

async function refresh() {
  showError("");
  document.body.dataset.ready = "0";
  try {
    await loadRuns();
    await loadPlot();
  } catch (e) {
    showError(e.message);
  }
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  $("apply").addEventListener("click", refresh);
  for (const id of ["f-experiment", "f-method", "f-status"]) $(id).addEventListener("change", refresh);
  $("f-where").addEventListener("keydown", (e) => { if (e.key === "Enter") refresh(); });
  for (const id of ["p-x", "p-y", "p-best", "p-logx", "p-logy"]) {
    $(id).addEventListener("change", () => loadPlot().catch((e) => showError(e.message)));
  }
  $("run-close").addEventListener("click", () => { $("run-view").hidden = true; location.hash = ""; });
  for (const id of ["run-y", "run-x"]) {
    $(id).addEventListener("change", () => { $(id).dataset.touched = "1"; drawRunTrace().catch((e) => showError(e.message)); });
  }
  refresh().then(() => {
    const m = location.hash.match(/^#run\/(\d+)$/);
    if (m) showRun(m[1]).catch((e) => showError(e.message));
  });
});

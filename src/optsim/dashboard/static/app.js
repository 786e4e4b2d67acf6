// optsim dashboard: the runs table (grouped by a config field), the plot, the sweep view, the recipe
// outcomes and a run's page, from the server's JSON endpoints.
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
  if ($("f-group").value) p.set("group", $("f-group").value);
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
  fillSelect($("f-group"), data.fields, true);
  const params = data.fields.filter((f) => f !== "seed" && f !== "seeds");
  const param = $("s-param").value;
  fillSelect($("s-param"), params, false);
  if (!param && params.includes("method.stepsize_mult")) $("s-param").value = "method.stepsize_mult";
  lastGroups = {};
  for (const g of data.groups) lastGroups[JSON.stringify(g.value)] = g;
  lastRuns = data.group ? groupOrder(data.runs, data.groups) : data.runs;
  renderRows(PAGE);
  $("run-count").textContent = "(" + data.runs.length + ")";
  document.body.dataset.runs = String(data.runs.length);
}

// the table shows the first rows of a long list, more on demand (thousands of rows slow a page down)
const PAGE = 1000;
let lastRuns = [];
let lastGroups = {};

function groupOrder(runs, groups) {
  const rank = new Map(groups.map((g, i) => [JSON.stringify(g.value), i]));
  return runs.map((r, i) => [rank.get(JSON.stringify(r.group)), i, r]).sort((a, b) => a[0] - b[0] || a[1] - b[1])
    .map((t) => t[2]);
}

function groupRow(run) {
  const g = lastGroups[JSON.stringify(run.group)];
  const tr = document.createElement("tr");
  tr.className = "group-row";
  const td = document.createElement("td");
  td.colSpan = 10;
  const statuses = Object.entries(g.statuses).map(([k, v]) => v + " " + k).join(", ");
  td.textContent = $("f-group").value + " = " + fmt(g.value) + ": " + g.runs + " runs (" + statuses + ")" +
    (g.final_metric_mean === null ? "" : "; final metric mean " + fmt(g.final_metric_mean, 3) + ", least " +
     fmt(g.final_metric_min, 3));
  tr.appendChild(td);
  return tr;
}

function renderRows(limit) {
  const body = $("runs").tBodies[0];
  const rows = document.createDocumentFragment();
  let previous;
  for (const r of lastRuns.slice(0, limit)) {
    if ("group" in r && (previous === undefined || JSON.stringify(r.group) !== previous)) {
      rows.appendChild(groupRow(r));
      previous = JSON.stringify(r.group);
    }
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
  p.set("band", $("p-band").value);
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
    "; mean over seeds with the " + (data.band === "se" ? "mean ± standard error" : "min-max") + " band" +
    (data.group ? "; one hue per " + data.group : "") + "; at most 1000 points per curve are drawn (exports hold them all)";
  document.body.dataset.curves = String(data.curves.length);
}

async function loadSweep() {
  const param = $("s-param").value;
  const body = $("sweep-best").tBodies[0];
  if (!param) {
    await Plotly.react($("sweep-plot"), [], {margin: {l: 70, r: 20, t: 20, b: 50}}, {displaylogo: false});
    body.replaceChildren();
    $("sweep-note").textContent = "no config field varies among the selected runs";
    document.body.dataset.sweep = "0";
    return;
  }
  const p = filterParams();
  p.set("param", param);
  p.set("stat", $("s-stat").value);
  p.set("band", $("p-band").value);
  if ($("p-y").value) p.set("y", $("p-y").value);
  const data = await getJSON("/api/sweep?" + p);
  const families = [...new Set(data.lines.map((l) => l.family))];
  const traces = [];
  const rows = document.createDocumentFragment();
  data.lines.forEach((line, i) => {
    const colour = PALETTE[families.indexOf(line.family) % PALETTE.length];
    const pts = line.points;
    const hasBand = pts.some((q) => q.lo !== null);
    traces.push({x: pts.map((q) => q.x), y: pts.map((q) => q.mean), mode: "lines+markers", name: line.label,
                 legendgroup: line.label, meta: "sweep", line: {color: colour, dash: DASHES[i % DASHES.length]},
                 text: pts.map((q) => q.seeds + " seeds" + (q.diverged ? ", " + q.diverged + " diverged" : "")),
                 error_y: hasBand ? {type: "data", symmetric: false, color: colour,
                   array: pts.map((q) => q.hi === null ? null : q.hi - q.mean),
                   arrayminus: pts.map((q) => q.lo === null ? null : q.mean - q.lo)} : undefined});
    if (line.best) {
      traces.push({x: [line.best.x], y: [line.best.mean], mode: "markers", name: line.label + " best",
                   legendgroup: line.label, showlegend: false, meta: "best", hoverinfo: "x+y+name",
                   marker: {symbol: "star", size: 14, color: colour, line: {color: "#000", width: 1}}});
    }
    const tr = document.createElement("tr");
    const b = line.best;
    for (const v of [line.label, b ? fmt(b.x) : "-", b ? fmt(b.mean, 3) : "all diverged",
                     b && b.lo !== null ? fmt(b.lo, 3) + " .. " + fmt(b.hi, 3) : "-", b ? b.seeds : "-",
                     pts.filter((q) => q.diverged).map((q) => fmt(q.x) + " (" + q.diverged + " of " + q.seeds + ")")
                       .join(", ") || "-"]) {
      const td = document.createElement("td");
      td.textContent = String(v);
      tr.appendChild(td);
    }
    rows.appendChild(tr);
  });
  body.replaceChildren(rows);
  const layout = {
    margin: {l: 70, r: 20, t: 20, b: 50},
    xaxis: {title: {text: data.param}, type: data.categorical ? "category" : ($("s-logx").checked ? "log" : "linear")},
    yaxis: {title: {text: data.stat + " " + data.ylabel}, type: $("s-logy").checked ? "log" : "linear",
            exponentformat: "e"},
    legend: {font: {size: 10}}, showlegend: true,
  };
  await Plotly.react($("sweep-plot"), traces, layout, {displaylogo: false, responsive: true});
  $("sweep-note").textContent = data.lines.length + " lines from " + data.runs + " runs; y = " + data.stat + " " +
    data.y + " per run, mean over seeds with the " + (data.band === "se" ? "mean ± standard error" : "min-max") +
    " band; a star marks each line's best (least) mean" +
    (data.skipped ? "; " + data.skipped + " runs without " + data.param + " left out" : "");
  document.body.dataset.sweep = String(data.lines.length);
}

async function loadRecipes() {
  const data = await getJSON("/api/recipes");
  const rows = document.createDocumentFragment();
  for (const r of data.recipes) {
    const tr = document.createElement("tr");
    const cells = [r.id, r.verdict, r.claim || "", null, (r.fast ? "fast" : "full") +
                   (r.seconds !== undefined ? ", " + r.seconds.toFixed(1) + " s" : "") + (r.finished ? ", " + r.finished : "")];
    cells.forEach((v, i) => {
      const td = document.createElement("td");
      if (i === 3) {
        const pre = document.createElement("pre");
        pre.textContent = r.measured || "";
        td.appendChild(pre);
      } else {
        td.textContent = String(v);
      }
      if (i === 1) td.className = "verdict-" + String(r.verdict).replace(/ /g, "-");
      tr.appendChild(td);
    });
    const figs = document.createElement("td");
    for (const f of r.figures) {
      const a = document.createElement("a");
      a.href = f.url;
      if (/\.(png|svg)$/i.test(f.name)) {
        const img = document.createElement("img");
        img.src = f.url;
        img.alt = f.name;
        a.appendChild(img);
      } else {
        a.textContent = f.name;
      }
      figs.appendChild(a);
    }
    tr.appendChild(figs);
    rows.appendChild(tr);
  }
  $("recipes").tBodies[0].replaceChildren(rows);
  const counts = Object.entries(data.verdicts).map(([k, v]) => v + " " + k).join(", ");
  $("recipe-count").textContent = "(" + data.recipes.length + ")";
  $("recipes-note").textContent = data.recipes.length ? "from " + data.folder + ": " + counts :
    "no recipe outcomes in " + data.folder + ": `optsim reproduce ID` writes them (or pass --reproduce DIR)";
  document.body.dataset.recipes = String(data.recipes.length);
}

// launching a run or sweep: the server starts `python -m optsim run|sweep CONFIG`; the page polls its state
let launchTimer = null;

async function postJSON(url, body) {
  const response = await fetch(url, {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json", "X-Optsim-Dashboard": "1"}});
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

function showLaunch(s) {
  const running = s.state === "running";
  $("l-start").disabled = running || s.state === "off";
  $("l-stop").disabled = !running;
  $("l-state").textContent = s.state === "none" ? "nothing launched yet" : s.state === "off" ?
    "launching is off (the dashboard listens beyond this machine, or runs with --no-launch)" :
    "launch " + s.id + ": " + s.command + ": " + s.state + (s.returncode !== null ? " (exit " + s.returncode + ")" : "") +
    ", " + s.seconds + " s" + (s.stopped ? "; " + s.stopped : "");
  $("l-output").hidden = !s.output;
  $("l-output").textContent = s.output || "";
  document.body.dataset.launch = s.state;
}

async function pollLaunch() {
  const s = await getJSON("/api/launch");
  showLaunch(s);
  if (s.state === "running") {
    launchTimer = setTimeout(() => pollLaunch().catch((e) => showError(e.message)), 1000);
  } else if (launchTimer !== null) {
    launchTimer = null;
    await refresh();  // the launch ended: its runs are in the store
  }
}

async function startLaunch() {
  showError("");
  const s = await postJSON("/api/launch", {path: $("l-path").value, kind: $("l-kind").value});
  showLaunch(s);
  launchTimer = setTimeout(() => pollLaunch().catch((e) => showError(e.message)), 500);
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
  const errors = [];
  try {
    await loadRuns();
    for (const view of [loadPlot, loadSweep]) await view().catch((e) => errors.push(e.message));
  } catch (e) {
    errors.push(e.message);
  }
  await loadRecipes().catch((e) => errors.push(e.message));
  showError(errors.join("\n"));
  document.body.dataset.ready = "1";
}

document.addEventListener("DOMContentLoaded", () => {
  $("apply").addEventListener("click", refresh);
  for (const id of ["f-experiment", "f-method", "f-status", "f-group"]) $(id).addEventListener("change", refresh);
  $("f-where").addEventListener("keydown", (e) => { if (e.key === "Enter") refresh(); });
  for (const id of ["p-x", "p-y", "p-best", "p-logx", "p-logy", "p-band"]) {
    $(id).addEventListener("change", () => loadPlot().catch((e) => showError(e.message)));
  }
  for (const id of ["p-y", "p-band", "s-param", "s-stat", "s-logx", "s-logy"]) {
    $(id).addEventListener("change", () => loadSweep().catch((e) => showError(e.message)));
  }
  $("l-start").addEventListener("click", () => startLaunch().catch((e) => showError(e.message)));
  $("l-stop").addEventListener("click", () => postJSON("/api/launch/stop", {}).then(showLaunch)
    .catch((e) => showError(e.message)));
  $("l-path").addEventListener("keydown", (e) => {
    if (e.key === "Enter") startLaunch().catch((err) => showError(err.message));
  });
  getJSON("/api/launch").then((s) => {
    showLaunch(s);
    if (s.state === "running") { launchTimer = setTimeout(() => pollLaunch().catch((e) => showError(e.message)), 1000); }
  }).catch((e) => showError(e.message));
  $("run-close").addEventListener("click", () => { $("run-view").hidden = true; location.hash = ""; });
  for (const id of ["run-y", "run-x"]) {
    $(id).addEventListener("change", () => { $(id).dataset.touched = "1"; drawRunTrace().catch((e) => showError(e.message)); });
  }
  refresh().then(() => {
    const m = location.hash.match(/^#run\/(\d+)$/);
    if (m) showRun(m[1]).catch((e) => showError(e.message));
  });
});

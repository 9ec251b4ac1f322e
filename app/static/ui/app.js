/* Tuneforge dashboard: plain JavaScript over the public API (docs/dashboard.md). No library, no CDN. */
"use strict";
const KEY = "tuneforge.apiKey";
const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const show = (el, ...kids) => el.replaceChildren(...kids.filter((k) => k !== null && k !== undefined));
const alertBox = $("#alert");
let live = null; // AbortController of the page's stream / timer

function h(tag, attrs = {}, ...kids) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const kid of kids.flat()) if (kid !== null && kid !== undefined) el.append(kid instanceof Node ? kid : String(kid));
  return el;
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleString() : "—");
const fmtDur = (s) => (s === null || s === undefined ? "—" : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`);
const showError = (msg) => { alertBox.textContent = msg || ""; };

async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${localStorage.getItem(KEY)}`, ...(opts.headers || {}) };
  const r = await fetch(path, { ...opts, headers });
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try { const body = await r.json(); if (body.error && body.error.message) msg = body.error.message; } catch (_) { /* not JSON */ }
    if (r.status === 401) { localStorage.removeItem(KEY); }
    showError(msg);
    throw new Error(msg);
  }
  return r;
}
const getJSON = async (path) => (await api(path)).json();

/* ------------------------------------------------------------------ charts (inline SVG) */
const COLORS = ["#1f5fbf", "#c2410c", "#15803d", "#7e22ce", "#b91c1c", "#0e7490"];
function chart(title, series, { log = false } = {}) {
  // series: [{label, points: [[x, y], ...]}]
  const W = 400, H = 180, P = 46;
  const tr = (y) => (log ? Math.log10(Math.max(y, 1e-12)) : y);
  const pts = series.flatMap((s) => s.points).filter((p) => p[1] !== null && (!log || p[1] > 0));
  const fig = h("figure", { "data-metric": title }, h("figcaption", { text: title }));
  if (!pts.length) { fig.append(h("p", { class: "muted", text: "no points yet" })); return fig; }
  const xs = pts.map((p) => p[0]), ys = pts.map((p) => tr(p[1]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) x1 = x0 + 1; if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => P + ((x - x0) / (x1 - x0)) * (W - P - 8), sy = (y) => H - 18 - ((tr(y) - y0) / (y1 - y0)) * (H - 28);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "chart"); svg.setAttribute("role", "img");
  const last = series.map((s) => { const p = s.points.filter((q) => q[1] !== null).at(-1); return p ? `${s.label} ${p[1].toPrecision(4)} at step ${p[0]}` : ""; });
  svg.setAttribute("aria-label", `${title}${log ? " (log scale)" : ""}: ${last.filter(Boolean).join("; ")}`);
  const axis = (x, y, t, anchor) => { const e = document.createElementNS(ns, "text"); e.setAttribute("x", x); e.setAttribute("y", y); e.setAttribute("font-size", "10"); e.setAttribute("text-anchor", anchor); e.textContent = t; svg.append(e); };
  const fmt = (v) => (log ? (10 ** v).toPrecision(2) : Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : v.toPrecision(3));
  axis(P - 3, 12, fmt(y1), "end"); axis(P - 3, H - 18, fmt(y0), "end"); axis(P, H - 4, x0, "start"); axis(W - 8, H - 4, `step ${x1}`, "end");
  const frame = document.createElementNS(ns, "path"); frame.setAttribute("d", `M${P} 6V${H - 18}H${W - 8}`); frame.setAttribute("stroke", "#aaa"); frame.setAttribute("fill", "none"); svg.append(frame);
  series.forEach((s, i) => {
    const good = s.points.filter((p) => p[1] !== null && (!log || p[1] > 0));
    if (!good.length) return;
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", good.map((p, j) => `${j ? "L" : "M"}${sx(p[0]).toFixed(1)} ${sy(p[1]).toFixed(1)}`).join(""));
    path.setAttribute("stroke", COLORS[i % COLORS.length]); path.setAttribute("fill", "none"); path.setAttribute("stroke-width", "1.6");
    path.setAttribute("data-points", good.length);
    svg.append(path);
    if (good.length === 1) { const c = document.createElementNS(ns, "circle"); c.setAttribute("cx", sx(good[0][0])); c.setAttribute("cy", sy(good[0][1])); c.setAttribute("r", 3); c.setAttribute("fill", COLORS[i % COLORS.length]); svg.append(c); }
  });
  fig.append(svg);
  if (series.length > 1) fig.append(h("div", { class: "legend" }, series.map((s, i) => h("span", { style: `color:${COLORS[i % COLORS.length]}`, text: `■ ${s.label}` }))));
  return fig;
}
const METRICS = [["loss", "Loss"], ["eval_loss", "Eval loss"], ["learning_rate", "Learning rate"], ["grad_norm", "Grad norm"], ["tokens_per_second", "Tokens/s"], ["mean_token_accuracy", "Token accuracy"]];
const metricValue = (p, key) => (key in p ? p[key] : p.extra && key in p.extra ? p.extra[key] : null);

/* ------------------------------------------------------------------ sign in */
function signIn() {
  $("#nav").hidden = true;
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true, size: 48 });
  show(main, 
    h("h1", { text: "Sign in" }),
    h("p", { text: "Paste an API key (tuneforge keys create). It stays in this browser's local storage until you sign out." }),
    h("form", { id: "signin", onsubmit: async (e) => {
      e.preventDefault();
      localStorage.setItem(KEY, input.value.trim());
      try { await getJSON("/v1/files?limit=1"); showError(""); location.hash = "#/jobs"; route(); } catch (_) { localStorage.removeItem(KEY); }
    } }, h("label", { for: "key", text: "API key" }, input), h("button", { type: "submit", text: "Sign in" })),
  );
  input.focus();
}

/* ------------------------------------------------------------------ jobs */
async function jobsPage(params) {
  const status = params.get("status") || "", model = params.get("model") || "", meta = params.get("metadata") || "";
  const q = new URLSearchParams({ limit: "20" });
  if (status) q.set("status", status); if (model) q.set("model", model);
  if (params.get("after")) q.set("after", params.get("after"));
  if (meta.includes("=")) { const [k, v] = meta.split("="); q.set(`metadata[${k.trim()}]`, v.trim()); }
  const page = await getJSON(`/v1/fine_tuning/jobs?${q}`);
  const statuses = ["", "validating_files", "queued", "running", "paused", "succeeded", "failed", "cancelled"];
  const form = h("form", { class: "filters", "aria-label": "Filter jobs", onsubmit: (e) => {
    e.preventDefault(); const f = new FormData(e.target); const p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = `#/jobs?${p}`;
  } },
    h("label", {}, "Status", h("select", { name: "status" }, statuses.map((s) => h("option", { value: s, selected: s === status, text: s || "any" })))),
    h("label", {}, "Model", h("input", { name: "model", value: model })),
    h("label", {}, "Metadata key=value", h("input", { name: "metadata", value: meta, placeholder: "team=search" })),
    h("button", { type: "submit", text: "Filter" }));
  const compareBtn = h("button", { type: "button", class: "secondary", id: "compare-selected", text: "Compare selected", onclick: () => {
    const ids = [...main.querySelectorAll("input[name=pick]:checked")].map((c) => c.value);
    location.hash = `#/compare?ids=${ids.join(",")}`;
  } });
  const rows = page.data.map((j) => h("tr", { "data-job": j.id },
    h("td", {}, h("input", { type: "checkbox", name: "pick", value: j.id, "aria-label": `Select ${j.id} to compare` })),
    h("td", {}, h("a", { href: `#/jobs/${j.id}`, text: j.id })),
    h("td", { class: `status status-${j.status}`, text: j.status }),
    h("td", { text: j.model }),
    h("td", { text: (j.spec && j.spec.task && (j.spec.task.type || j.spec.task)) || "—" }),
    h("td", {}, h("progress", { max: 100, value: j.progress.percentage ?? 0, "aria-label": `${j.id} progress` }),
      h("span", { class: "muted", text: ` ${j.progress.percentage === null ? "" : Math.round(j.progress.percentage) + "%"} ${j.progress.remaining_s ? "ETA " + fmtDur(j.progress.remaining_s) : ""}` })),
    h("td", { text: fmtTime(j.created_at) }), h("td", { text: fmtTime(j.finished_at) }),
    h("td", { text: j.trained_tokens ?? "—" })));
  const next = page.has_more && page.data.length ? (() => { const p = new URLSearchParams(params); p.set("after", page.data.at(-1).id); return h("a", { href: `#/jobs?${p}`, text: "Next page →" }); })() : null;
  show(main, h("h1", { text: "Jobs" }), form,
    h("table", { id: "jobs" }, h("caption", { class: "muted", text: `${page.data.length} jobs on this page` }),
      h("thead", {}, h("tr", {}, ["", "Job", "Status", "Model", "Task", "Progress", "Created", "Finished", "Trained tokens"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows)),
    h("div", { class: "row" }, compareBtn, next));
  live = setTimeout(() => route(true), 3000);
}

/* ------------------------------------------------------------------ one job */
async function jobPage(id) {
  let job = await getJSON(`/v1/fine_tuning/jobs/${id}`);
  let points = (await getJSON(`/v1/fine_tuning/jobs/${id}/metrics?max_points=1000`)).data;
  const events = (await getJSON(`/v1/fine_tuning/jobs/${id}/events?limit=50`)).data.reverse();
  const cps = (await getJSON(`/v1/fine_tuning/jobs/${id}/checkpoints?limit=50`)).data;
  let log = localStorage.getItem("tuneforge.log") === "1";
  const head = h("div");
  const charts = h("div", { class: "grid", id: "charts" });
  const eventsBox = h("ol", { class: "events", id: "events", "aria-live": "polite", "aria-label": "Events" });
  const drawHead = () => show(head, 
    h("h1", { text: `Job ${job.id}` }),
    h("p", {}, h("span", { class: `status status-${job.status}`, id: "job-status", text: job.status }), ` · ${job.model} · step ${job.progress.step}/${job.progress.total_steps ?? "?"} · ETA ${fmtDur(job.progress.remaining_s)}`),
    job.error ? h("p", { class: "status-failed", id: "job-error", text: `${job.error.code}: ${job.error.message}` }) : null,
    h("div", { class: "row" }, ["cancel", "pause", "resume"].map((act) => h("button", { type: "button", class: "secondary", id: `job-${act}`,
      disabled: ["succeeded", "failed", "cancelled"].includes(job.status), onclick: async () => {
        try { job = await (await api(`/v1/fine_tuning/jobs/${id}/${act}`, { method: "POST" })).json(); showError(""); drawHead(); } catch (_) { /* shown */ }
      }, text: act[0].toUpperCase() + act.slice(1) }))),
  );
  const drawCharts = () => charts.replaceChildren(...METRICS.map(([key, title]) => chart(title, [{ label: key, points: points.map((p) => [p.step, metricValue(p, key)]) }], { log })));
  const addEvent = (e) => eventsBox.append(h("li", {}, h("span", { class: "muted", text: `${fmtTime(e.created_at)} ${e.level} ` }), e.message));
  drawHead(); drawCharts(); events.forEach(addEvent);
  const toggle = h("label", { class: "inline" }, h("input", { type: "checkbox", id: "logscale", checked: log, onchange: (e) => { log = e.target.checked; localStorage.setItem("tuneforge.log", log ? "1" : "0"); drawCharts(); } }), "Log scale");
  const download = async (fmt, step) => {
    const q = new URLSearchParams(); if (step !== undefined) q.set("checkpoint", step); if (fmt === "merged") q.set("format", "merged");
    const blob = await (await api(`/v1/fine_tuning/jobs/${id}/adapter?${q}`)).blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: `${id}-${step ?? "final"}-${fmt}.tar.gz` }); a.click(); URL.revokeObjectURL(a.href);
  };
  const cpTable = h("table", { id: "checkpoints" }, h("thead", {}, h("tr", {}, ["Step", "Metrics", "Download"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, cps.map((c) => h("tr", {}, h("td", { text: c.step_number }), h("td", { text: Object.entries(c.metrics).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${typeof v === "number" ? v.toPrecision(4) : v}`).join(", ") }),
      h("td", {}, h("button", { type: "button", class: "secondary", text: "PEFT", onclick: () => download("peft", c.step_number) }), " ", h("button", { type: "button", class: "secondary", text: "Merged", onclick: () => download("merged", c.step_number) }))))));
  show(main, head, h("h2", { text: "Curves" }), toggle, charts, h("h2", { text: "Events" }), eventsBox,
    h("h2", { text: "Checkpoints" }), cps.length ? cpTable : h("p", { class: "muted", text: "none yet" }),
    job.status === "succeeded" ? h("p", {}, h("button", { type: "button", text: "Download final adapter", onclick: () => download("peft") })) : null,
    h("h2", { text: "Spec" }), h("pre", { id: "spec", text: JSON.stringify(job.spec, null, 2) }));
  if (["succeeded", "failed", "cancelled"].includes(job.status)) return;
  follow(id, { status: (d) => { job = { ...job, status: d.status, progress: d.progress }; drawHead(); }, event: addEvent,
    metrics: (d) => { points = points.concat(d.points); drawCharts(); },
    done: async () => { job = await getJSON(`/v1/fine_tuning/jobs/${id}`); drawHead(); } });
}

/* SSE over fetch (EventSource cannot send the Authorization header). */
async function follow(id, handlers) {
  const ctl = new AbortController(); live = ctl;
  try {
    const r = await api(`/v1/fine_tuning/jobs/${id}/stream`, { signal: ctl.signal });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read(); if (done) break;
      buf += value; let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        let type = "message", data = "";
        for (const line of block.split("\n")) { if (line.startsWith("event:")) type = line.slice(6).trim(); else if (line.startsWith("data:")) data += line.slice(5).trim(); }
        if (data && handlers[type]) handlers[type](JSON.parse(data));
      }
    }
  } catch (_) { /* aborted on navigation */ }
}

/* ------------------------------------------------------------------ compare */
function flatten(obj, prefix = "", out = {}) {
  for (const [k, v] of Object.entries(obj || {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) flatten(v, `${prefix}${k}.`, out); else out[`${prefix}${k}`] = JSON.stringify(v);
  }
  return out;
}
async function comparePage(params) {
  const ids = (params.get("ids") || "").split(",").filter(Boolean).slice(0, 6);
  const input = h("input", { id: "compare-ids", name: "ids", value: ids.join(","), size: 60 });
  const form = h("form", { class: "filters", onsubmit: (e) => { e.preventDefault(); location.hash = `#/compare?ids=${input.value.replace(/\s/g, "")}`; } },
    h("label", { for: "compare-ids" }, "Job ids (2 to 6, comma-separated)", input), h("button", { type: "submit", text: "Compare" }));
  show(main, h("h1", { text: "Compare" }), form);
  if (ids.length < 2) { main.append(h("p", { class: "muted", text: "Pick 2 to 6 jobs on the Jobs page or type their ids." })); return; }
  const jobs = await Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}`)));
  const series = await Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}/metrics?max_points=1000`)));
  main.append(h("div", { class: "grid", id: "charts" }, METRICS.map(([key, title]) => chart(title, series.map((s, i) => ({ label: ids[i], points: s.data.map((p) => [p.step, metricValue(p, key)]) }))))));
  const flat = jobs.map((j) => flatten(j.spec));
  const keys = [...new Set(flat.flatMap(Object.keys))].sort();
  main.append(h("h2", { text: "Specs" }), h("table", { id: "spec-diff" },
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "field" }), ids.map((id) => h("th", { scope: "col", text: id })))),
    h("tbody", {}, keys.map((k) => { const vals = flat.map((f) => f[k] ?? "—"); const differs = new Set(vals).size > 1;
      return h("tr", { class: differs ? "diff" : null, "data-differs": differs ? "true" : null }, h("th", { scope: "row", text: k + (differs ? " (differs)" : "") }), vals.map((v) => h("td", { text: v }))); }))));
}

/* ------------------------------------------------------------------ files */
async function filesPage(params) {
  const q = new URLSearchParams({ limit: "50" }); if (params.get("after")) q.set("after", params.get("after"));
  const page = await getJSON(`/v1/files?${q}`);
  const fileInput = h("input", { type: "file", id: "upload-file", name: "file", required: true, accept: ".jsonl,.json,.csv,.tsv,.txt" });
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const report = h("div", { id: "upload-report", "aria-live": "polite" });
  const form = h("form", { id: "upload", onsubmit: (e) => {
    e.preventDefault(); if (!fileInput.files.length) return;
    const body = new FormData(); body.append("file", fileInput.files[0]); body.append("purpose", "fine-tune");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files"); xhr.setRequestHeader("Authorization", `Bearer ${localStorage.getItem(KEY)}`);
    xhr.upload.onprogress = (ev) => { if (ev.lengthComputable) bar.value = (100 * ev.loaded) / ev.total; };
    xhr.onload = () => {
      let data = {}; try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
      if (xhr.status !== 200) { const msg = (data.error && data.error.message) || `${xhr.status}`; showError(msg); report.replaceChildren(h("div", { class: "report status-failed" }, h("h2", { text: "Rejected" }), h("pre", { text: msg }))); return; }
      showError(""); bar.value = 100;
      report.replaceChildren(h("div", { class: "report" }, h("h2", { text: `Uploaded ${data.id}` }),
        h("p", { text: `${data.filename}: ${data.format}, ${data.n_rows} rows, ${data.bytes} bytes, status ${data.status}` }),
        h("table", {}, h("thead", {}, h("tr", {}, ["Column", "Types", "Non-null"].map((t) => h("th", { scope: "col", text: t })))),
          h("tbody", {}, Object.entries(data.columns || {}).map(([c, info]) => h("tr", {}, h("td", { text: c }), h("td", { text: JSON.stringify(info.types ?? info.type ?? "") }), h("td", { text: info.non_null ?? "" })))))));
      setTimeout(() => route(true), 50);
    };
    xhr.send(body);
  } }, h("label", { for: "upload-file" }, "Training file (JSONL or CSV)", fileInput), bar, h("button", { type: "submit", text: "Upload" }));
  const list = h("table", { id: "files" }, h("thead", {}, h("tr", {}, ["File", "Name", "Format", "Rows", "Bytes", "Status", "Created"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, page.data.map((f) => h("tr", { "data-file": f.id }, h("td", { text: f.id }), h("td", { text: f.filename }), h("td", { text: f.format }), h("td", { text: f.n_rows }), h("td", { text: f.bytes }), h("td", { text: f.status }), h("td", { text: fmtTime(f.created_at) })))));
  const old = $("#upload-report");
  show(main, h("h1", { text: "Files" }), form, old || report, h("h2", { text: "Your files" }), list,
    page.has_more && page.data.length ? h("a", { href: `#/files?after=${page.data.at(-1).id}`, text: "Next page →" }) : null);
}

/* ------------------------------------------------------------------ router */
async function route(refresh = false) {
  if (live) { if (live.abort) live.abort(); else clearTimeout(live); live = null; }
  if (!localStorage.getItem(KEY)) { signIn(); return; }
  $("#nav").hidden = false;
  const [path, query = ""] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query);
  for (const a of document.querySelectorAll("nav a")) a.toggleAttribute("aria-current", path.startsWith(a.getAttribute("href").slice(1)) && a.getAttribute("href").startsWith("#"));
  for (const a of document.querySelectorAll("nav a[aria-current]")) a.setAttribute("aria-current", "page");
  if (!refresh) showError("");
  try {
    if (path.startsWith("/jobs/")) await jobPage(decodeURIComponent(path.slice(6)));
    else if (path === "/compare") await comparePage(params);
    else if (path === "/files") await filesPage(params);
    else await jobsPage(params);
    document.title = `${main.querySelector("h1")?.textContent || "Tuneforge"} · Tuneforge`;
    if (!refresh) main.focus({ preventScroll: true });
  } catch (e) { if (!localStorage.getItem(KEY)) signIn(); }
}
$("#signout").addEventListener("click", () => { localStorage.removeItem(KEY); location.hash = ""; signIn(); });
window.addEventListener("hashchange", () => route());
route();

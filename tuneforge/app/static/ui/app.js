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
const MAX_POINTS = 1000; // points per series read for a chart; the API downsamples (max_points)
// Status changes for screen readers: a polite live region that is only written when something happened.
const announce = (msg) => { const el = $("#announce"); el.textContent = ""; setTimeout(() => { el.textContent = msg; }, 50); };
/* A selector that finds the focused control again after its part of the page was re-rendered. */
function focusKey(el) {
  if (!el || el === document.body || el === main || !main.contains(el)) return null;
  if (el.id) return `#${CSS.escape(el.id)}`;
  if (el.name && el.value) return `${el.tagName.toLowerCase()}[name="${CSS.escape(el.name)}"][value="${CSS.escape(el.value)}"]`;
  const href = el.getAttribute("href");
  return href ? `a[href="${CSS.escape(href)}"]` : null;
}
function keepFocus(render) {
  const key = focusKey(document.activeElement);
  render();
  const el = key && main.querySelector(key);
  if (el && el !== document.activeElement) el.focus({ preventScroll: true });
}

let routeGen = 0;
async function api(path, opts = {}) {
  const headers = { Authorization: `Bearer ${localStorage.getItem(KEY)}`, ...(opts.headers || {}) };
  const gen = routeGen;
  const r = await fetch(path, { ...opts, headers });
  if (gen !== routeGen) throw new Error("stale"); // the user moved on while this was in flight
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
  const fmt = (t) => { const v = log ? 10 ** t : t; return Math.abs(v) >= 1000 || (Math.abs(v) < 0.01 && v !== 0) ? v.toExponential(1) : v.toPrecision(log ? 2 : 3); };
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
const METRICS = [["loss", "Loss"], ["eval_loss", "Eval loss"], ["learning_rate", "Learning rate"], ["grad_norm", "Grad norm"], ["tokens_per_second", "Tokens/s"], ["train_mean_token_accuracy", "Token accuracy"], ["valid_mean_token_accuracy", "Eval token accuracy"]];
// token accuracy is logged as extra.train_mean_token_accuracy (and extra.valid_mean_token_accuracy at evaluations)
const metricValue = (p, key) => (key in p && p[key] !== null ? p[key] : p.extra && key in p.extra ? p.extra[key] : null);

/* ------------------------------------------------------------------ sign in */
function signIn() {
  $("#nav").hidden = true;
  const input = h("input", { id: "key", type: "password", autocomplete: "off", required: true, size: 48, "aria-describedby": "key-help alert" });
  show(main, 
    h("h1", { text: "Sign in" }),
    h("p", { id: "key-help", text: "Paste an API key (tuneforge keys create). It stays in this browser's local storage until you sign out." }),
    h("form", { id: "signin", onsubmit: async (e) => {
      e.preventDefault();
      localStorage.setItem(KEY, input.value.trim());
      try { await getJSON("/v1/files?limit=1"); showError(""); if (location.hash === "#/jobs") route(); else location.hash = "#/jobs"; }
      catch (_) { localStorage.removeItem(KEY); input.setAttribute("aria-invalid", "true"); input.focus(); }
    } }, h("label", { for: "key", text: "API key" }, input), h("button", { type: "submit", text: "Sign in" })),
  );
  input.focus();
}

/* ------------------------------------------------------------------ jobs */
const picked = new Set(); // jobs ticked for Compare: kept while the list refreshes and across pages
async function jobsPage(params, refresh) {
  const status = params.get("status") || "", model = params.get("model") || "", meta = params.get("metadata") || "";
  const q = new URLSearchParams({ limit: "20" });
  if (status) q.set("status", status); if (model) q.set("model", model);
  if (params.get("after")) q.set("after", params.get("after"));
  if (meta.includes("=")) { const [k, v] = meta.split("="); q.set(`metadata[${k.trim()}]`, v.trim()); }
  const page = await getJSON(`/v1/fine_tuning/jobs?${q}`);
  live = setTimeout(() => route(true), 3000);
  const compareBtn = h("button", { type: "button", class: "secondary", id: "compare-selected", onclick: () => { location.hash = `#/compare?ids=${[...picked].join(",")}`; } });
  const updatePicked = () => {
    const btn = $("#compare-selected") || compareBtn;
    btn.textContent = `Compare selected (${picked.size})`; btn.disabled = picked.size < 2 || picked.size > 6;
  };
  const rows = page.data.map((j) => h("tr", { "data-job": j.id },
    h("td", {}, h("input", { type: "checkbox", name: "pick", value: j.id, checked: picked.has(j.id), "aria-label": `Select ${j.id} to compare`,
      onchange: (e) => { if (e.target.checked) picked.add(j.id); else picked.delete(j.id); updatePicked(); } })),
    h("td", {}, h("a", { href: `#/jobs/${j.id}`, text: j.id })),
    h("td", { class: `status status-${j.status}`, text: j.status }),
    h("td", { text: j.model }),
    h("td", { text: (j.spec && j.spec.task && (j.spec.task.type || j.spec.task)) || "—" }),
    h("td", {}, h("progress", { max: 100, value: j.progress.percentage ?? 0, "aria-label": `${j.id} progress` }),
      h("span", { class: "muted", text: ` ${j.progress.percentage === null ? "" : Math.round(j.progress.percentage) + "%"} ${j.progress.remaining_s ? "ETA " + fmtDur(j.progress.remaining_s) : ""}` })),
    h("td", { text: fmtTime(j.created_at) }), h("td", { text: fmtTime(j.finished_at) }),
    h("td", { text: j.trained_tokens ?? "—" })));
  const tbody = h("tbody", {}, rows);
  const caption = `${page.data.length} jobs on this page${status || model || meta ? " (filtered)" : ""}`;
  const next = page.has_more && page.data.length ? (() => { const p = new URLSearchParams(params); p.set("after", page.data.at(-1).id); return h("a", { href: `#/jobs?${p}`, id: "next-page", text: "Next page →" }); })() : null;
  const table = $("#jobs", main);
  if (refresh && table) { // only the rows change: the filter form, the ticks and the focus stay as they are
    keepFocus(() => { table.tBodies[0].replaceWith(tbody); table.caption.textContent = caption; $("#pager", main).replaceChildren(...[next].filter(Boolean)); });
    return;
  }
  const statuses = ["", "validating_files", "queued", "running", "pause_requested", "paused", "succeeded", "failed", "cancelled"];
  const form = h("form", { class: "filters", "aria-label": "Filter jobs", onsubmit: (e) => {
    e.preventDefault(); const f = new FormData(e.target); const p = new URLSearchParams();
    for (const [k, v] of f) if (v) p.set(k, v);
    location.hash = `#/jobs?${p}`;
  } },
    h("label", {}, "Status", h("select", { name: "status" }, statuses.map((s) => h("option", { value: s, selected: s === status, text: s || "any" })))),
    h("label", {}, "Model", h("input", { name: "model", value: model })),
    h("label", {}, "Metadata key=value", h("input", { name: "metadata", value: meta, placeholder: "team=search" })),
    h("button", { type: "submit", text: "Filter" }));
  show(main, h("h1", { text: "Jobs" }), form,
    h("table", { id: "jobs" }, h("caption", { class: "muted", text: caption }),
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, h("span", { class: "sr-only", text: "Compare" })),
        ["Job", "Status", "Model", "Task", "Progress", "Created", "Finished", "Trained tokens"].map((t) => h("th", { scope: "col", text: t })))),
      tbody),
    h("div", { class: "row" }, compareBtn, h("span", { id: "pager" }, next)));
  updatePicked();
}

/* ------------------------------------------------------------------ one job */
async function jobPage(id) {
  // The job, its series downsampled to MAX_POINTS, the last events, checkpoints and samples, all at once;
  // then the stream sends only what is newer.
  const base = `/v1/fine_tuning/jobs/${id}`;
  let [job, { data: points }, { data: events }, { data: cps }, { data: samples }] = await Promise.all([getJSON(base),
    getJSON(`${base}/metrics?max_points=${MAX_POINTS}`), getJSON(`${base}/events?limit=50`), getJSON(`${base}/checkpoints?limit=50`), getJSON(`${base}/samples`)]);
  let log = localStorage.getItem("tuneforge.log") === "1";

  // The head is built once and updated in place, so a focused button keeps its focus while the job trains.
  const statusEl = h("span", { class: "status", id: "job-status" });
  const detail = h("span", { id: "job-detail" });
  const errorEl = h("p", { class: "status-failed", id: "job-error", hidden: true });
  const buttons = Object.fromEntries(["cancel", "pause", "resume"].map((act) => [act, h("button", { type: "button", class: "secondary", id: `job-${act}`,
    text: act[0].toUpperCase() + act.slice(1), onclick: async () => {
      try {
        job = await (await api(`/v1/fine_tuning/jobs/${id}/${act}`, { method: "POST" })).json(); showError(""); drawHead();
        if (act === "resume") route(true); // a paused job's stream has ended: follow the resumed run afresh
      } catch (_) { /* shown */ }
    } })]));
  let shownStatus = job.status;
  const drawHead = () => {
    if (job.status !== shownStatus) { announce(`Job ${job.id} is ${job.status}`); shownStatus = job.status; }
    statusEl.textContent = job.status; statusEl.className = `status status-${job.status}`;
    detail.textContent = ` · ${job.model} · step ${job.progress.step}/${job.progress.total_steps ?? "?"} · ETA ${fmtDur(job.progress.remaining_s)}`;
    errorEl.hidden = !job.error; errorEl.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
    for (const [act, b] of Object.entries(buttons)) b.disabled = !actionAllowed(act, job.status);
  };
  const head = h("div", {}, h("h1", { text: `Job ${job.id}` }), h("p", {}, statusEl, detail), errorEl, h("div", { class: "row" }, Object.values(buttons)));

  const charts = h("div", { class: "grid", id: "charts" });
  const drawCharts = () => charts.replaceChildren(...METRICS.map(([key, title]) => chart(title, [{ label: key, points: points.map((p) => [p.step, metricValue(p, key)]) }], { log })));
  const eventsBox = h("ol", { class: "events", id: "events", "aria-live": "polite", "aria-label": "Events" });
  const addEvent = (e) => {
    eventsBox.append(h("li", {}, h("span", { class: "muted", text: `${fmtTime(e.created_at)} ${e.level} ` }), e.message));
    while (eventsBox.childElementCount > 200) eventsBox.firstElementChild.remove();
  };
  drawHead(); drawCharts(); events.slice().reverse().forEach(addEvent);

  // Sample generations: the first step sampled (0: the base model) beside a chosen one (the latest by default).
  const samplesBox = h("div", { id: "samples" });
  let sampleStep = "latest";
  const wanted = job.spec && job.spec.samples && ((job.spec.samples.prompts || []).length || job.spec.samples.from_validation);
  const stepName = (st) => (st === 0 ? "step 0 (base model)" : `step ${st}`);
  const drawSamples = () => keepFocus(() => {
    const steps = [...new Set(samples.map((s) => s.step))].sort((a, b) => a - b);
    if (!steps.length) {
      show(samplesBox, h("p", { class: "muted", text: wanted ? "None yet: the base model's are generated before the first step, then one set at each evaluation and at the end."
        : "None: this job's spec asks for no sample generations (the spec's samples block)." }));
      return;
    }
    const first = steps[0], last = steps.at(-1);
    const other = sampleStep !== "latest" && steps.includes(Number(sampleStep)) ? Number(sampleStep) : last;
    const cols = other === first ? [first] : [first, other];
    const byKey = new Map(samples.map((s) => [`${s.step}:${s.index}`, s]));
    const prompts = new Map(); for (const s of samples) if (!prompts.has(s.index)) prompts.set(s.index, s.prompt);
    const select = h("select", { id: "samples-step", onchange: (e) => { sampleStep = e.target.value; drawSamples(); } },
      h("option", { value: "latest", selected: sampleStep === "latest", text: `the latest (${stepName(last)})` }),
      steps.slice().reverse().map((st) => h("option", { value: String(st), selected: String(st) === sampleStep, text: stepName(st) })));
    show(samplesBox,
      h("div", { class: "row" }, h("label", { for: "samples-step" }, `Show ${stepName(first)} beside`, select)),
      h("table", { id: "samples-table", class: "samples" },
        h("caption", { text: `Sample generations (greedy): ${stepName(first)} beside ${stepName(other)}; ${prompts.size} prompts, ${steps.length} steps sampled.` }),
        h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Prompt" }), cols.map((st) => h("th", { scope: "col", "data-step": st, text: `${stepName(st)[0].toUpperCase()}${stepName(st).slice(1)} said` })))),
        h("tbody", {}, [...prompts].sort((a, b) => a[0] - b[0]).map(([i, prompt]) => h("tr", { "data-index": i }, h("th", { scope: "row", class: "prompt", text: prompt }),
          cols.map((st) => { const s = byKey.get(`${st}:${i}`); return h("td", { "data-step": st, class: "sample", text: s ? s.output : "—" }); }))))));
  });
  let samplesQ = Promise.resolve();
  const refreshSamples = (step) => { // a `samples` event announced `step`: read that step and any later (or all), and merge
    samplesQ = samplesQ.then(async () => {
      const after = Number.isInteger(step) && step > 0 ? step - 1 : null;
      const fresh = (await getJSON(`/v1/fine_tuning/jobs/${id}/samples${after === null ? "" : `?since_step=${after}`}`)).data;
      samples = [...(after === null ? [] : samples.filter((s) => s.step <= after)), ...fresh]; // the API orders by step, then prompt
      drawSamples();
    }).catch(() => { /* shown */ });
  };
  drawSamples();

  const toggle = h("label", { class: "inline" }, h("input", { type: "checkbox", id: "logscale", checked: log, onchange: (e) => { log = e.target.checked; localStorage.setItem("tuneforge.log", log ? "1" : "0"); drawCharts(); } }), "Log scale");
  const download = async (fmt, step) => {
    const q = new URLSearchParams(); if (step !== undefined) q.set("checkpoint", step); if (fmt === "merged") q.set("format", "merged");
    const blob = await (await api(`/v1/fine_tuning/jobs/${id}/adapter?${q}`)).blob();
    const a = h("a", { href: URL.createObjectURL(blob), download: `${id}-${step ?? "final"}-${fmt}.tar.gz` }); a.click(); URL.revokeObjectURL(a.href);
  };
  const cpTable = h("table", { id: "checkpoints" }, h("caption", { class: "sr-only", text: "Checkpoints" }), h("thead", {}, h("tr", {}, ["Step", "Metrics", "Download"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, cps.map((c) => h("tr", {}, h("td", { text: c.step_number }), h("td", { text: Object.entries(c.metrics).filter(([, v]) => v !== null).map(([k, v]) => `${k} ${typeof v === "number" ? v.toPrecision(4) : v}`).join(", ") }),
      h("td", {}, h("button", { type: "button", class: "secondary", text: "PEFT", "aria-label": `Download the PEFT adapter at step ${c.step_number}`, onclick: () => download("peft", c.step_number) }), " ",
        h("button", { type: "button", class: "secondary", text: "Merged", "aria-label": `Download the merged model at step ${c.step_number}`, onclick: () => download("merged", c.step_number) }))))));
  show(main, head, h("h2", { text: "Curves" }), toggle, charts, h("h2", { text: "Samples" }), samplesBox, h("h2", { text: "Events" }), eventsBox,
    h("h2", { text: "Checkpoints" }), cps.length ? cpTable : h("p", { class: "muted", text: "none yet" }),
    job.status === "succeeded" ? h("p", {}, h("button", { type: "button", text: "Download final adapter", onclick: () => download("peft") })) : null,
    h("h2", { text: "Spec" }), h("pre", { id: "spec", text: JSON.stringify(job.spec, null, 2) }));
  if (TERMINAL.includes(job.status)) return;
  const from = new URLSearchParams();
  if (points.length) from.set("since_step", points.at(-1).step);
  if (events.length) from.set("after", events[0].id);
  follow(`/v1/fine_tuning/jobs/${id}/stream?${from}`, {
    status: (d) => { job = { ...job, status: d.status, progress: d.progress }; drawHead(); },
    event: (e) => { addEvent(e); if (e.type === "samples") refreshSamples(e.data && e.data.step); },
    metrics: (d) => { points = thin(mergePoints(points, d.points)); drawCharts(); },
    done: async () => {
      job = await getJSON(`/v1/fine_tuning/jobs/${id}`); drawHead();
      points = (await getJSON(`/v1/fine_tuning/jobs/${id}/metrics?max_points=${MAX_POINTS}`)).data; drawCharts(); // the final evaluation lands on a step already drawn
      refreshSamples();
    } });
}

const TERMINAL = ["succeeded", "failed", "cancelled"];
function actionAllowed(act, status) {
  if (TERMINAL.includes(status)) return false;
  if (act === "pause") return ["queued", "running", "validating_files"].includes(status);
  if (act === "resume") return ["paused", "pause_requested"].includes(status);
  return true;
}

/* A streamed point for a step already drawn (an evaluation after the train step) fills in its nulls. */
function mergePoints(old, fresh) {
  const byStep = new Map(old.map((p) => [p.step, p]));
  for (const p of fresh) {
    const prev = byStep.get(p.step);
    if (!prev) { byStep.set(p.step, p); continue; }
    const merged = { ...prev, extra: { ...(prev.extra || {}), ...(p.extra || {}) } };
    for (const [k, v] of Object.entries(p)) if (k !== "extra" && v !== null && v !== undefined) merged[k] = v;
    byStep.set(p.step, merged);
  }
  return [...byStep.values()].sort((a, b) => a.step - b.step);
}
/* A page left open on a long job keeps at most 2 * MAX_POINTS: every other point goes (never the last, nor an evaluation). */
const thin = (pts) => (pts.length <= 2 * MAX_POINTS ? pts : pts.filter((p, i) => i % 2 === 0 || i === pts.length - 1 || (p.eval_loss !== null && p.eval_loss !== undefined)));

/* SSE over fetch (EventSource cannot send the Authorization header). */
async function follow(url, handlers) {
  const ctl = new AbortController(); ctl.follow = true; live = ctl;
  try {
    const r = await api(url, { signal: ctl.signal });
    const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read(); if (done) break;
      buf += value; let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
        let type = "message", data = "";
        for (const line of block.split("\n")) { if (line.startsWith("event:")) type = line.slice(6).trim(); else if (line.startsWith("data:")) data += line.slice(5).trim(); }
        if (data && handlers[type]) Promise.resolve(handlers[type](JSON.parse(data))).catch(() => { /* shown, or stale */ });
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
  const [jobs, series] = await Promise.all([ // 2 x up to 6 requests at once
    Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}`))),
    Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}/metrics?max_points=${MAX_POINTS / 2}`)))]); // 6 curves share a chart
  main.append(h("div", { class: "grid", id: "charts" }, METRICS.map(([key, title]) => chart(title, series.map((s, i) => ({ label: ids[i], points: s.data.map((p) => [p.step, metricValue(p, key)]) }))))));
  const flat = jobs.map((j) => flatten(j.spec));
  const keys = [...new Set(flat.flatMap(Object.keys))].sort();
  main.append(h("h2", { text: "Specs" }), h("table", { id: "spec-diff" }, h("caption", { class: "muted", text: "Each job's resolved spec, one field a row; the fields that differ are marked (differs)." }),
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
        h("table", {}, h("caption", { class: "sr-only", text: "Columns found" }), h("thead", {}, h("tr", {}, ["Column", "Types", "Non-null"].map((t) => h("th", { scope: "col", text: t })))),
          h("tbody", {}, Object.entries(data.columns || {}).map(([c, info]) => h("tr", {}, h("td", { text: c }), h("td", { text: JSON.stringify(info.types ?? info.type ?? "") }), h("td", { text: info.non_null ?? "" })))))));
      setTimeout(() => route(true), 50);
    };
    xhr.send(body);
  } }, h("label", { for: "upload-file" }, "Training file (JSONL or CSV)", fileInput), bar, h("button", { type: "submit", text: "Upload" }));
  const list = h("table", { id: "files" }, h("caption", { class: "sr-only", text: "Your files" }), h("thead", {}, h("tr", {}, ["File", "Name", "Format", "Rows", "Bytes", "Status", "Created"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, page.data.map((f) => h("tr", { "data-file": f.id }, h("td", { text: f.id }), h("td", { text: f.filename }), h("td", { text: f.format }), h("td", { text: f.n_rows }), h("td", { text: f.bytes }), h("td", { text: f.status }), h("td", { text: fmtTime(f.created_at) })))));
  const old = $("#upload-report");
  show(main, h("h1", { text: "Files" }), form, old || report, h("h2", { text: "Your files" }), list,
    page.has_more && page.data.length ? h("a", { href: `#/files?after=${page.data.at(-1).id}`, text: "Next page →" }) : null);
}


/* ------------------------------------------------------------------ models + chat */
const fmtParams = (n) => (n === null || n === undefined ? "—" : n >= 1e9 ? `${(n / 1e9).toFixed(1)}B` : n >= 1e6 ? `${(n / 1e6).toFixed(1)}M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)}K` : String(n));
async function modelsPage(params) {
  const page = await getJSON("/v1/models");
  const models = page.data;
  const chosen = params.get("model") || (models.find((m) => m.kind === "fine_tuned") || models.find((m) => m.chat_template) || models[0] || {}).id || "";
  const rows = models.map((m) => h("tr", { "data-model": m.id },
    h("td", {}, h("a", { href: `#/models?model=${encodeURIComponent(m.id)}`, text: m.id, "aria-label": `Chat with ${m.id}` })),
    h("td", { text: m.kind }),
    h("td", { text: m.architecture ?? (m.base_model ? `on ${m.base_model}` : "—") }),
    h("td", { text: fmtParams(m.parameters) }),
    h("td", { text: m.context_length ?? "—" }),
    h("td", { text: m.chat_template === undefined || m.chat_template === null ? (m.base_model ? "from base" : "—") : m.chat_template ? "yes" : "no" }),
    h("td", {}, m.fine_tuning_job_id ? h("a", { href: `#/jobs/${m.fine_tuning_job_id}`, text: m.fine_tuning_job_id }) : "—"),
    h("td", { text: fmtTime(m.created) })));
  const table = h("table", { id: "models" }, h("caption", { class: "muted", text: `${models.length} models` }),
    h("thead", {}, h("tr", {}, ["Model", "Kind", "Architecture", "Parameters", "Context", "Chat template", "Job", "Created"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, rows));
  show(main, h("h1", { text: "Models" }), table, chatPanel(models, chosen));
}

function chatPanel(models, chosen) {
  const history = [];
  const select = h("select", { id: "chat-model", name: "model" }, models.map((m) => h("option", { value: m.id, selected: m.id === chosen, text: m.id })));
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: 1, max: 4096, value: 64, size: 5 });
  const temp = h("input", { id: "chat-temperature", type: "number", min: 0, max: 2, step: 0.1, value: 0.7, size: 4 });
  const prompt = h("textarea", { id: "chat-input", rows: 3, cols: 70, required: true, placeholder: "Say something…" });
  const log = h("ol", { id: "chat-log", class: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const send = h("button", { type: "submit", id: "chat-send", text: "Send" });
  const stop = h("button", { type: "button", class: "secondary", id: "chat-stop", text: "Stop", disabled: true });
  const clear = h("button", { type: "button", class: "secondary", id: "chat-clear", text: "Clear", onclick: () => { history.length = 0; log.replaceChildren(); } });
  const status = h("p", { id: "chat-status", class: "muted", role: "status" });
  const bubble = (role, text) => { const body = h("div", { class: "content", text }); log.append(h("li", { class: `msg ${role}` }, h("span", { class: "who", text: role === "user" ? "You" : "Model" }), body)); return body; };
  select.addEventListener("change", () => { history.length = 0; log.replaceChildren(); });
  const form = h("form", { id: "chat", "aria-label": "Chat with a model", onsubmit: async (e) => {
    e.preventDefault();
    const text = prompt.value.trim(); if (!text) return;
    history.push({ role: "user", content: text }); bubble("user", text); prompt.value = "";
    const out = bubble("assistant", ""); out.setAttribute("aria-busy", "true");
    const ctl = new AbortController(); live = ctl;
    send.disabled = true; stop.disabled = false; status.textContent = "Generating…";
    stop.onclick = () => ctl.abort();
    const started = performance.now(); let reply = "", finish = null, usage = null;
    try {
      const r = await api("/v1/chat/completions", { method: "POST", signal: ctl.signal, headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ model: select.value, messages: history, stream: true, max_tokens: Number(maxTokens.value) || 64,
          temperature: Number(temp.value), stream_options: { include_usage: true } }) });
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read(); if (done) break;
        buf += value; let cut;
        while ((cut = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, cut).trim(); buf = buf.slice(cut + 1);
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim(); if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(chunk.error.message);
          if (chunk.usage) usage = chunk.usage;
          for (const c of chunk.choices || []) { if (c.delta && c.delta.content) { reply += c.delta.content; out.textContent = reply; } if (c.finish_reason) finish = c.finish_reason; }
        }
      }
      history.push({ role: "assistant", content: reply });
      status.textContent = `${finish || "done"} · ${usage ? usage.completion_tokens + " tokens · " : ""}${((performance.now() - started) / 1000).toFixed(1)} s`;
      if (!reply) out.textContent = "(empty reply)";
    } catch (err) {
      history.pop(); // the user's turn got no answer; it is not sent again
      out.closest("li").classList.add("failed");
      out.textContent = ctl.signal.aborted ? "(stopped)" : `Error: ${err.message}`;
      if (!ctl.signal.aborted) showError(err.message);
      status.textContent = "";
    } finally { out.removeAttribute("aria-busy"); send.disabled = false; stop.disabled = true; if (live === ctl) live = null; }
  } },
    h("div", { class: "row" }, h("label", { for: "chat-model" }, "Model", select), h("label", { for: "chat-max-tokens" }, "Max tokens", maxTokens),
      h("label", { for: "chat-temperature" }, "Temperature", temp)),
    log, h("label", { for: "chat-input" }, "Message", prompt), h("div", { class: "row" }, send, stop, clear), status);
  prompt.addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) form.requestSubmit(); });
  return h("section", { "aria-labelledby": "chat-h" }, h("h2", { id: "chat-h", text: "Chat" }),
    h("p", { class: "muted", text: "Streams from POST /v1/chat/completions (needs a `tuneforge worker --queue inference`). Ctrl+Enter sends." }), form);
}

/* ------------------------------------------------------------------ sweeps */
async function sweepsPage(params) {
  const q = new URLSearchParams({ limit: "20" }); if (params.get("after")) q.set("after", params.get("after"));
  const page = await getJSON(`/v1/fine_tuning/sweeps?${q}`);
  const rows = page.data.map((s) => h("tr", { "data-sweep": s.id },
    h("td", {}, h("a", { href: `#/sweeps/${s.id}`, text: s.id })),
    h("td", { class: `status status-${s.status}`, text: s.status }),
    h("td", { text: s.model }), h("td", { text: s.strategy }),
    h("td", { text: `${s.objective.metric} (${s.objective.direction})` }),
    h("td", { text: `${s.trials_created}/${s.max_trials}` }),
    h("td", { text: s.best_trial ? `#${s.best_trial.number}: ${fmtNum(s.best_trial.value)}` : "—" }),
    h("td", { text: fmtTime(s.created_at) })));
  show(main, h("h1", { text: "Sweeps" }),
    h("table", { id: "sweeps" }, h("caption", { class: "muted", text: `${page.data.length} sweeps on this page` }),
      h("thead", {}, h("tr", {}, ["Sweep", "Status", "Model", "Strategy", "Objective", "Trials", "Best", "Created"].map((t) => h("th", { scope: "col", text: t })))),
      h("tbody", {}, rows)),
    page.has_more && page.data.length ? h("a", { href: `#/sweeps?after=${page.data.at(-1).id}`, text: "Next page →" }) : null);
  live = setTimeout(() => route(true), 5000);
}
const fmtNum = (v) => (v === null || v === undefined ? "—" : typeof v === "number" ? (Number.isInteger(v) ? String(v) : String(Number(v.toPrecision(4)))) : String(v));

function scatter(title, xs, ys, { best = -1, labels = [] } = {}) {
  // objective vs one parameter; categorical parameters are spread evenly by their distinct values
  const W = 400, H = 180, P = 46, ns = "http://www.w3.org/2000/svg";
  const fig = h("figure", { "data-param": title }, h("figcaption", { text: title }));
  const pts = xs.map((x, i) => [x, ys[i], i]).filter((p) => p[1] !== null && p[1] !== undefined);
  if (!pts.length) { fig.append(h("p", { class: "muted", text: "no finished trials yet" })); return fig; }
  const numeric = pts.every((p) => typeof p[0] === "number");
  const cats = numeric ? [] : [...new Set(pts.map((p) => JSON.stringify(p[0])))];
  const xv = (x) => (numeric ? x : cats.indexOf(JSON.stringify(x)));
  const logx = numeric && pts.every((p) => p[0] > 0) && Math.max(...pts.map((p) => p[0])) / Math.min(...pts.map((p) => p[0])) > 50;
  const tx = (x) => (logx ? Math.log10(xv(x)) : xv(x));
  let [x0, x1] = [Math.min(...pts.map((p) => tx(p[0]))), Math.max(...pts.map((p) => tx(p[0])))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x0 === x1) { x0 -= 0.5; x1 += 0.5; } if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const sx = (x) => P + ((tx(x) - x0) / (x1 - x0)) * (W - P - 14) + 3, sy = (y) => H - 20 - ((y - y0) / (y1 - y0)) * (H - 32);
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`); svg.setAttribute("class", "chart"); svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", `objective against ${title}: ${pts.map((p) => `trial ${labels[p[2]] ?? p[2]} ${JSON.stringify(p[0])} → ${fmtNum(p[1])}`).join("; ")}`);
  const text = (x, y, t, anchor) => { const e = document.createElementNS(ns, "text"); e.setAttribute("x", x); e.setAttribute("y", y); e.setAttribute("font-size", "10"); e.setAttribute("text-anchor", anchor); e.textContent = t; svg.append(e); };
  const fx = (v) => (logx ? (10 ** v).toExponential(1) : numeric ? fmtNum(v) : "");
  text(P - 3, 12, fmtNum(y1), "end"); text(P - 3, H - 20, fmtNum(y0), "end");
  if (numeric) { text(P, H - 4, fx(x0), "start"); text(W - 8, H - 4, fx(x1), "end"); }
  else cats.forEach((c, i) => text(P + ((i - x0) / (x1 - x0)) * (W - P - 14) + 3, H - 4, c, "middle"));
  const frame = document.createElementNS(ns, "path"); frame.setAttribute("d", `M${P} 6V${H - 20}H${W - 8}`); frame.setAttribute("stroke", "#aaa"); frame.setAttribute("fill", "none"); svg.append(frame);
  for (const [x, y, i] of pts) {
    const c = document.createElementNS(ns, "circle");
    c.setAttribute("cx", sx(x).toFixed(1)); c.setAttribute("cy", sy(y).toFixed(1)); c.setAttribute("r", i === best ? 5 : 3.5);
    c.setAttribute("fill", i === best ? COLORS[1] : COLORS[0]); c.setAttribute("data-trial", labels[i] ?? i);
    const tip = document.createElementNS(ns, "title"); tip.textContent = `trial ${labels[i] ?? i}: ${JSON.stringify(x)} → ${fmtNum(y)}`; c.append(tip);
    svg.append(c);
  }
  fig.append(svg);
  return fig;
}

async function sweepPage(id) {
  const sweep = await getJSON(`/v1/fine_tuning/sweeps/${id}`);
  const trials = (await getJSON(`/v1/fine_tuning/sweeps/${id}/trials`)).data;
  const finished = ["succeeded", "failed", "cancelled"].includes(sweep.status);
  const names = Object.keys(sweep.search_space || {});
  const best = sweep.best_trial;
  const cancel = h("button", { type: "button", class: "secondary", id: "sweep-cancel", text: "Cancel sweep", disabled: finished, onclick: async () => {
    try { await api(`/v1/fine_tuning/sweeps/${id}/cancel`, { method: "POST" }); showError(""); route(true); } catch (_) { /* shown */ }
  } });
  const counts = Object.entries(sweep.trial_counts || {}).filter(([, n]) => n).map(([k, n]) => `${n} ${k}`).join(", ");
  const table = h("table", { id: "trials" }, h("caption", { class: "sr-only", text: "Trials" }),
    h("thead", {}, h("tr", {}, ["#", "Job", ...names, "Status", "Pruned", "Value", "Last reported", "Step"].map((t) => h("th", { scope: "col", text: t })))),
    h("tbody", {}, trials.map((t) => h("tr", { "data-trial": t.number, class: best && best.number === t.number ? "best" : null },
      h("td", { text: t.number + (best && best.number === t.number ? " ★" : "") }),
      h("td", {}, h("a", { href: `#/jobs/${t.job_id}`, text: t.job_id })),
      names.map((n) => h("td", { text: fmtNum(t.params[n]) })),
      h("td", { class: `status status-${t.status}`, text: t.status }),
      h("td", { text: t.pruned ? "pruned" : "" }),
      h("td", { text: fmtNum(t.value) }), h("td", { text: fmtNum(t.last_reported) }),
      h("td", { text: `${t.step ?? 0}/${t.total_steps ?? "?"}` })))));
  const value = (t) => (t.value ?? t.last_reported ?? null);
  const bestIdx = best ? trials.findIndex((t) => t.number === best.number) : -1;
  const plots = h("div", { class: "grid", id: "sweep-plots" }, names.map((n) => scatter(n, trials.map((t) => t.params[n]), trials.map(value), { best: bestIdx, labels: trials.map((t) => t.number) })));
  show(main, h("h1", { text: `Sweep ${sweep.id}` }),
    h("p", {}, h("span", { class: `status status-${sweep.status}`, id: "sweep-status", text: sweep.status }),
      ` · ${sweep.model} · ${sweep.strategy} · ${sweep.objective.direction} ${sweep.objective.metric} · ${sweep.trials_created}/${sweep.max_trials} trials${counts ? ` (${counts})` : ""}`),
    sweep.error ? h("p", { class: "status-failed", text: `${sweep.error.code}: ${sweep.error.message}` }) : null,
    h("div", { class: "row" }, cancel),
    h("h2", { text: "Best trial" }),
    best ? h("div", { class: "report", id: "best-trial" },
      h("p", {}, `Trial ${best.number} · ${sweep.objective.metric} ${fmtNum(best.value)} · `, h("a", { href: `#/jobs/${best.job_id}`, text: best.job_id })),
      h("p", { text: Object.entries(best.params).map(([k, v]) => `${k} = ${fmtNum(v)}`).join(", ") }),
      best.fine_tuned_model ? h("p", {}, h("a", { href: `#/models?model=${encodeURIComponent(best.fine_tuned_model)}`, text: `Chat with ${best.fine_tuned_model}` })) : null)
      : h("p", { class: "muted", id: "best-trial", text: "no trial has a value yet" }),
    h("h2", { text: "Objective vs parameter" }), plots,
    h("h2", { text: "Trials" }), table,
    h("h2", { text: "Search space" }), h("pre", { text: JSON.stringify(sweep.search_space, null, 2) }));
  if (!finished) live = setTimeout(() => route(true), 3000);
}

/* ------------------------------------------------------------------ router */
async function route(refresh = false) {
  if (live) { if (live.abort) live.abort(); else clearTimeout(live); live = null; }
  routeGen += 1; // answers to the previous page's requests are dropped (api() throws "stale")
  if (!localStorage.getItem(KEY)) { signIn(); return; }
  $("#nav").hidden = false;
  const [path, query = ""] = (location.hash.slice(1) || "/jobs").split("?");
  const params = new URLSearchParams(query);
  for (const a of document.querySelectorAll("nav a")) a.toggleAttribute("aria-current", path.startsWith(a.getAttribute("href").slice(1)) && a.getAttribute("href").startsWith("#"));
  for (const a of document.querySelectorAll("nav a[aria-current]")) a.setAttribute("aria-current", "page");
  if (!refresh) showError("");
  const t0 = performance.now();
  const focused = refresh ? focusKey(document.activeElement) : null; // a refresh keeps the keyboard focus where it was
  try {
    if (path.startsWith("/jobs/")) await jobPage(decodeURIComponent(path.slice(6)));
    else if (path === "/compare") await comparePage(params);
    else if (path === "/files") await filesPage(params);
    else if (path === "/models") await modelsPage(params);
    else if (path.startsWith("/sweeps/")) await sweepPage(decodeURIComponent(path.slice(8)));
    else if (path === "/sweeps") await sweepsPage(params);
    else await jobsPage(params, refresh);
    document.title = `${main.querySelector("h1")?.textContent || "Tuneforge"} · Tuneforge`;
    performance.measure(`tuneforge ${path}`, { start: t0 }); // read by bench/ui_scale.py
    const again = focused && main.querySelector(focused);
    if (again && again !== document.activeElement) again.focus({ preventScroll: true });
    if (!refresh) { // focus goes to the page's heading, so a screen reader announces the new page
      const h1 = main.querySelector("h1");
      if (h1) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); } else main.focus({ preventScroll: true });
    }
  } catch (e) { if (!localStorage.getItem(KEY)) signIn(); }
}
$("#signout").addEventListener("click", () => { localStorage.removeItem(KEY); location.hash = ""; signIn(); });
window.addEventListener("hashchange", () => route());
// A page left (or kept in the back/forward cache) or a hidden tab closes its job stream and stops its
// refresh timer: a browser keeps at most 6 connections to one server, and streams held by pages no
// longer shown would stall the requests of the one that is. Shown again, the page reads afresh.
// (A chat reply being streamed is left alone.)
let stopped = false;
function pauseLive() {
  if (live === null || (live.abort && !live.follow)) return;
  if (live.abort) live.abort(); else clearTimeout(live);
  live = null; stopped = true;
}
function resumeLive() { if (stopped) { stopped = false; route(true); } }
window.addEventListener("pagehide", pauseLive);
window.addEventListener("pageshow", resumeLive);
document.addEventListener("visibilitychange", () => (document.hidden ? pauseLive() : resumeLive()));
route();

/* One job: its head (status, actions), curves, samples, events, checkpoints and spec, fed by its stream. */

import { api, getJSON, showError } from "../lib/api.js";
import { lineChart } from "../lib/charts.js";
import { announce, h, heading, main, patch, show } from "../lib/dom.js";
import { fmtDur, fmtTime } from "../lib/format.js";
import { MAX_POINTS, curve, mergePoints, metricsOf, thin } from "../lib/series.js";
import { rewardsPanel } from "./job-rewards.js";
import { samplesPanel } from "./job-samples.js";

// The buttons of the head. Which of them act now is the job's `allowed_actions` (the API's rules).
const ACTIONS = ["cancel", "pause", "resume"];
const EVENTS_KEPT = 200;
const LOG_SCALE_KEY = "tuneforge.log";

const jobPath = (id) => `/v1/fine_tuning/jobs/${id}`;
const capitalized = (text) => `${text[0].toUpperCase()}${text.slice(1)}`;

/* The head is built once and updated in place (draw), so a focused button keeps its focus while the job trains. */
function jobHead(job, act) {
  const status = h("span", { class: "status", id: "job-status" });
  const detail = h("span", { id: "job-detail" });
  const error = h("p", { class: "status-failed", id: "job-error", hidden: true });
  const buttons = ACTIONS.map((action) =>
    h("button", {
      type: "button",
      class: "secondary",
      id: `job-${action}`,
      "data-action": action,
      text: capitalized(action),
      onclick: () => act(action),
    }),
  );
  // The finer status (cancel_requested, pause_requested) where the job has one: `status` keeps OpenAI's set.
  const statusOf = (current) => current.detailed_status || current.status;
  let shownStatus = statusOf(job);
  const draw = (current) => {
    const shown = statusOf(current);
    if (shown !== shownStatus) {
      announce(`Job ${current.id} is ${shown}`);
      shownStatus = shown;
    }
    status.textContent = shown;
    status.className = `status status-${shown}`;
    const { step, total_steps: total, remaining_s: remaining } = current.progress;
    detail.textContent = ` · ${current.model} · step ${step}/${total ?? "?"} · ETA ${fmtDur(remaining)}`;
    error.hidden = !current.error;
    error.textContent = current.error ? `${current.error.code}: ${current.error.message}` : "";
    const allowed = current.allowed_actions || [];
    for (const button of buttons) {
      button.disabled = !allowed.includes(button.dataset.action);
    }
  };
  const element = h(
    "div",
    {},
    heading(`Job ${job.id}`),
    h("p", {}, status, detail),
    error,
    h("div", { class: "row" }, buttons),
  );
  return { element, draw };
}

/* Saves the PEFT adapter (or the merged model) at `step`, or the final one. */
async function download(id, format, step) {
  const query = new URLSearchParams();
  if (step !== undefined) {
    query.set("checkpoint", step);
  }
  if (format === "merged") {
    query.set("format", "merged");
  }
  try {
    const blob = await (await api(`${jobPath(id)}/adapter?${query}`)).blob();
    const link = h("a", { href: URL.createObjectURL(blob), download: `${id}-${step ?? "final"}-${format}.tar.gz` });
    link.click();
    URL.revokeObjectURL(link.href);
  } catch {
    // shown in the alert region
  }
}

function checkpointMetrics(checkpoint) {
  const shown = Object.entries(checkpoint.metrics).filter(([, value]) => value !== null);
  return shown.map(([name, value]) => `${name} ${typeof value === "number" ? value.toPrecision(4) : value}`);
}

function checkpointRow(id, checkpoint) {
  const step = checkpoint.step_number;
  const peft = h("button", {
    type: "button",
    class: "secondary",
    text: "PEFT",
    "aria-label": `Download the PEFT adapter at step ${step}`,
    onclick: () => download(id, "peft", step),
  });
  const merged = h("button", {
    type: "button",
    class: "secondary",
    text: "Merged",
    "aria-label": `Download the merged model at step ${step}`,
    onclick: () => download(id, "merged", step),
  });
  return h(
    "tr",
    {},
    h("td", { text: step }),
    h("td", { text: checkpointMetrics(checkpoint).join(", ") }),
    h("td", {}, peft, " ", merged),
  );
}

function checkpointsTable(id, checkpoints) {
  if (!checkpoints.length) {
    return h("p", { class: "muted", text: "none yet" });
  }
  const header = ["Step", "Metrics", "Download"].map((title) => h("th", { scope: "col", text: title }));
  return h(
    "table",
    { id: "checkpoints" },
    h("caption", { class: "sr-only", text: "Checkpoints" }),
    h("thead", {}, h("tr", {}, header)),
    h("tbody", {}, checkpoints.map((checkpoint) => checkpointRow(id, checkpoint))),
  );
}

function eventItem(event) {
  const when = h("span", { class: "muted", text: `${fmtTime(event.created_at)} ${event.level} ` });
  return h("li", {}, when, event.message);
}

export async function jobPage(page, id) {
  // The job, its series downsampled to MAX_POINTS, the last events, checkpoints and samples, all at
  // once; then the stream sends only what is newer.
  const base = jobPath(id);
  const [first, series, lastEvents, checkpoints, samples] = await Promise.all([
    getJSON(base),
    getJSON(`${base}/metrics?max_points=${MAX_POINTS}`),
    getJSON(`${base}/events?limit=50`),
    getJSON(`${base}/checkpoints?limit=50`),
    getJSON(`${base}/samples`),
  ]);
  let job = first;
  let points = series.data;
  const events = lastEvents.data;
  let log = localStorage.getItem(LOG_SCALE_KEY) === "1";

  const act = async (action) => {
    try {
      job = await (await api(`${base}/${action}`, { method: "POST" })).json();
    } catch {
      return; // shown in the alert region
    }
    showError("");
    head.draw(job);
    if (action === "resume") {
      page.rerender(); // a paused job's stream has ended: follow the resumed run afresh
    }
  };
  const head = jobHead(job, act);

  const charts = h("div", { class: "grid", id: "charts" });
  const drawCharts = () =>
    patch(
      charts,
      metricsOf(job).map(([key, title]) => lineChart(title, [{ label: key, points: curve(points, key) }], { log })),
    );
  const eventsList = h("ol", { class: "events", id: "events", "aria-live": "polite", "aria-label": "Events" });
  const addEvent = (event) => {
    eventsList.append(eventItem(event));
    while (eventsList.childElementCount > EVENTS_KEPT) {
      eventsList.firstElementChild.remove();
    }
  };
  head.draw(job);
  drawCharts();
  events.slice().reverse().forEach(addEvent);
  const samplesBox = samplesPanel(job, samples.data);
  const rewardsBox = job.spec && job.spec.method === "reinforcement" ? rewardsPanel(job) : null;

  const logScale = h("input", {
    type: "checkbox",
    id: "logscale",
    checked: log,
    onchange: (event) => {
      log = event.target.checked;
      localStorage.setItem(LOG_SCALE_KEY, log ? "1" : "0");
      drawCharts();
    },
  });
  const finalDownload = h("button", {
    type: "button",
    text: "Download final adapter",
    onclick: () => download(id, "peft"),
  });
  show(
    main,
    head.element,
    h("h2", { text: "Curves" }),
    h("label", { class: "inline" }, logScale, "Log scale"),
    charts,
    ...(rewardsBox ? [h("h2", { text: "Rewards" }), rewardsBox.element] : []),
    h("h2", { text: "Samples" }),
    samplesBox.element,
    h("h2", { text: "Events" }),
    eventsList,
    h("h2", { text: "Checkpoints" }),
    checkpointsTable(id, checkpoints.data),
    job.status === "succeeded" ? h("p", {}, finalDownload) : null,
    h("h2", { text: "Spec" }),
    h("pre", { id: "spec", text: JSON.stringify(job.spec, null, 2) }),
  );
  if (job.finished_at) {
    return; // finished: nothing more will come
  }
  const from = new URLSearchParams();
  if (points.length) {
    from.set("since_step", points.at(-1).step);
  }
  if (events.length) {
    from.set("after", events[0].id);
  }
  page.follow(`${base}/stream?${from}`, {
    // {id, status, detailed_status, progress, allowed_actions}
    status: (frame) => {
      job = { ...job, ...frame };
      head.draw(job);
    },
    event: (event) => {
      addEvent(event);
      rewardsBox?.add(event);
      if (event.data && event.data.kind === "samples") {
        samplesBox.refresh(event.data && event.data.step);
      }
    },
    metrics: (frame) => {
      points = thin(mergePoints(points, frame.points));
      drawCharts();
    },
    done: async () => {
      job = await getJSON(base);
      head.draw(job);
      // the final evaluation lands on a step already drawn
      points = (await getJSON(`${base}/metrics?max_points=${MAX_POINTS}`)).data;
      drawCharts();
      samplesBox.refresh();
    },
  });
}

/* One sweep: status, the best trial, objective-vs-parameter plots and the trials; refreshed while it runs. */

import { api, getJSON, showError } from "../lib/api.js";
import { scatterPlot } from "../lib/charts.js";
import { h, heading, main, patch, show } from "../lib/dom.js";
import { fmtNum } from "../lib/format.js";

const REFRESH_MS = 3000;

const trialValue = (trial) => trial.value ?? trial.last_reported ?? null;

function trialsTable(trials, names, best) {
  const isBest = (trial) => Boolean(best) && best.number === trial.number;
  const titles = ["#", "Job", ...names, "Status", "Pruned", "Value", "Last reported", "Step"];
  const rows = trials.map((trial) =>
    h(
      "tr",
      { "data-trial": trial.number, class: isBest(trial) ? "best" : null },
      h("td", { text: trial.number + (isBest(trial) ? " ★" : "") }),
      h("td", {}, h("a", { href: `#/jobs/${trial.job_id}`, text: trial.job_id })),
      names.map((name) => h("td", { text: fmtNum(trial.params[name]) })),
      h("td", { class: `status status-${trial.status}`, text: trial.status }),
      h("td", { text: trial.pruned ? "pruned" : "" }),
      h("td", { text: fmtNum(trial.value) }),
      h("td", { text: fmtNum(trial.last_reported) }),
      h("td", { text: `${trial.step ?? 0}/${trial.total_steps ?? "?"}` }),
    ),
  );
  return h(
    "table",
    { id: "trials" },
    h("caption", { class: "sr-only", text: "Trials" }),
    h("thead", {}, h("tr", {}, titles.map((title) => h("th", { scope: "col", text: title })))),
    h("tbody", {}, rows),
  );
}

function bestTrial(sweep) {
  const best = sweep.best_trial;
  if (!best) {
    return h("p", { class: "muted", id: "best-trial", text: "no trial has a value yet" });
  }
  const params = Object.entries(best.params).map(([name, value]) => `${name} = ${fmtNum(value)}`);
  const model = best.fine_tuned_model;
  const chat = model
    ? h("p", {}, h("a", { href: `#/models?model=${encodeURIComponent(model)}`, text: `Chat with ${model}` }))
    : null;
  return h(
    "div",
    { class: "report", id: "best-trial" },
    h(
      "p",
      {},
      `Trial ${best.number} · ${sweep.objective.metric} ${fmtNum(best.value)} · `,
      h("a", { href: `#/jobs/${best.job_id}`, text: best.job_id }),
    ),
    h("p", { text: params.join(", ") }),
    chat,
  );
}

function summary(sweep) {
  const counts = Object.entries(sweep.trial_counts || {})
    .filter(([, count]) => count)
    .map(([status, count]) => `${count} ${status}`)
    .join(", ");
  const { direction, metric } = sweep.objective;
  const trials = `${sweep.trials_created}/${sweep.max_trials} trials${counts ? ` (${counts})` : ""}`;
  return h(
    "p",
    {},
    h("span", { class: `status status-${sweep.status}`, id: "sweep-status", text: sweep.status }),
    ` · ${sweep.model} · ${sweep.strategy} · ${direction} ${metric} · ${trials}`,
  );
}

export async function sweepPage(page, id) {
  const sweep = await getJSON(`/v1/fine_tuning/sweeps/${id}`);
  const trials = (await getJSON(`/v1/fine_tuning/sweeps/${id}/trials`)).data;
  const finished = sweep.finished_at !== null && sweep.finished_at !== undefined;
  const names = Object.keys(sweep.search_space || {});
  const best = sweep.best_trial;
  const cancel = h("button", {
    type: "button",
    class: "secondary",
    id: "sweep-cancel",
    text: "Cancel sweep",
    disabled: finished,
    onclick: async () => {
      try {
        await api(`/v1/fine_tuning/sweeps/${id}/cancel`, { method: "POST" });
      } catch {
        return; // shown in the alert region
      }
      showError("");
      page.rerender();
    },
  });
  const bestIndex = best ? trials.findIndex((trial) => trial.number === best.number) : -1;
  const labels = trials.map((trial) => trial.number);
  const plots = names.map((name) =>
    scatterPlot(
      name,
      trials.map((trial) => trial.params[name]),
      trials.map(trialValue),
      { best: bestIndex, labels },
    ),
  );
  // A refresh changes only what changed (see patch): the status, a trial's row, a plot.
  const render = page.refresh ? patch : show;
  render(main, [
    heading(`Sweep ${sweep.id}`),
    summary(sweep),
    sweep.error ? h("p", { class: "status-failed", text: `${sweep.error.code}: ${sweep.error.message}` }) : null,
    h("div", { class: "row" }, cancel),
    h("h2", { text: "Best trial" }),
    bestTrial(sweep),
    h("h2", { text: "Objective vs parameter" }),
    h("div", { class: "grid", id: "sweep-plots" }, plots),
    h("h2", { text: "Trials" }),
    trialsTable(trials, names, best),
    h("h2", { text: "Search space" }),
    h("pre", { text: JSON.stringify(sweep.search_space, null, 2) }),
  ]);
  if (!finished) {
    page.refreshAfter(REFRESH_MS);
  }
}

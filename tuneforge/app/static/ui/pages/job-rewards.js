/* A reinforcement job's rewards: the mean reward of each evaluation (greedy completions of validation
   prompts, graded; the first is before training) and the graded sample generations of a chosen one,
   "the latest" by default. Read from the job's evaluation events (methods/rft.py writes one per
   evaluation, with `data.reward` and `data.samples`), then fed by the stream. */

import { getJSON } from "../lib/api.js";
import { h, keepFocus, patch } from "../lib/dom.js";
import { fmtTime } from "../lib/format.js";

const NONE_YET = "None yet: the model is graded before the first step, then at each evaluation.";
// The most events read when the page opens: a run writes a few per evaluation and at most 20 grader warnings.
const EVENTS_READ = 1000;

const fmtReward = (value) => (typeof value === "number" ? value.toFixed(3) : "—");

/* An evaluation's event: a mean reward and the graded samples. */
export const isRewardEvent = (event) =>
  Boolean(event.data && typeof event.data.reward === "number" && Array.isArray(event.data.samples));

const evaluationName = (index) => (index === 0 ? "evaluation 1 (before training)" : `evaluation ${index + 1}`);

function evaluationPicker(evaluations, chosen, onPick) {
  const options = [
    h("option", { value: "latest", selected: chosen === "latest", text: "the latest" }),
    ...evaluations.map((event, index) =>
      h("option", {
        value: String(index),
        selected: String(index) === chosen,
        text: `${evaluationName(index)}, ${fmtTime(event.created_at)}: ${fmtReward(event.data.reward)}`,
      }),
    ),
  ];
  return h("select", { id: "rewards-evaluation", onchange: (event) => onPick(event.target.value) }, options);
}

function samplesTable(event, index) {
  const rows = event.data.samples.map((sample) =>
    h(
      "tr",
      {},
      h("th", { scope: "row", class: "prompt", text: sample.prompt }),
      h("td", { class: "sample", text: sample.output }),
      h("td", { class: "reward", text: fmtReward(sample.reward) }),
    ),
  );
  const caption = `Graded samples of ${evaluationName(index)}: mean reward ${fmtReward(event.data.reward)}.`;
  return h(
    "table",
    { id: "rewards-table", class: "samples" },
    h("caption", { text: caption }),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["Prompt", "Completion (greedy)", "Reward"].map((title) => h("th", { scope: "col", text: title })),
      ),
    ),
    h("tbody", {}, rows),
  );
}

/* The panel (`element`) and `add(event)`, called with each streamed event (others are ignored). */
export function rewardsPanel(job) {
  const element = h("div", { id: "rewards" });
  // Oldest first: the events read when the page opened (the API lists newest first), then those streamed
  // since (the stream sends only newer ones, but may deliver some before the read has answered).
  let loaded = [];
  const streamed = [];
  let chosen = "latest";
  const ordered = () => {
    const seen = new Set(loaded.map((event) => event.id));
    return [...loaded, ...streamed.filter((event) => !seen.has(event.id))];
  };
  const draw = () =>
    keepFocus(() => {
      const evaluations = ordered();
      if (!evaluations.length) {
        patch(element, [h("p", { class: "muted", text: NONE_YET })]);
        return;
      }
      const last = evaluations.length - 1;
      const index = chosen !== "latest" && Number(chosen) <= last ? Number(chosen) : last;
      const summary = h("p", {
        id: "rewards-summary",
        text:
          `Mean reward ${fmtReward(evaluations[0].data.reward)} (before training) → ` +
          `${fmtReward(evaluations[last].data.reward)} (latest of ${evaluations.length} evaluations).`,
      });
      const picker = evaluationPicker(evaluations, chosen, (value) => {
        chosen = value;
        draw();
      });
      const label = h("label", { for: "rewards-evaluation" }, "Show the samples of ", picker);
      patch(element, [summary, h("div", { class: "row" }, label), samplesTable(evaluations[index], index)]);
    });
  const add = (event) => {
    if (isRewardEvent(event)) {
      streamed.push(event);
      draw();
    }
  };
  draw();
  getJSON(`/v1/fine_tuning/jobs/${job.id}/events?limit=${EVENTS_READ}`)
    .then((page) => {
      loaded = page.data.filter(isRewardEvent).reverse();
      draw();
    })
    .catch(() => {
      // shown in the alert region, or the page was left
    });
  return { element, add };
}

/* A job's sample generations: what the base model said (step 0, or the first step sampled) beside
   what the adapter said at a chosen step, "the latest" by default. */

import { getJSON } from "../lib/api.js";
import { h, keepFocus, patch } from "../lib/dom.js";

const stepName = (step) => (step === 0 ? "step 0 (base model)" : `step ${step}`);
const capitalized = (text) => `${text[0].toUpperCase()}${text.slice(1)}`;

const NONE_YET =
  "None yet: the base model's are generated before the first step, then one set at each evaluation and at the end.";
const NONE = "None: this job's spec asks for no sample generations (the spec's samples block).";

function wantsSamples(spec) {
  const block = spec && spec.samples;
  return Boolean(block && ((block.prompts || []).length || block.from_validation));
}

function stepPicker(steps, chosen, onPick) {
  const latest = steps.at(-1);
  const options = [
    h("option", { value: "latest", selected: chosen === "latest", text: `the latest (${stepName(latest)})` }),
    ...steps
      .slice()
      .reverse()
      .map((step) => h("option", { value: String(step), selected: String(step) === chosen, text: stepName(step) })),
  ];
  return h("select", { id: "samples-step", onchange: (event) => onPick(event.target.value) }, options);
}

function samplesTable(samples, steps, columns) {
  const byKey = new Map(samples.map((s) => [`${s.step}:${s.index}`, s]));
  const prompts = new Map();
  for (const sample of samples) {
    if (!prompts.has(sample.index)) {
      prompts.set(sample.index, sample.prompt);
    }
  }
  const [first, other] = [columns[0], columns.at(-1)];
  const caption =
    `Sample generations (greedy): ${stepName(first)} beside ${stepName(other)}; ` +
    `${prompts.size} prompts, ${steps.length} steps sampled.`;
  const header = columns.map((step) =>
    h("th", { scope: "col", "data-step": step, text: `${capitalized(stepName(step))} said` }),
  );
  const rows = [...prompts]
    .sort((a, b) => a[0] - b[0])
    .map(([index, prompt]) =>
      h(
        "tr",
        { "data-index": index },
        h("th", { scope: "row", class: "prompt", text: prompt }),
        columns.map((step) => {
          const sample = byKey.get(`${step}:${index}`);
          return h("td", { "data-step": step, class: "sample", text: sample ? sample.output : "—" });
        }),
      ),
    );
  return h(
    "table",
    { id: "samples-table", class: "samples" },
    h("caption", { text: caption }),
    h("thead", {}, h("tr", {}, h("th", { scope: "col", text: "Prompt" }), header)),
    h("tbody", {}, rows),
  );
}

/* The panel (`element`) and `refresh(step)`, called when a `samples` event announces `step` (or with
   no step, to read them all again): it reads that step and any later, and redraws. A redraw updates
   the table in place, so the rows, cells and caption that did not change stay the same nodes. */
export function samplesPanel(job, initial) {
  const element = h("div", { id: "samples" });
  let samples = initial;
  let chosen = "latest";
  const draw = () =>
    keepFocus(() => {
      const steps = [...new Set(samples.map((s) => s.step))].sort((a, b) => a - b);
      if (!steps.length) {
        patch(element, [h("p", { class: "muted", text: wantsSamples(job.spec) ? NONE_YET : NONE })]);
        return;
      }
      const first = steps[0];
      const other = chosen !== "latest" && steps.includes(Number(chosen)) ? Number(chosen) : steps.at(-1);
      const columns = other === first ? [first] : [first, other];
      const picker = stepPicker(steps, chosen, (value) => {
        chosen = value;
        draw();
      });
      const label = h("label", { for: "samples-step" }, `Show ${stepName(first)} beside`, picker);
      patch(element, [h("div", { class: "row" }, label), samplesTable(samples, steps, columns)]);
    });

  // One read at a time, in the order the events came.
  let reads = Promise.resolve();
  const refresh = (step) => {
    reads = reads
      .then(async () => {
        const after = Number.isInteger(step) && step > 0 ? step - 1 : null;
        const query = after === null ? "" : `?since_step=${after}`;
        const fresh = (await getJSON(`/v1/fine_tuning/jobs/${job.id}/samples${query}`)).data;
        // The API orders by step, then prompt.
        const kept = after === null ? [] : samples.filter((s) => s.step <= after);
        samples = [...kept, ...fresh];
        draw();
      })
      .catch(() => {
        // shown in the alert region, or the page was left
      });
  };
  draw();
  return { element, refresh };
}

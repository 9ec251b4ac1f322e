/* Compare 2 to 6 jobs: their curves overlaid, their specs side by side with the differing fields marked. */

import { getJSON } from "../lib/api.js";
import { lineChart } from "../lib/charts.js";
import { h, heading, main, show } from "../lib/dom.js";
import { MAX_POINTS, METRICS, curve } from "../lib/series.js";

const MAX_JOBS = 6;
const SPEC_CAPTION = "Each job's resolved spec, one field a row; the fields that differ are marked (differs).";

/* {"training.learning_rate": "0.001", ...}: every leaf of a spec, as JSON text. */
function flatten(obj, prefix = "", out = {}) {
  for (const [key, value] of Object.entries(obj || {})) {
    if (value && typeof value === "object" && !Array.isArray(value)) {
      flatten(value, `${prefix}${key}.`, out);
    } else {
      out[`${prefix}${key}`] = JSON.stringify(value);
    }
  }
  return out;
}

function specDiff(ids, jobs) {
  const flat = jobs.map((job) => flatten(job.spec));
  const fields = [...new Set(flat.flatMap(Object.keys))].sort();
  const rows = fields.map((field) => {
    const values = flat.map((spec) => spec[field] ?? "—");
    const differs = new Set(values).size > 1;
    return h(
      "tr",
      { class: differs ? "diff" : null, "data-differs": differs ? "true" : null },
      h("th", { scope: "row", text: field + (differs ? " (differs)" : "") }),
      values.map((value) => h("td", { text: value })),
    );
  });
  const header = [h("th", { scope: "col", text: "field" }), ...ids.map((id) => h("th", { scope: "col", text: id }))];
  return h(
    "table",
    { id: "spec-diff" },
    h("caption", { class: "muted", text: SPEC_CAPTION }),
    h("thead", {}, h("tr", {}, header)),
    h("tbody", {}, rows),
  );
}

export async function comparePage(page) {
  const ids = (page.params.get("ids") || "").split(",").filter(Boolean).slice(0, MAX_JOBS);
  const input = h("input", { id: "compare-ids", name: "ids", value: ids.join(","), size: 60 });
  const submit = (event) => {
    event.preventDefault();
    location.hash = `#/compare?ids=${input.value.replace(/\s/g, "")}`;
  };
  const form = h(
    "form",
    { class: "filters", onsubmit: submit },
    h("label", { for: "compare-ids" }, "Job ids (2 to 6, comma-separated)", input),
    h("button", { type: "submit", text: "Compare" }),
  );
  show(main, heading("Compare"), form);
  if (ids.length < 2) {
    main.append(h("p", { class: "muted", text: "Pick 2 to 6 jobs on the Jobs page or type their ids." }));
    return;
  }
  // 2 x up to 6 requests at once; 6 curves share a chart, so half the points each.
  const [jobs, series] = await Promise.all([
    Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}`))),
    Promise.all(ids.map((id) => getJSON(`/v1/fine_tuning/jobs/${id}/metrics?max_points=${MAX_POINTS / 2}`))),
  ]);
  const charts = METRICS.map(([key, title]) =>
    lineChart(
      title,
      series.map((s, index) => ({ label: ids[index], points: curve(s.data, key) })),
    ),
  );
  main.append(h("div", { class: "grid", id: "charts" }, charts), h("h2", { text: "Specs" }), specDiff(ids, jobs));
}

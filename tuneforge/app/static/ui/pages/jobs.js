/* Jobs: the list, filtered by status, model and one metadata key=value; ticks for Compare. */

import { getJSON } from "../lib/api.js";
import { $, h, heading, keepFocus, main, patch, show } from "../lib/dom.js";
import { fmtDur, fmtTime } from "../lib/format.js";

const PAGE_SIZE = "20";
const REFRESH_MS = 3000;
const STATUSES = [
  "validating_files",
  "queued",
  "running",
  "cancel_requested",
  "pause_requested",
  "paused",
  "succeeded",
  "failed",
  "cancelled",
];
const COLUMNS = ["Job", "Status", "Model", "Task", "Progress", "Created", "Finished", "Trained tokens"];

// Jobs ticked for Compare: kept while the list refreshes and across pages.
const picked = new Set();

function listQuery(params) {
  const query = new URLSearchParams({ limit: PAGE_SIZE });
  for (const name of ["status", "model", "after"]) {
    if (params.get(name)) {
      query.set(name, params.get(name));
    }
  }
  const metadata = params.get("metadata") || "";
  if (metadata.includes("=")) {
    const [key, value] = metadata.split("=");
    query.set(`metadata[${key.trim()}]`, value.trim());
  }
  return query;
}

function compareButton() {
  return h("button", {
    type: "button",
    class: "secondary",
    id: "compare-selected",
    onclick: () => {
      location.hash = `#/compare?ids=${[...picked].join(",")}`;
    },
  });
}

function showPicked(button) {
  button.textContent = `Compare selected (${picked.size})`;
  button.disabled = picked.size < 2 || picked.size > 6;
}

function progressCell(job) {
  const { percentage, remaining_s: remaining } = job.progress;
  const done = percentage === null ? "" : `${Math.round(percentage)}%`;
  const eta = remaining ? `ETA ${fmtDur(remaining)}` : "";
  return h(
    "td",
    {},
    h("progress", { max: 100, value: percentage ?? 0, "aria-label": `${job.id} progress` }),
    h("span", { class: "muted", text: ` ${done} ${eta}` }),
  );
}

function jobRow(job) {
  const tick = h("input", {
    type: "checkbox",
    name: "pick",
    value: job.id,
    checked: picked.has(job.id),
    "aria-label": `Select ${job.id} to compare`,
    onchange: (event) => {
      if (event.target.checked) {
        picked.add(job.id);
      } else {
        picked.delete(job.id);
      }
      showPicked($("#compare-selected"));
    },
  });
  const task = job.spec && job.spec.task && (job.spec.task.type || job.spec.task);
  return h(
    "tr",
    { "data-job": job.id },
    h("td", {}, tick),
    h("td", {}, h("a", { href: `#/jobs/${job.id}`, text: job.id })),
    h("td", { class: `status status-${job.detailed_status}`, text: job.detailed_status }),
    h("td", { text: job.model }),
    h("td", { text: task || "—" }),
    progressCell(job),
    h("td", { text: fmtTime(job.created_at) }),
    h("td", { text: fmtTime(job.finished_at) }),
    h("td", { text: job.trained_tokens ?? "—" }),
  );
}

function nextPageLink(params, list) {
  if (!list.has_more || !list.data.length) {
    return null;
  }
  const next = new URLSearchParams(params);
  next.set("after", list.data.at(-1).id);
  return h("a", { href: `#/jobs?${next}`, id: "next-page", text: "Next page →" });
}

function filterForm(params) {
  const submit = (event) => {
    event.preventDefault();
    const filters = new URLSearchParams();
    for (const [name, value] of new FormData(event.target)) {
      if (value) {
        filters.set(name, value);
      }
    }
    location.hash = `#/jobs?${filters}`;
  };
  const status = params.get("status") || "";
  const options = ["", ...STATUSES].map((s) => h("option", { value: s, selected: s === status, text: s || "any" }));
  return h(
    "form",
    { class: "filters", "aria-label": "Filter jobs", onsubmit: submit },
    h("label", {}, "Status", h("select", { name: "status" }, options)),
    h("label", {}, "Model", h("input", { name: "model", value: params.get("model") || "" })),
    h(
      "label",
      {},
      "Metadata key=value",
      h("input", { name: "metadata", value: params.get("metadata") || "", placeholder: "team=search" }),
    ),
    h("button", { type: "submit", text: "Filter" }),
  );
}

export async function jobsPage(page) {
  const { params } = page;
  const list = await getJSON(`/v1/fine_tuning/jobs?${listQuery(params)}`);
  page.refreshAfter(REFRESH_MS);
  const rows = list.data.map(jobRow);
  const filtered = ["status", "model", "metadata"].some((name) => params.get(name));
  const caption = `${list.data.length} jobs on this page${filtered ? " (filtered)" : ""}`;
  const next = nextPageLink(params, list);
  const table = $("#jobs", main);
  if (page.refresh && table) {
    // Only the rows change, and only those that did: the filter form, the ticks and the focus stay.
    keepFocus(() => {
      patch(table.tBodies[0], rows);
      table.caption.textContent = caption;
      patch($("#pager", main), [next]);
    });
    return;
  }
  const headerCells = COLUMNS.map((title) => h("th", { scope: "col", text: title }));
  const compareHeader = h("th", { scope: "col" }, h("span", { class: "sr-only", text: "Compare" }));
  const compare = compareButton();
  show(
    main,
    heading("Jobs"),
    filterForm(params),
    h(
      "table",
      { id: "jobs" },
      h("caption", { class: "muted", text: caption }),
      h("thead", {}, h("tr", {}, compareHeader, headerCells)),
      h("tbody", {}, rows),
    ),
    h("div", { class: "row" }, compare, h("span", { id: "pager" }, next)),
  );
  showPicked(compare);
}

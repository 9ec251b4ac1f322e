/* Sweeps: your hyperparameter sweeps, newest first, refreshed every 5 s. */

import { getJSON } from "../lib/api.js";
import { h, heading, main, patch, show } from "../lib/dom.js";
import { fmtNum, fmtTime } from "../lib/format.js";

const PAGE_SIZE = "20";
const REFRESH_MS = 5000;
const COLUMNS = ["Sweep", "Status", "Model", "Strategy", "Objective", "Trials", "Best", "Created"];

function sweepRow(sweep) {
  const best = sweep.best_trial;
  return h(
    "tr",
    { "data-sweep": sweep.id },
    h("td", {}, h("a", { href: `#/sweeps/${sweep.id}`, text: sweep.id })),
    h("td", { class: `status status-${sweep.status}`, text: sweep.status }),
    h("td", { text: sweep.model }),
    h("td", { text: sweep.strategy }),
    h("td", { text: `${sweep.objective.metric} (${sweep.objective.direction})` }),
    h("td", { text: `${sweep.trials_created}/${sweep.max_trials}` }),
    h("td", { text: best ? `#${best.number}: ${fmtNum(best.value)}` : "—" }),
    h("td", { text: fmtTime(sweep.created_at) }),
  );
}

export async function sweepsPage(page) {
  const query = new URLSearchParams({ limit: PAGE_SIZE });
  if (page.params.get("after")) {
    query.set("after", page.params.get("after"));
  }
  const list = await getJSON(`/v1/fine_tuning/sweeps?${query}`);
  const table = h(
    "table",
    { id: "sweeps" },
    h("caption", { class: "muted", text: `${list.data.length} sweeps on this page` }),
    h("thead", {}, h("tr", {}, COLUMNS.map((title) => h("th", { scope: "col", text: title })))),
    h("tbody", {}, list.data.map(sweepRow)),
  );
  const next =
    list.has_more && list.data.length
      ? h("a", { href: `#/sweeps?after=${list.data.at(-1).id}`, text: "Next page →" })
      : null;
  // A refresh changes only the rows that changed (see patch).
  const render = page.refresh ? patch : show;
  render(main, [heading("Sweeps"), table, next]);
  page.refreshAfter(REFRESH_MS);
}

/* Models: the base models and your fine-tuned ones, and a chat panel to try one. */

import { getJSON } from "../lib/api.js";
import { h, heading, main, show } from "../lib/dom.js";
import { fmtParams, fmtTime } from "../lib/format.js";
import { chatPanel } from "./chat.js";

const COLUMNS = ["Model", "Kind", "Architecture", "Parameters", "Context", "Chat template", "Job", "Created"];

function chatTemplate(model) {
  if (model.chat_template === undefined || model.chat_template === null) {
    return model.base_model ? "from base" : "—";
  }
  return model.chat_template ? "yes" : "no";
}

function modelRow(model) {
  const job = model.fine_tuning_job_id;
  const chatLink = `#/models?model=${encodeURIComponent(model.id)}`;
  return h(
    "tr",
    { "data-model": model.id },
    h("td", {}, h("a", { href: chatLink, text: model.id, "aria-label": `Chat with ${model.id}` })),
    h("td", { text: model.kind }),
    h("td", { text: model.architecture ?? (model.base_model ? `on ${model.base_model}` : "—") }),
    h("td", { text: fmtParams(model.parameters) }),
    h("td", { text: model.context_length ?? "—" }),
    h("td", { text: chatTemplate(model) }),
    h("td", {}, job ? h("a", { href: `#/jobs/${job}`, text: job }) : "—"),
    h("td", { text: fmtTime(model.created) }),
  );
}

/* The model the chat starts with: the one in the URL, else a fine-tuned one, else one with a chat template. */
function firstChoice(params, models) {
  if (params.get("model")) {
    return params.get("model");
  }
  const model =
    models.find((m) => m.kind === "fine_tuned") || models.find((m) => m.chat_template) || models[0] || {};
  return model.id || "";
}

export async function modelsPage(page) {
  const models = (await getJSON("/v1/models")).data;
  const table = h(
    "table",
    { id: "models" },
    h("caption", { class: "muted", text: `${models.length} models` }),
    h("thead", {}, h("tr", {}, COLUMNS.map((title) => h("th", { scope: "col", text: title })))),
    h("tbody", {}, models.map(modelRow)),
  );
  show(main, heading("Models"), table, chatPanel(models, firstChoice(page.params, models), page.signal));
}

/* Files: upload with a progress bar and the validation report, and the list of your files. */

import { apiKey, getJSON, showError } from "../lib/api.js";
import { $, h, heading, main, show } from "../lib/dom.js";
import { fmtTime } from "../lib/format.js";

const PAGE_SIZE = "50";
const COLUMNS = ["File", "Name", "Format", "Rows", "Bytes", "Status", "Created"];
const REPORT_COLUMNS = ["Column", "Types", "Non-null"];

function rejected(message) {
  return h("div", { class: "report status-failed" }, h("h2", { text: "Rejected" }), h("pre", { text: message }));
}

function uploaded(file) {
  const columns = Object.entries(file.columns || {}).map(([name, info]) =>
    h(
      "tr",
      {},
      h("td", { text: name }),
      h("td", { text: JSON.stringify(info.types ?? info.type ?? "") }),
      h("td", { text: info.non_null ?? "" }),
    ),
  );
  const summary = `${file.filename}: ${file.format}, ${file.n_rows} rows, ${file.bytes} bytes, status ${file.status}`;
  return h(
    "div",
    { class: "report" },
    h("h2", { text: `Uploaded ${file.id}` }),
    h("p", { text: summary }),
    h(
      "table",
      {},
      h("caption", { class: "sr-only", text: "Columns found" }),
      h("thead", {}, h("tr", {}, REPORT_COLUMNS.map((title) => h("th", { scope: "col", text: title })))),
      h("tbody", {}, columns),
    ),
  );
}

/* The upload form. XMLHttpRequest rather than fetch(): only it reports the upload's progress. */
function uploadForm(page, report) {
  const fileInput = h("input", {
    type: "file",
    id: "upload-file",
    name: "file",
    required: true,
    accept: ".jsonl,.json,.csv,.tsv,.txt",
  });
  const bar = h("progress", { id: "upload-progress", max: 100, value: 0, "aria-label": "Upload progress" });
  const submit = (event) => {
    event.preventDefault();
    if (!fileInput.files.length) {
      return;
    }
    const body = new FormData();
    body.append("file", fileInput.files[0]);
    body.append("purpose", "fine-tune");
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/files");
    xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
    xhr.upload.onprogress = (progress) => {
      if (progress.lengthComputable) {
        bar.value = (100 * progress.loaded) / progress.total;
      }
    };
    xhr.onload = () => {
      let data = {};
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        // not JSON: the status says it
      }
      if (xhr.status !== 200) {
        const message = (data.error && data.error.message) || `${xhr.status}`;
        showError(message);
        report.replaceChildren(rejected(message));
        return;
      }
      showError("");
      bar.value = 100;
      report.replaceChildren(uploaded(data));
      page.refreshAfter(50); // the list, with the new file
    };
    xhr.send(body);
  };
  return h(
    "form",
    { id: "upload", onsubmit: submit },
    h("label", { for: "upload-file" }, "Training file (JSONL or CSV)", fileInput),
    bar,
    h("button", { type: "submit", text: "Upload" }),
  );
}

function fileRow(file) {
  return h(
    "tr",
    { "data-file": file.id },
    h("td", { text: file.id }),
    h("td", { text: file.filename }),
    h("td", { text: file.format }),
    h("td", { text: file.n_rows }),
    h("td", { text: file.bytes }),
    h("td", { text: file.status }),
    h("td", { text: fmtTime(file.created_at) }),
  );
}

export async function filesPage(page) {
  const query = new URLSearchParams({ limit: PAGE_SIZE });
  if (page.params.get("after")) {
    query.set("after", page.params.get("after"));
  }
  const list = await getJSON(`/v1/files?${query}`);
  // A refresh after an upload keeps the report shown (and the next upload writes into it).
  const report = $("#upload-report") || h("div", { id: "upload-report", "aria-live": "polite" });
  const table = h(
    "table",
    { id: "files" },
    h("caption", { class: "sr-only", text: "Your files" }),
    h("thead", {}, h("tr", {}, COLUMNS.map((title) => h("th", { scope: "col", text: title })))),
    h("tbody", {}, list.data.map(fileRow)),
  );
  const next =
    list.has_more && list.data.length
      ? h("a", { href: `#/files?after=${list.data.at(-1).id}`, text: "Next page →" })
      : null;
  show(main, heading("Files"), uploadForm(page, report), report, h("h2", { text: "Your files" }), table, next);
}

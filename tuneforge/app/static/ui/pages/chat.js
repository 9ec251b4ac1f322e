/* The chat panel of the Models page: POST /v1/chat/completions with stream: true, the reply written as it arrives. */

import { api, showError } from "../lib/api.js";
import { h } from "../lib/dom.js";
import { serverSentEvents } from "../lib/sse.js";

const HINT = "Streams from POST /v1/chat/completions (needs a `tuneforge worker --queue inference`). Ctrl+Enter sends.";

/* Reads the streamed reply, writing it into `out` as it grows; returns {reply, finish, usage}. */
async function streamReply(response, out) {
  const result = { reply: "", finish: null, usage: null };
  for await (const message of serverSentEvents(response)) {
    if (message.data === "[DONE]") {
      continue;
    }
    const chunk = JSON.parse(message.data);
    if (chunk.error) {
      throw new Error(chunk.error.message);
    }
    if (chunk.usage) {
      result.usage = chunk.usage;
    }
    for (const choice of chunk.choices || []) {
      if (choice.delta && choice.delta.content) {
        result.reply += choice.delta.content;
        out.textContent = result.reply;
      }
      if (choice.finish_reason) {
        result.finish = choice.finish_reason;
      }
    }
  }
  return result;
}

/* The panel; `pageSignal` ends a reply still streaming when the page is left. */
export function chatPanel(models, chosen, pageSignal) {
  const history = []; // the whole conversation is sent each turn
  const select = h(
    "select",
    { id: "chat-model", name: "model" },
    models.map((m) => h("option", { value: m.id, selected: m.id === chosen, text: m.id })),
  );
  const maxTokens = h("input", { id: "chat-max-tokens", type: "number", min: 1, max: 4096, value: 64, size: 5 });
  const temperature = h("input", {
    id: "chat-temperature",
    type: "number",
    min: 0,
    max: 2,
    step: 0.1,
    value: 0.7,
    size: 4,
  });
  const prompt = h("textarea", { id: "chat-input", rows: 3, cols: 70, required: true, placeholder: "Say something…" });
  const log = h("ol", { id: "chat-log", class: "chat", "aria-live": "polite", "aria-label": "Conversation" });
  const forget = () => {
    history.length = 0;
    log.replaceChildren();
  };
  const send = h("button", { type: "submit", id: "chat-send", text: "Send" });
  const stop = h("button", { type: "button", class: "secondary", id: "chat-stop", text: "Stop", disabled: true });
  const clear = h("button", { type: "button", class: "secondary", id: "chat-clear", text: "Clear", onclick: forget });
  const status = h("p", { id: "chat-status", class: "muted", role: "status" });
  const bubble = (role, text) => {
    const body = h("div", { class: "content", text });
    const who = h("span", { class: "who", text: role === "user" ? "You" : "Model" });
    log.append(h("li", { class: `msg ${role}` }, who, body));
    return body;
  };
  select.addEventListener("change", forget);

  const ask = async (event) => {
    event.preventDefault();
    const text = prompt.value.trim();
    if (!text) {
      return;
    }
    history.push({ role: "user", content: text });
    bubble("user", text);
    prompt.value = "";
    const out = bubble("assistant", "");
    out.setAttribute("aria-busy", "true");
    const stopper = new AbortController();
    pageSignal.addEventListener("abort", () => stopper.abort(), { once: true });
    stop.onclick = () => stopper.abort();
    send.disabled = true;
    stop.disabled = false;
    status.textContent = "Generating…";
    const started = performance.now();
    const body = {
      model: select.value,
      messages: history,
      stream: true,
      max_tokens: Number(maxTokens.value) || 64,
      temperature: Number(temperature.value),
      stream_options: { include_usage: true },
    };
    try {
      const response = await api("/v1/chat/completions", {
        method: "POST",
        signal: stopper.signal,
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
      const { reply, finish, usage } = await streamReply(response, out);
      history.push({ role: "assistant", content: reply });
      const tokens = usage ? `${usage.completion_tokens} tokens · ` : "";
      status.textContent = `${finish || "done"} · ${tokens}${((performance.now() - started) / 1000).toFixed(1)} s`;
      if (!reply) {
        out.textContent = "(empty reply)";
      }
    } catch (error) {
      history.pop(); // the user's turn got no answer; it is not sent again
      out.closest("li").classList.add("failed");
      out.textContent = stopper.signal.aborted ? "(stopped)" : `Error: ${error.message}`;
      if (!stopper.signal.aborted) {
        showError(error.message);
      }
      status.textContent = "";
    } finally {
      out.removeAttribute("aria-busy");
      send.disabled = false;
      stop.disabled = true;
    }
  };
  const form = h(
    "form",
    { id: "chat", "aria-label": "Chat with a model", onsubmit: ask },
    h(
      "div",
      { class: "row" },
      h("label", { for: "chat-model" }, "Model", select),
      h("label", { for: "chat-max-tokens" }, "Max tokens", maxTokens),
      h("label", { for: "chat-temperature" }, "Temperature", temperature),
    ),
    log,
    h("label", { for: "chat-input" }, "Message", prompt),
    h("div", { class: "row" }, send, stop, clear),
    status,
  );
  prompt.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      form.requestSubmit();
    }
  });
  return h(
    "section",
    { "aria-labelledby": "chat-h" },
    h("h2", { id: "chat-h", text: "Chat" }),
    h("p", { class: "muted", text: HINT }),
    form,
  );
}

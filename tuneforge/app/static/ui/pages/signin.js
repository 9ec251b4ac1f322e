/* Sign in: the API key is checked against the API, then kept in the browser's local storage. */

import { forgetApiKey, getJSON, keepApiKey } from "../lib/api.js";
import { $, h, heading, main, show } from "../lib/dom.js";

const HELP = "Paste an API key (tuneforge keys create). It stays in this browser's local storage until you sign out.";

/* The sign-in form; `signedIn` runs once the API accepted the key. */
export function signInPage(signedIn) {
  $("#nav").hidden = true;
  const input = h("input", {
    id: "key",
    type: "password",
    autocomplete: "off",
    required: true,
    size: 48,
    "aria-describedby": "key-help alert",
  });
  const submit = async (event) => {
    event.preventDefault();
    keepApiKey(input.value.trim());
    try {
      await getJSON("/v1/files?limit=1");
    } catch {
      // the API's message is in the alert region
      forgetApiKey();
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    signedIn();
  };
  const form = h(
    "form",
    { id: "signin", onsubmit: submit },
    h("label", { for: "key", text: "API key" }, input),
    h("button", { type: "submit", text: "Sign in" }),
  );
  show(main, heading("Sign in"), h("p", { id: "key-help", text: HELP }), form);
  input.focus();
}

/* The public API, called with the key the user pasted in (kept in the browser's local storage). */

import { $ } from "./dom.js";

const KEY = "tuneforge.apiKey";
const alertBox = $("#alert");

export const apiKey = () => localStorage.getItem(KEY);
export const keepApiKey = (key) => localStorage.setItem(KEY, key);
export const forgetApiKey = () => localStorage.removeItem(KEY);

/* The message in the page's alert region; empty clears it. */
export function showError(message) {
  alertBox.textContent = message || "";
}

// The requests of the page shown. The router ends them when the user moves on or the page re-renders:
// a request still under way then fails (body included), so a late answer can never draw over the next
// page, nor start a refresh timer there.
let pageRequests = new AbortController();

/* Ends the shown page's requests; the ones made from now on belong to the next page. */
export function startPageRequests() {
  pageRequests.abort();
  pageRequests = new AbortController();
  return pageRequests.signal;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body.error && body.error.message) {
      return body.error.message;
    }
  } catch {
    // not JSON: the status line says it
  }
  return `${response.status} ${response.statusText}`;
}

/* fetch() with the key, ended with the page (and with `options.signal`); an error is shown, then thrown. */
export async function api(path, options = {}) {
  const page = pageRequests.signal;
  const signal = options.signal ? AbortSignal.any([options.signal, page]) : page;
  const headers = { Authorization: `Bearer ${apiKey()}`, ...(options.headers || {}) };
  const response = await fetch(path, { ...options, headers, signal });
  if (page.aborted) {
    throw new Error("stale");
  }
  if (!response.ok) {
    const message = await errorMessage(response);
    if (response.status === 401) {
      forgetApiKey();
    }
    showError(message);
    throw new Error(message);
  }
  return response;
}

/* The JSON body of a GET, or an error if the user moved on before all of it arrived. */
export async function getJSON(path) {
  const page = pageRequests.signal;
  const body = await (await api(path)).json();
  if (page.aborted) {
    throw new Error("stale");
  }
  return body;
}

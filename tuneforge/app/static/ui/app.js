/* Tuneforge dashboard (docs/dashboard.md): ES modules over the public API, served by the API itself from
   tuneforge/app/static/ui/ (no build step, no library, nothing from another origin). This module is the
   router: it shows the page the URL's hash names, and ends what the page before it started. */

import { api, apiKey, forgetApiKey, showError, startPageRequests } from "./lib/api.js";
import { $, focusKey, main } from "./lib/dom.js";
import { serverSentEvents } from "./lib/sse.js";
import { comparePage } from "./pages/compare.js";
import { filesPage } from "./pages/files.js";
import { jobPage } from "./pages/job.js";
import { jobsPage } from "./pages/jobs.js";
import { modelsPage } from "./pages/models.js";
import { signInPage } from "./pages/signin.js";
import { sweepPage } from "./pages/sweep.js";
import { sweepsPage } from "./pages/sweeps.js";

// [path, page]: a path ending in "/" takes an id after it (page(context, id)), any other must match
// exactly; the Jobs list otherwise.
const ROUTES = [
  ["/jobs/", jobPage],
  ["/compare", comparePage],
  ["/files", filesPage],
  ["/models", modelsPage],
  ["/sweeps/", sweepPage],
  ["/sweeps", sweepsPage],
];

let shown = null; // the page shown (its context, below)
let renders = 0;

/* What a page gets: its URL parameters, whether it re-renders itself (`refresh`), and the means to
   refresh later or follow a stream. Everything it starts ends when the user moves on (`signal`). */
function pageContext(params, refresh) {
  const signal = startPageRequests();
  const page = {
    params,
    refresh,
    signal,
    live: false, // it has a refresh timer or a stream, which a hidden tab stops
    rerender: () => route(true),
    refreshAfter(ms) {
      if (signal.aborted) {
        return;
      }
      page.live = true;
      const timer = setTimeout(() => route(true), ms);
      signal.addEventListener("abort", () => clearTimeout(timer));
    },
    async follow(url, handlers) {
      page.live = true;
      try {
        for await (const message of serverSentEvents(await api(url))) {
          const handler = handlers[message.type];
          if (handler) {
            Promise.resolve(handler(JSON.parse(message.data))).catch(() => {
              // shown in the alert region, or the page was left
            });
          }
        }
      } catch {
        // ended with the page
      }
    },
  };
  return page;
}

function markCurrentNav(path) {
  for (const link of document.querySelectorAll("nav a")) {
    const href = link.getAttribute("href");
    if (href.startsWith("#") && path.startsWith(href.slice(1))) {
      link.setAttribute("aria-current", "page");
    } else {
      link.removeAttribute("aria-current");
    }
  }
}

function pageFor(path) {
  for (const [prefix, render] of ROUTES) {
    if (prefix.endsWith("/") ? path.startsWith(prefix) : path === prefix) {
      return (page) => render(page, decodeURIComponent(path.slice(prefix.length)));
    }
  }
  return jobsPage;
}

function signedIn() {
  showError("");
  if (location.hash === "#/jobs") {
    route();
  } else {
    location.hash = "#/jobs";
  }
}

/* Shows the page the hash names; `refresh`: the page shown re-renders itself (its timer, a resume). */
async function route(refresh = false) {
  const [path, query = ""] = (location.hash.slice(1) || "/jobs").split("?");
  const page = pageContext(new URLSearchParams(query), refresh);
  shown = page;
  if (!apiKey()) {
    signInPage(signedIn);
    return;
  }
  $("#nav").hidden = false;
  markCurrentNav(path);
  if (!refresh) {
    showError("");
  }
  const started = performance.now();
  const focused = refresh ? focusKey(document.activeElement) : null; // a refresh keeps the keyboard focus
  try {
    await pageFor(path)(page);
  } catch {
    if (!apiKey()) {
      route(); // the key was refused (401): sign in again
    }
    return; // the error is shown, or the user moved on
  }
  document.title = `${main.querySelector("h1")?.textContent || "Tuneforge"} · Tuneforge`;
  performance.measure(`tuneforge ${path}`, { start: started }); // read by bench/ui_scale.py
  const again = focused && main.querySelector(focused);
  if (again && again !== document.activeElement) {
    again.focus({ preventScroll: true });
  }
  if (!refresh) {
    // the focus goes to the page's heading, so a screen reader announces the new page
    const title = main.querySelector("h1");
    if (title) {
      title.tabIndex = -1;
      title.focus({ preventScroll: true });
    } else {
      main.focus({ preventScroll: true });
    }
  }
  // A page rendered (or re-rendered) completely: the browser test waits on this count.
  renders += 1;
  main.dataset.renders = String(renders);
}

$("#signout").addEventListener("click", () => {
  forgetApiKey();
  if (location.hash) {
    location.hash = ""; // the hashchange shows the sign-in form
  } else {
    route();
  }
});
window.addEventListener("hashchange", () => route());

// A page left (or kept in the back/forward cache) or a hidden tab closes its job stream and stops its
// refresh timer: a browser keeps at most 6 connections to one server, and streams held by pages no
// longer shown would stall the requests of the one that is. Shown again, the page reads afresh. (A
// chat reply being streamed is left alone: the Models page has neither.)
let stopped = false;
function pauseLive() {
  if (shown === null || !shown.live) {
    return;
  }
  startPageRequests(); // ends the page's stream and timer with its requests
  shown.live = false;
  stopped = true;
}
function resumeLive() {
  if (stopped) {
    stopped = false;
    route(true);
  }
}
window.addEventListener("pagehide", pauseLive);
window.addEventListener("pageshow", resumeLive);
document.addEventListener("visibilitychange", () => (document.hidden ? pauseLive() : resumeLive()));
route();

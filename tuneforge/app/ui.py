"""The built-in dashboard at `/ui/` (docs/dashboard.md), `/` redirects there.

Plain HTML, CSS and JavaScript modules under tuneforge/app/static/ui/ (app.js, lib/, pages/), written
for Tuneforge: no build chain, no library, nothing fetched from another origin. The pages call only the
public API, with the API key the user pastes in (kept in the browser's local storage)."""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles

UI_DIR = Path(__file__).resolve().parent / "static" / "ui"


def install_dashboard(app: FastAPI) -> None:
    # A browser runs a module script only if it is served as JavaScript; the type StaticFiles sends
    # comes from the host's MIME table, which may lack .js or name it otherwise.
    mimetypes.add_type("text/javascript", ".js")
    app.mount("/ui", StaticFiles(directory=UI_DIR, html=True), name="ui")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/")

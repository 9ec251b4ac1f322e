"""The dashboard's files without a browser: served at /ui/, `/` redirects there, and no file names
another origin (the browser test, tests/app/test_ui.py, also reads the resource entries)."""

from __future__ import annotations

import re

import httpx

from app.ui import UI_DIR


def test_served_and_redirected(client: httpx.Client) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and 'src="app.js"' in page.text
    assert client.get("/ui/app.js").status_code == 200 and client.get("/ui/app.css").status_code == 200


def test_no_file_names_another_origin() -> None:
    for path in UI_DIR.iterdir():
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path

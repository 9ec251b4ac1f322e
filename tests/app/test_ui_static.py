"""The dashboard's files without a browser: served at /ui/ (the scripts as JavaScript, which a module
script needs), `/` redirects there, no file names another origin (the browser test,
tests/app/test_ui.py, also reads the resource entries), the files ship in the package, the page's
accessible skeleton, and the stream cursors the Job page relies on."""

from __future__ import annotations

import datetime as dt
import glob
import json
import re
import tomllib
from typing import Any

import httpx

from tests.helpers import ROOT, shakespeare_rows, upload_jsonl
from tuneforge.app.ui import UI_DIR

# Every file the dashboard serves, in its subfolders too (the ES modules under lib/ and pages/).
UI_FILES = sorted(p for p in UI_DIR.rglob("*") if p.is_file())
SCRIPTS = [p for p in UI_FILES if p.suffix == ".js"]


def test_served_and_redirected(client: httpx.Client) -> None:
    root = client.get("/", follow_redirects=False)
    assert root.status_code == 307 and root.headers["location"] == "/ui/"
    page = client.get("/ui/")
    assert page.status_code == 200 and 'src="app.js"' in page.text
    assert client.get("/ui/app.js").status_code == 200 and client.get("/ui/app.css").status_code == 200
    assert len(SCRIPTS) > 1, SCRIPTS
    for path in SCRIPTS:  # a browser refuses a module script served with another type
        r = client.get(f"/ui/{path.relative_to(UI_DIR).as_posix()}")
        assert r.status_code == 200 and "javascript" in r.headers["content-type"], (path, r.headers)


def test_no_file_names_another_origin() -> None:
    for path in UI_FILES:
        text = path.read_text().replace("http://www.w3.org/2000/svg", "")  # a namespace name, never fetched
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text), path


def test_the_files_ship_in_the_package() -> None:
    """A non-editable install (the Dockerfile's `pip install .`) carries only the package data listed."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["tuneforge.app"]
    package = ROOT / "tuneforge" / "app"
    # matched as setuptools matches them: a `*` stays within its folder
    shipped = {p for g in globs for p in glob.glob(g, root_dir=package)}
    for path in UI_FILES:
        rel = str(path.relative_to(package))
        assert rel in shipped, f"{rel} is not package data"


def test_accessible_skeleton() -> None:
    """A skip link first, a labelled navigation, an alert region and a polite status region that exist
    before anything is written to them, a focusable main; in the scripts (ES modules, app.js first),
    only real buttons, links and inputs are clickable (the browser test checks labels, captions and
    chart text per page)."""
    html = (UI_DIR / "index.html").read_text()
    body = html.split("<body>", 1)[1].lstrip()
    assert body.startswith('<a class="skip" href="#main">')
    assert '<nav aria-label="Pages"' in html
    assert '<div id="alert" role="alert"></div>' in html
    assert re.search(r'<div id="announce" class="sr-only" role="status" aria-live="polite"></div>', html)
    assert '<main id="main" tabindex="-1">' in html
    assert '<script type="module" src="app.js"></script>' in html
    clickable = []
    for path in SCRIPTS:
        js = path.read_text()
        # each click or key handler set through h(): the element it is set on is the nearest h("tag" before it
        handlers = re.finditer(r"\bon(?:click|keydown|keyup): ", js)
        clickable += [re.findall(r'h\("(\w+)"', js[: m.start()])[-1] for m in handlers]
    assert len(clickable) >= 5 and set(clickable) <= {"button", "a", "input", "select", "textarea"}, clickable
    assert ":focus-visible" in (UI_DIR / "app.css").read_text()


def _frames(client: httpx.Client, url: str) -> list[tuple[str, dict[str, Any]]]:
    with client.stream("GET", url) as r:
        assert r.status_code == 200, r.read()
        body = "".join(r.iter_text())
    out = []
    for frame in body.split("\n\n"):
        if frame.startswith("event: "):
            kind, data = frame.split("\n", 1)
            out.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


def test_stream_skips_what_the_page_already_read(client: httpx.Client, tiny_model: str) -> None:
    """`since_step` and `after` (an event id): the Job page reads a downsampled series and the last
    events, then streams only what is newer, so a 100k-point job does not stream every point again."""
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.jobs import repository
    from tuneforge.contract.status import JobStatus

    file_id = upload_jsonl(client, shakespeare_rows(8))["id"]
    r = client.post("/v1/fine_tuning/jobs", json={"model": tiny_model, "training_file": file_id})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    with session_scope() as s:
        repository.upsert_metrics(s, job, [{"step": i, "loss": 1.0 / i} for i in range(1, 6)])
        for i in range(3):
            repository.add_event(s, job, f"event {i}")
        row = repository.get(s, None, job)
        assert row is not None
        row.status, row.finished_at = JobStatus.CANCELLED, dt.datetime.now(dt.UTC)  # so that the stream ends
    events = client.get(f"/v1/fine_tuning/jobs/{job}/events?limit=50").json()["data"]  # newest first
    url = f"/v1/fine_tuning/jobs/{job}/stream"

    everything = _frames(client, url)
    assert [p["step"] for k, d in everything if k == "metrics" for p in d["points"]] == [1, 2, 3, 4, 5]
    assert [d["id"] for k, d in everything if k == "event"] == [e["id"] for e in reversed(events)]

    newer = _frames(client, f"{url}?since_step=3&after={events[1]['id']}")
    assert [p["step"] for k, d in newer if k == "metrics" for p in d["points"]] == [4, 5]
    assert [d["id"] for k, d in newer if k == "event"] == [events[0]["id"]]
    assert newer[0][0] == "status" and newer[-1][0] == "done"

    nothing_new = _frames(client, f"{url}?since_step=5&after={events[0]['id']}")
    assert [k for k, _ in nothing_new] == ["status", "done"]
    assert client.get(f"{url}?since_step=-1").status_code == 400

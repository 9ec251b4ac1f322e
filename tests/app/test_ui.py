"""The dashboard at /ui/ in real headless Chromium (Selenium), against real `tuneforge api` and
`tuneforge worker` processes training the tiny Llama. Screenshots of each page go to docs/img/."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, TMP, shakespeare_rows, spawn, stop, worker_log

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

IMG = ROOT / "docs" / "img"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium + chromium-driver (scripts/services.sh)"
)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900"):
        opts.add_argument(arg)
    driver = webdriver.Chrome(options=opts, service=webdriver.ChromeService(executable_path=str(CHROMEDRIVER)))
    driver.set_script_timeout(30)
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def inference_worker(live_worker: Any) -> Iterator[Any]:
    """`tuneforge worker --queue inference` for the chat panel, started after `live_worker` (which empties
    the queue when it starts) so it loads torch while the first job trains."""
    log = TMP / "ui-inference-worker.log"
    proc = spawn(["worker", "--queue", "inference", "--hostname", f"ui-infer-{os.getpid()}@%h"], log=log)
    time.sleep(1)
    if proc.poll() is not None:
        raise RuntimeError(log.read_text())
    yield proc
    stop(proc, timeout=30)


def wait_for(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if value := check():
                return value
        except Exception:  # noqa: BLE001 - elements come and go while the page re-renders
            pass
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}\n{worker_log()[-1500:]}")


def off_origin(driver: Any, origin: str) -> list[str]:
    """Every resource the page loaded (scripts, styles, fetches, images) that is not from `origin`."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not (n.startswith(origin + "/") or n.startswith(("data:", "blob:")))]


def shot(driver: Any, name: str) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(IMG / f"ui-{name}.png"))


def status_of(driver: Any) -> str:
    return str(driver.find_element(By.ID, "job-status").text)


def points(driver: Any, metric: str = "Loss") -> int:
    path = driver.find_elements(By.CSS_SELECTOR, f"figure[data-metric='{metric}'] path[data-points]")
    return int(path[0].get_attribute("data-points")) if path else 0


def test_dashboard_end_to_end(
    browser: Any,
    live_api: str,
    live_worker: Any,
    inference_worker: Any,
    api_key: str,
    tiny_model: str,
    tmp_path: Path,
) -> None:
    d, api = browser, httpx.Client(base_url=live_api, headers={"Authorization": f"Bearer {api_key}"}, timeout=30)
    started = time.monotonic()

    # `/` redirects to the dashboard, which asks for a key; a wrong one shows the API's message.
    d.get(live_api + "/")
    assert d.current_url.startswith(live_api + "/ui/")
    key_box = wait_for(lambda: d.find_element(By.ID, "key"), "the sign-in form")
    shot(d, "signin")
    key_box.send_keys("tf-not-a-key")
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(lambda: d.find_element(By.ID, "alert").text, "the error message")
    key_box = d.find_element(By.ID, "key")
    key_box.clear()
    key_box.send_keys(api_key)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(lambda: d.find_element(By.ID, "jobs"), "the jobs table")
    assert d.execute_script("return localStorage.getItem('tuneforge.apiKey')") == api_key

    # Files: upload with the validation report, then see it listed; a broken file gets the line number.
    data = tmp_path / "shakespeare.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in shakespeare_rows(48)) + "\n")
    d.find_element(By.LINK_TEXT, "Files").click()
    wait_for(lambda: d.find_element(By.ID, "upload-file"), "the upload form").send_keys(str(data))
    d.find_element(By.CSS_SELECTOR, "#upload button").click()
    report = wait_for(lambda: "Uploaded file-" in (t := d.find_element(By.ID, "upload-report").text) and t, "report")
    assert "jsonl, 48 rows" in report and "text" in report
    file_id = report.split("Uploaded ")[1].split()[0]
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-file='{file_id}']"), "the file in the list")
    shot(d, "files")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    d.find_element(By.ID, "upload-file").send_keys(str(bad))
    d.find_element(By.CSS_SELECTOR, "#upload button").click()
    wait_for(lambda: "line 2" in d.find_element(By.ID, "alert").text, "the line-numbered error")

    # A job started from the API appears on the Jobs page, and its curve grows live on the Job page.
    body = {"model": tiny_model, "training_file": file_id, "seed": 1, "metadata": {"suite": "ui"}}
    r = api.post("/v1/fine_tuning/jobs", json={**body, "training": {"max_steps": 12, "learning_rate": 0.002}})
    assert r.status_code == 200, r.text
    first = r.json()["id"]
    d.find_element(By.LINK_TEXT, "Jobs").click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-job='{first}']"), "the new job in the list")
    wait_for(lambda: d.find_element(By.LINK_TEXT, first), "the job's link").click()
    wait_for(lambda: status_of(d) == "running" and points(d) >= 1, "the job running with a point", timeout=120)
    seen = {points(d)}
    wait_for(lambda: seen.add(points(d)) or status_of(d) == "succeeded", "the job to succeed", timeout=180)
    assert len(seen) >= 2 and max(seen) > min(seen), seen  # the curve grew over the stream, no reload
    series = api.get(f"/v1/fine_tuning/jobs/{first}/metrics").json()["data"]
    assert points(d) == len([p for p in series if p["loss"] is not None])
    # The step-0 baseline is on the eval loss chart, and token accuracy (extra.train_mean_token_accuracy) renders.
    assert series[0]["step"] == 0 and series[0]["eval_loss"] is not None
    assert points(d, "Eval loss") == len([p for p in series if p["eval_loss"] is not None]) >= 1
    assert (
        "at step 0"
        in d.find_element(By.CSS_SELECTOR, "figure[data-metric='Eval loss'] svg").get_attribute("aria-label")
        or points(d, "Eval loss") >= 2
    )
    acc = [p for p in series if (p.get("extra") or {}).get("train_mean_token_accuracy") is not None]
    assert acc and points(d, "Token accuracy") == len(acc)
    d.find_element(By.ID, "logscale").click()
    shot(d, "job")

    # A second job is paused, resumed and cancelled from the UI.
    r = api.post("/v1/fine_tuning/jobs", json={**body, "training": {"max_steps": 5000, "learning_rate": 0.001}})
    second = r.json()["id"]
    d.get(f"{live_api}/ui/index.html#/jobs/{second}")  # a full page load, so the stream starts afresh
    wait_for(lambda: second in d.find_element(By.TAG_NAME, "h1").text, "the second job's page")
    wait_for(lambda: status_of(d) == "running", "the second job running", timeout=120)
    wait_for(lambda: not d.find_element(By.ID, "job-resume").is_enabled(), "resume disabled while running")
    wait_for(lambda: d.find_element(By.ID, "job-pause").click() or True, "the pause button")  # the head re-renders
    wait_for(lambda: status_of(d) == "paused", "the pause to land", timeout=90)
    assert api.get(f"/v1/fine_tuning/jobs/{second}").json()["status"] == "paused"
    wait_for(lambda: d.find_element(By.ID, "job-resume").is_enabled(), "resume enabled")
    wait_for(lambda: d.find_element(By.ID, "job-resume").click() or True, "the resume button")
    wait_for(lambda: status_of(d) == "running", "the resumed job running again", timeout=120)
    wait_for(lambda: d.find_element(By.ID, "job-cancel").click() or True, "the cancel button")
    wait_for(lambda: status_of(d) == "cancelled", "the cancel to land", timeout=90)
    assert api.get(f"/v1/fine_tuning/jobs/{second}").json()["status"] == "cancelled"

    # Compare: pick both on the Jobs page; curves overlaid, differing spec fields marked.
    d.get(f"{live_api}/ui/#/jobs?metadata=suite%3Dui")
    wait_for(lambda: d.find_element(By.TAG_NAME, "h1").text == "Jobs", "the jobs page")
    for job in (first, second):
        wait_for(lambda j=job: d.find_element(By.CSS_SELECTOR, f"input[value='{j}']"), job).click()  # type: ignore[misc]
    shot(d, "jobs")
    d.find_element(By.ID, "compare-selected").click()
    differs = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#spec-diff tr[data-differs]"), "the spec diff")
    assert any("training.learning_rate" in row.text for row in differs)
    assert not any("training.seed" in row.text or row.text.startswith("model ") for row in differs)
    shot(d, "compare")

    # A two-trial sweep trains while the chat below runs.
    sweep_body = {
        "model": tiny_model,
        "training_file": file_id,
        "seed": 1,
        "training": {"max_steps": 4, "batch_size": 8},
        "search_space": {"training.learning_rate": {"values": [0.002, 0.0005]}},
        "strategy": "grid",
        "objective": {"metric": "eval_loss", "direction": "minimize"},
    }
    r = api.post("/v1/fine_tuning/sweeps", json=sweep_body)
    assert r.status_code == 200, r.text
    sweep = r.json()["id"]

    # Models: the base model and the first job's fine-tuned model are listed; chat with the latter, streamed.
    ft = api.get(f"/v1/fine_tuning/jobs/{first}").json()["fine_tuned_model"]
    d.find_element(By.LINK_TEXT, "Models").click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-model='{ft}']"), "the fine-tuned model listed")
    assert "LlamaForCausalLM" in d.find_element(By.CSS_SELECTOR, f"tr[data-model='{tiny_model}']").text
    Select(d.find_element(By.ID, "chat-model")).select_by_value(ft)
    d.find_element(By.ID, "chat-input").send_keys("Speak, friend.")
    d.find_element(By.ID, "chat-send").click()
    wait_for(lambda: "tokens" in d.find_element(By.ID, "chat-status").text, "the streamed reply", timeout=180)
    reply = d.find_element(By.CSS_SELECTOR, "#chat-log li.assistant .content").text
    assert reply and not reply.startswith("Error"), reply
    shot(d, "models")
    # A bad request shows the API's error envelope message, and the panel keeps working.
    d.execute_script(
        "const m = document.getElementById('chat-max-tokens'); m.removeAttribute('max'); m.value = '1000000';"
    )
    d.find_element(By.ID, "chat-input").send_keys("Again.")
    d.find_element(By.ID, "chat-send").click()
    wait_for(lambda: "max_tokens" in d.find_element(By.ID, "alert").text, "the max_tokens error")
    assert "Error:" in d.find_elements(By.CSS_SELECTOR, "#chat-log li.failed")[-1].text

    # Sweeps: listed; its page shows both trials, the best one, and a point per trial on the plot.
    d.find_element(By.LINK_TEXT, "Sweeps").click()
    wait_for(
        lambda: d.find_element(By.LINK_TEXT, sweep).click() or True, "the sweep in the list"
    )  # re-rendered every 5 s
    wait_for(lambda: d.find_element(By.ID, "sweep-status").text == "succeeded", "the sweep to finish", timeout=300)
    assert len(d.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 2
    best = api.get(f"/v1/fine_tuning/sweeps/{sweep}").json()["best_trial"]
    assert f"Trial {best['number']}" in d.find_element(By.ID, "best-trial").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#sweep-plots circle[data-trial]")) == 2
    assert not d.find_element(By.ID, "sweep-cancel").is_enabled()
    shot(d, "sweep")

    # Nothing was fetched from another origin on any page; sign out forgets the key.
    assert off_origin(d, live_api) == []
    d.find_element(By.ID, "signout").click()
    wait_for(lambda: d.find_element(By.ID, "key"), "the sign-in form again")
    assert d.execute_script("return localStorage.getItem('tuneforge.apiKey')") is None
    print(f"browser test took {time.monotonic() - started:.1f} s")

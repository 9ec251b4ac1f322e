"""The dashboard at /ui/ in real headless Chromium (Selenium), against real `tuneforge api`,
`tuneforge worker` and `tuneforge worker --queue inference` processes training the tiny Llama.
Screenshots of each page go to docs/img/.

Every wait follows what it waits for, never the machine's speed: a job is looked at while it is
still training (it is far too long to finish, and is cancelled from the page once seen), and a wait
on a job restarts its deadline whenever the job moves (status or step), so a loaded machine only
makes the test slower and an idle one cannot race past a state the test expected to see."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import ROOT, shakespeare_rows, worker_log

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.action_chains import ActionChains  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import Select  # noqa: E402

IMG = ROOT / "docs" / "img"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER), reason="needs Debian's chromium + chromium-driver (scripts/services.sh)"
)
TERMINAL = ("succeeded", "failed", "cancelled")


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


def wait_for(
    check: Callable[[], Any], what: str, timeout: float = 30, progress: Callable[[], Any] | None = None
) -> Any:
    """Until `check()` is truthy. With `progress`, the deadline restarts whenever its value changes
    (a job's status and step), so a slow machine gets more time and a stuck job still fails."""
    end = time.monotonic() + timeout
    last, asked = None, 0.0
    while time.monotonic() < end:
        try:
            if value := check():
                return value
        except Exception:  # noqa: BLE001 - elements come and go while the page re-renders
            pass
        if progress is not None and time.monotonic() - asked > 1:  # the API is asked once a second
            asked = time.monotonic()
            if (now := progress()) != last:
                last, end = now, time.monotonic() + timeout
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{worker_log()[-1500:]}")


def off_origin(driver: Any, origin: str) -> list[str]:
    """Every resource the page loaded (scripts, styles, fetches, images) that is not from `origin`."""
    names = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    return [n for n in names if not (n.startswith(origin + "/") or n.startswith(("data:", "blob:")))]


def shot(driver: Any, name: str) -> None:
    """The whole page (up to 2400 px tall), not just the window."""
    IMG.mkdir(parents=True, exist_ok=True)
    height, frame = driver.execute_script(
        "window.scrollTo(0, 0); return [document.documentElement.scrollHeight, window.outerHeight - window.innerHeight]"
    )
    driver.set_window_size(1280, max(900, min(int(height) + int(frame), 2400)))
    try:
        driver.save_screenshot(str(IMG / f"ui-{name}.png"))
    finally:
        driver.set_window_size(1280, 900)


# What a keyboard or screen reader user needs from every page: each control labelled, each table
# with a caption and header cells, each chart an image with a text alternative, no nameless button
# or link, one h1.
AUDIT = """
const problems = [];
for (const el of document.querySelectorAll('input, select, textarea'))
  if (!(el.labels && el.labels.length) && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
    problems.push('unlabelled ' + el.outerHTML.slice(0, 80));
for (const t of document.querySelectorAll('main table')) {
  if (!t.caption || !t.caption.textContent.trim()) problems.push('no caption: ' + t.outerHTML.slice(0, 60));
  if (!t.querySelector('thead th')) problems.push('table without header cells: ' + t.id);
}
for (const svg of document.querySelectorAll('main svg'))
  if (svg.getAttribute('role') !== 'img' || !svg.getAttribute('aria-label')) problems.push('chart without a text');
for (const el of document.querySelectorAll('button, a[href]'))
  if (!el.textContent.trim() && !el.getAttribute('aria-label')) problems.push('nameless ' + el.outerHTML.slice(0, 80));
if (document.querySelectorAll('main h1').length !== 1) problems.push('not one h1');
return problems;
"""


def click(driver: Any, by: str, value: str, what: str) -> None:
    """Find and click in one try, retried: list pages re-render their rows every few seconds, so an
    element found a moment before may be gone when it is clicked."""
    wait_for(lambda: driver.find_element(by, value).click() or True, what)


def audit(driver: Any) -> None:
    assert driver.execute_script(AUDIT) == [], driver.current_url


def status_of(driver: Any) -> str:
    return str(driver.find_element(By.ID, "job-status").text)


# The page is fed by a live stream, so a table or a path found in one WebDriver call can be replaced
# before the next one reads it (a StaleElementReferenceException in CI). What changes under the
# stream is therefore read in one script, which runs between two of the page's own event handlers.
# (The page also updates its lists and tables in place, keeping the nodes that did not change, and a
# page's late answers never draw over the next page: lib/dom.js patch(), lib/api.js.)
POINTS = """
const path = document.querySelector(`figure[data-metric='${arguments[0]}'] path[data-points]`);
return path ? Number(path.dataset.points) : 0;
"""
SAMPLES = """
const caption = document.querySelector('#samples-table caption');
const steps = [...document.querySelectorAll('#samples-table thead th[data-step]')].map(c => Number(c.dataset.step));
const rows = [...document.querySelectorAll('#samples-table tbody tr')].map(r => ({
  index: Number(r.dataset.index),
  prompt: r.querySelector('th').textContent,
  outputs: [...r.querySelectorAll('td')].map(c => c.textContent),
}));
return {caption: caption ? caption.textContent : '', steps, rows};
"""
# Each page rendered (or re-rendered) in full counts up main's data-renders (app.js, route()).
RENDERS = "return Number(document.getElementById('main').dataset.renders || 0)"


def points(driver: Any, metric: str = "Loss") -> int:
    return int(driver.execute_script(POINTS, metric))


def samples_shown(driver: Any) -> dict[str, Any]:
    """The samples table at one moment: its caption, its columns' steps (the first sampled step, then
    the one beside it) and, per prompt, the prompt and the outputs under those steps."""
    return dict(driver.execute_script(SAMPLES))


def sample_steps(driver: Any) -> list[int]:
    return [int(step) for step in samples_shown(driver)["steps"]]


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
    phases: list[str] = []

    last = [started]

    def phase(name: str) -> None:
        now = time.monotonic()
        phases.append(f"{name} {now - last[0]:.1f} s")
        print(phases[-1], flush=True)
        last[0] = now

    def job_moves(job_id: str) -> Callable[[], Any]:
        def now() -> Any:
            job = api.get(f"/v1/fine_tuning/jobs/{job_id}").json()
            return job["status"], job["attempt"], job["progress"]["step"]

        return now

    # `/` redirects to the dashboard, which asks for a key; a wrong one shows the API's message.
    d.get(live_api + "/")
    assert d.current_url.startswith(live_api + "/ui/")
    key_box = wait_for(lambda: d.find_element(By.ID, "key"), "the sign-in form")
    audit(d)
    shot(d, "signin")
    key_box.send_keys("tf-not-a-key")
    key_box.send_keys(Keys.ENTER)  # the form submits from the keyboard
    message = wait_for(lambda: d.find_element(By.ID, "alert").text, "the error message")
    assert message == "Invalid or revoked API key.", message  # the API's error envelope
    assert d.find_element(By.ID, "key").get_attribute("aria-invalid") == "true"
    key_box = d.find_element(By.ID, "key")
    key_box.clear()
    key_box.send_keys(api_key)
    d.find_element(By.CSS_SELECTOR, "#signin button").click()
    wait_for(lambda: d.find_element(By.ID, "jobs"), "the jobs table")
    assert d.execute_script("return localStorage.getItem('tuneforge.apiKey')") == api_key
    # Keyboard and screen reader: the page's heading has the focus, the skip link comes first.
    wait_for(lambda: d.switch_to.active_element.tag_name == "h1", "the focus on the page's heading")
    ActionChains(d).send_keys(Keys.TAB).perform()  # from the heading, on into the filter form
    assert d.switch_to.active_element.get_attribute("name") == "status"
    audit(d)
    first_link = d.execute_script("return document.querySelector('a, button, input, select, textarea')")
    assert first_link.get_attribute("class") == "skip" and first_link.get_attribute("href").endswith("#main")
    phase("sign in")

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
    audit(d)
    shot(d, "files")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": \n')
    d.find_element(By.ID, "upload-file").send_keys(str(bad))
    d.find_element(By.CSS_SELECTOR, "#upload button").click()
    wait_for(lambda: "line 2" in d.find_element(By.ID, "alert").text, "the line-numbered error")
    phase("files")

    # A job started from the API appears on the Jobs page. It is far too long to finish (it is
    # cancelled below), so the page sees it training however fast the machine is; it evaluates and
    # samples every 2 steps.
    body = {"model": tiny_model, "training_file": file_id, "seed": 1, "metadata": {"suite": "ui"}}
    training = {"max_steps": 100_000, "learning_rate": 0.001, "eval_every": 2, "batch_size": 2, "max_seq_length": 64}
    samples: dict[str, Any] = {"prompts": ["To be, or not", "Now is the"], "from_validation": 0, "max_new_tokens": 4}
    r = api.post("/v1/fine_tuning/jobs", json={**body, "training": training, "samples": samples})
    assert r.status_code == 200, r.text
    job = r.json()["id"]
    d.find_element(By.LINK_TEXT, "Jobs").click()
    click(d, By.LINK_TEXT, job, "the new job in the list")
    moves = job_moves(job)

    # Its curves grow and its samples arrive over the stream: the chart grid and the samples box are
    # marked, and the marks must survive (the page is not reloaded or re-rendered, only fed).
    wait_for(lambda: status_of(d) == "running" and points(d) >= 1, "the job training, with a point", 60, moves)
    d.execute_script("for (const id of ['charts', 'samples']) document.getElementById(id).dataset.probe = 'kept'")
    kept = "return ['charts', 'samples'].every(id => document.getElementById(id).dataset.probe === 'kept')"
    grown_from = points(d)
    wait_for(lambda: points(d) > grown_from, "the loss curve to grow", 60, moves)
    base_then = sample_steps(d)
    later = max(base_then, default=0)
    wait_for(lambda: len(s := sample_steps(d)) == 2 and s[0] == 0 and s[1] > later, "new samples", 60, moves)
    assert d.execute_script(kept), "the page was re-rendered instead of fed by the stream"
    # The table is read at one moment and the API after it, so every step shown is already listed.
    table = samples_shown(d)
    listed = api.get(f"/v1/fine_tuning/jobs/{job}/samples").json()["data"]
    by = {(s["step"], s["index"]): s for s in listed}
    assert len(table["rows"]) == len(samples["prompts"])
    for row in table["rows"]:
        i = row["index"]
        assert row["prompt"] == by[(0, i)]["prompt"]
        assert row["outputs"] == [by[(step, i)]["output"] for step in table["steps"]]
    assert "base model" in table["caption"]
    series = api.get(f"/v1/fine_tuning/jobs/{job}/metrics").json()["data"]
    assert series[0]["step"] == 0 and series[0]["eval_loss"] is not None  # the step-0 baseline
    assert points(d, "Eval loss") >= 1 and points(d, "Token accuracy") >= 1
    audit(d)
    d.find_element(By.ID, "logscale").click()  # the toggle is remembered: turned off again for the screenshot
    label = "return document.querySelector(\"figure[data-metric='Loss'] svg\").getAttribute('aria-label')"
    assert "(log scale)" in d.execute_script(label)
    d.find_element(By.ID, "logscale").click()
    phase("job: curve and samples live")

    # Pause it with the page's buttons (real <button>s, updated in place). While it is paused a
    # two-trial sweep is posted, then the job is resumed: the trials train first, and the job's
    # resumed run loads while the chat below runs on the inference worker.
    assert not d.find_element(By.ID, "job-resume").is_enabled()
    d.find_element(By.ID, "job-pause").click()
    wait_for(lambda: status_of(d) == "paused", "the pause to land", 60, moves)
    assert api.get(f"/v1/fine_tuning/jobs/{job}").json()["status"] == "paused"
    sweep_body = {
        **body,
        "training": {"max_steps": 2, "batch_size": 2, "max_seq_length": 64},
        "samples": {"from_validation": 0},
        "search_space": {"training.learning_rate": {"values": [0.002, 0.0005]}},
        "strategy": "grid",
        "max_parallel": 2,
        "objective": {"metric": "eval_loss", "direction": "minimize"},
    }
    r = api.post("/v1/fine_tuning/sweeps", json=sweep_body)
    assert r.status_code == 200, r.text
    sweep = r.json()["id"]
    wait_for(lambda: d.find_element(By.ID, "job-resume").is_enabled(), "resume enabled")
    d.find_element(By.ID, "job-resume").click()
    wait_for(
        lambda: (
            status_of(d) in ("queued", "running")
            and d.find_element(By.ID, "job-pause").is_enabled()
            and not d.find_element(By.ID, "job-resume").is_enabled()
        ),
        "the job resumed, Pause enabled again",
    )
    phase("job: pause, resume")

    # Sweeps: listed; its page shows both trials, the best one and a point per trial.
    d.find_element(By.LINK_TEXT, "Sweeps").click()
    click(d, By.LINK_TEXT, sweep, "the sweep in the list")

    def sweep_moves() -> Any:
        return [(t["status"], t["step"]) for t in api.get(f"/v1/fine_tuning/sweeps/{sweep}/trials").json()["data"]]

    wait_for(lambda: d.find_element(By.ID, "sweep-status").text == "succeeded", "the sweep to finish", 60, sweep_moves)
    assert len(d.find_elements(By.CSS_SELECTOR, "#trials tbody tr")) == 2
    best = api.get(f"/v1/fine_tuning/sweeps/{sweep}").json()["best_trial"]
    assert f"Trial {best['number']}" in d.find_element(By.ID, "best-trial").text
    assert len(d.find_elements(By.CSS_SELECTOR, "#sweep-plots circle[data-trial]")) == 2
    assert not d.find_element(By.ID, "sweep-cancel").is_enabled()
    audit(d)
    shot(d, "sweep")
    phase("sweep")

    # Models: from the best trial, chat with its fine-tuned model; the reply streams in.
    ft = best["fine_tuned_model"]
    d.find_element(By.PARTIAL_LINK_TEXT, f"Chat with {ft}").click()
    wait_for(lambda: d.find_elements(By.CSS_SELECTOR, f"tr[data-model='{ft}']"), "the fine-tuned model listed")
    assert "LlamaForCausalLM" in d.find_element(By.CSS_SELECTOR, f"tr[data-model='{tiny_model}']").text
    assert Select(d.find_element(By.ID, "chat-model")).first_selected_option.get_attribute("value") == ft
    d.find_element(By.ID, "chat-input").send_keys("Speak, friend.")
    d.find_element(By.ID, "chat-send").click()
    wait_for(lambda: "tokens" in d.find_element(By.ID, "chat-status").text, "the streamed reply", 120)
    reply = d.find_element(By.CSS_SELECTOR, "#chat-log li.assistant .content").text
    assert reply and not reply.startswith("Error"), reply
    audit(d)
    shot(d, "models")
    # A bad request shows the API's error envelope message, and the panel keeps working.
    d.execute_script(
        "const m = document.getElementById('chat-max-tokens'); m.removeAttribute('max'); m.value = '1000000';"
    )
    d.find_element(By.ID, "chat-input").send_keys("Again.")
    d.find_element(By.ID, "chat-send").click()
    wait_for(lambda: "max_tokens" in d.find_element(By.ID, "alert").text, "the max_tokens error")
    assert "Error:" in d.find_elements(By.CSS_SELECTOR, "#chat-log li.failed")[-1].text
    phase("chat")

    # Back on the job's page (a fresh load) once the resumed run trains: cancel it from the keyboard.
    d.get(f"{live_api}/ui/#/jobs/{job}")
    wait_for(lambda: status_of(d) == "running", "the resumed job running again", 60, moves)
    d.find_element(By.ID, "job-cancel").send_keys(Keys.ENTER)
    wait_for(lambda: status_of(d) == "cancelled", "the cancel to land", 60, moves)
    assert api.get(f"/v1/fine_tuning/jobs/{job}").json()["status"] == "cancelled"
    wait_for(  # and said once in the polite live region
        lambda: "cancelled" in d.find_element(By.ID, "announce").get_attribute("textContent"), "the announcement"
    )
    wait_for(lambda: len(sample_steps(d)) == 2, "the samples after a fresh load")
    shot(d, "job")
    phase("job: cancel")

    # Compare: tick the cancelled job and both trials on the (filtered) Jobs page; the ticks survive
    # the list's refresh, which keeps the rows that did not change (all three are finished) as they
    # are; curves overlaid, the differing spec fields marked.
    trials = [t["job_id"] for t in api.get(f"/v1/fine_tuning/sweeps/{sweep}/trials").json()["data"]]
    d.get(f"{live_api}/ui/#/jobs?metadata=suite%3Dui")
    for j in (job, *trials):
        click(d, By.CSS_SELECTOR, f"input[value='{j}']", j)
    row = f"document.querySelector(\"tr[data-job='{job}']\")"
    d.execute_script(f"{row}.probe = 'kept'")  # a property of that node, not an attribute: it stays unchanged
    renders = d.execute_script(RENDERS)
    wait_for(lambda: d.execute_script(RENDERS) > renders, "a refresh")
    assert len(d.find_elements(By.CSS_SELECTOR, "input[name=pick]:checked")) == 3
    assert d.execute_script(f"return {row}.probe") == "kept", "the refresh replaced a row that did not change"
    shot(d, "jobs")
    d.find_element(By.ID, "compare-selected").click()
    differs = wait_for(lambda: d.find_elements(By.CSS_SELECTOR, "#spec-diff tr[data-differs]"), "the spec diff")
    assert any("training.learning_rate" in row.text for row in differs)
    assert not any("training.seed" in row.text or row.text.startswith("model ") for row in differs)
    assert len(d.find_elements(By.CSS_SELECTOR, "figure[data-metric='Loss'] path[data-points]")) == 3
    audit(d)
    shot(d, "compare")
    phase("compare")

    # Nothing was fetched from another origin on any page; sign out forgets the key.
    assert off_origin(d, live_api) == []
    d.find_element(By.ID, "signout").click()
    wait_for(lambda: d.find_element(By.ID, "key"), "the sign-in form again")
    assert d.execute_script("return localStorage.getItem('tuneforge.apiKey')") is None
    print(f"browser test took {time.monotonic() - started:.1f} s: " + ", ".join(phases))


def test_a_reinforcement_jobs_page_shows_its_rewards(browser: Any, live_api: str, api_key: str) -> None:
    """A finished reinforcement job (its rows written as the worker writes them): the reward curves, and
    each evaluation's graded samples, the latest first, another one picked from the keyboard."""
    from tests.helpers import insert_job, make_spec, org_id_of
    from tuneforge.app.db.engine import session_scope
    from tuneforge.app.jobs import repository

    grader = {"type": "string_check", "name": "has_e", "input": "{{sample.output_text}}",
              "reference": "e", "operation": "ilike"}  # fmt: skip
    spec = make_spec(method={"type": "reinforcement", "reinforcement": {"grader": grader}})
    job = insert_job(org_id_of("acme"), "succeeded", spec=spec.model_dump(mode="json"))
    with session_scope() as s:
        for step, (reward, output) in enumerate([(0.25, "hmm"), (1.0, "hello there")]):
            repository.add_event(
                s, job, f"Evaluation samples (greedy), with their rewards: mean reward {reward:.4f} over 4 prompts",
                data={"reward": reward, "samples": [{"prompt": "Say something", "output": output, "reward": reward}]},
            )  # fmt: skip
            repository.upsert_metrics(s, job, [{"step": step, "eval_loss": -reward, "extra": {"valid_reward": reward}}])
        # The steps' own rewards (their sampled completions')
        repository.upsert_metrics(s, job, [{"step": n, "loss": 0.1, "extra": {"reward": n / 4}} for n in (1, 2)])
    d = browser
    d.get(f"{live_api}/ui/")
    d.execute_script("localStorage.setItem('tuneforge.apiKey', arguments[0])", api_key)
    d.get(f"{live_api}/ui/#/jobs/{job}")
    summary = wait_for(lambda: d.find_element(By.ID, "rewards-summary").text, "the rewards summary")
    assert "0.250 (before training)" in summary and "1.000 (latest of 2 evaluations)" in summary, summary
    assert d.find_element(By.CSS_SELECTOR, "#rewards-table tbody td.sample").text == "hello there"
    for chart in ("Reward (sampled)", "Eval reward (greedy)"):
        assert d.find_elements(By.CSS_SELECTOR, f"figure[data-metric='{chart}'] path[data-points]"), chart
    picker = d.find_element(By.ID, "rewards-evaluation")
    picker.send_keys(Keys.DOWN)  # from "the latest" to the next option: evaluation 1, before training
    wait_for(lambda: d.find_element(By.CSS_SELECTOR, "#rewards-table tbody td.sample").text == "hmm", "evaluation 1")
    assert d.find_element(By.CSS_SELECTOR, "#rewards-table tbody td.reward").text == "0.250"
    audit(d)
    shot(d, "job-rewards")

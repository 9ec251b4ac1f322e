"""What `tuneforge demo` prints, from the API's answers: the before/after pairs and the lines."""

from __future__ import annotations

from tuneforge.app.demo import report
from tuneforge.app.demo.plan import REAL, TINY
from tuneforge.app.demo.sms_task import score
from tuneforge.app.jobs.request import JobCreate


def _sample(step: int, index: int, output: str, prompt: str = "p") -> dict[str, object]:
    return {"step": step, "index": index, "prompt": f"{prompt}{index}", "output": output, "tokens": 1}


def test_each_prompt_pairs_its_step_zero_output_with_its_last() -> None:
    samples = [
        _sample(0, 0, "I think"),
        _sample(0, 1, "Sure!"),
        _sample(10, 0, "sp"),
        _sample(20, 0, "spam"),
        _sample(20, 1, "ham"),
        _sample(20, 2, "only after a resume"),  # no step 0 for this one: nothing to compare
    ]
    pairs = report.sample_pairs(samples)
    assert [(p.index, p.before, p.after, p.last_step) for p in pairs] == [
        (0, "I think", "spam", 20),
        (1, "Sure!", "ham", 20),
    ]
    rows = [{"text": "p0", "label": "spam"}]
    lines = report.sample_lines(pairs, rows)
    assert lines[:3] == ["  [spam] 'p0'", "      before: 'I think'", "      after:  'spam'"]
    assert lines[3] == "  'p1'"  # a prompt that is not one of the rows is shown as itself


def test_lines_are_short_and_flat() -> None:
    assert report.one_line("a\n  b", 10) == "'a b'"
    assert report.one_line("x" * 100, 10) == repr("x" * 9 + "…")
    assert report.duration(59.6) == "1m 00s" and report.duration(7.2) == "7s" and report.duration(185) == "3m 05s"
    before, after = score(["Sure, here", "ham"], ["spam", "ham"]), score(["spam", "ham"], ["spam", "ham"])
    assert report.accuracy_line(before, after) == (
        "50.0% -> 100.0% on 2 held-out messages (spam F1 0.00 -> 1.00; answers that were not spam/ham: 1 -> 0)"
    )


def test_both_plans_post_valid_jobs_that_sample_by_default() -> None:
    for plan in (REAL, TINY):
        spec = JobCreate.model_validate(plan.job_body("file-a", "file-b")).resolve()
        assert spec.training.max_steps == plan.steps and spec.training.eval_every == plan.steps
        assert spec.samples.from_validation == 2  # the default: the demo shows it, it does not ask for it
    assert REAL.with_sizes(8, None, 1) == REAL.__class__(**{**REAL.__dict__, "n_train": 8, "steps": 1})

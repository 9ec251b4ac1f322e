"""Sample generations: greedy completions at step 0, at each evaluation and at the end, drawn from the
spec's prompts and the validation split, without changing what the run trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contract.spec import SpecError
from tests.helpers import make_spec, shakespeare_rows, sharegpt_row
from worker.training.model import load_tokenizer
from worker.training.reporter import MemoryReporter
from worker.training.run import run
from worker.training.samples import sample_prompts


def test_samples_at_step_zero_each_eval_and_the_end(model_dir: Path, tmp_path: Path) -> None:
    spec = make_spec(
        training={"batch_size": 8, "learning_rate": 1e-2, "max_steps": 5, "eval_every": 2},
        samples={"prompts": ["First Citizen:"], "from_validation": 1, "max_new_tokens": 6},
    )
    rep = MemoryReporter()
    run(spec, model_dir, shakespeare_rows(40), None, tmp_path, rep)

    assert [step for step, _ in rep.samples_by_step] == [0, 2, 4, 5]
    for _, items in rep.samples_by_step:
        assert items[0]["prompt"] == "First Citizen:"
        assert len(items) == 2 and all(0 < i["tokens"] <= 6 and isinstance(i["output"], str) for i in items)
    # The text row's prompt is its first part, and training changed what the model says.
    assert items[1]["prompt"] and len(items[1]["prompt"]) <= 200
    assert rep.samples_by_step[0][1] != rep.samples_by_step[-1][1]


def test_sampling_leaves_training_and_resume_bit_for_bit(model_dir: Path, tmp_path: Path) -> None:
    """The same run with and without samples trains the same adapter; samples resume after a stop."""
    t = {"batch_size": 8, "learning_rate": 1e-2, "max_steps": 4, "save_every": 2, "eval_every": 2}
    rows = shakespeare_rows(40)
    plain = run(
        make_spec(training=t, samples={"from_validation": 0}), model_dir, rows, None, tmp_path / "a", MemoryReporter()
    )
    spec = make_spec(training=t, samples={"from_validation": 2, "max_new_tokens": 4})
    first = MemoryReporter(stop_at_step=2)
    with pytest.raises(Exception):  # noqa: B017 - StopTraining
        run(spec, model_dir, rows, None, tmp_path / "b", first)
    rep = MemoryReporter()
    resumed = run(spec, model_dir, rows, None, tmp_path / "b", rep)
    assert [s for s, _ in first.samples_by_step] == [0, 2]
    assert [s for s, _ in rep.samples_by_step] == [4]  # no second "before" on resume
    a = load_file(plain.adapter_dir / "adapter_model.safetensors")
    b = load_file(resumed.adapter_dir / "adapter_model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_chat_rows_give_the_conversation_up_to_the_last_assistant_turn(model_dir: Path) -> None:
    tok = load_tokenizer(model_dir)
    spec = make_spec(samples={"from_validation": 1})
    [p] = sample_prompts(spec, tok, [{"messages": sharegpt_as_messages()}])
    expected = tok.apply_chat_template(sharegpt_as_messages()[:2], add_generation_prompt=True, tokenize=False)
    assert p.text == expected and "The citizen speaks." not in p.text


def sharegpt_as_messages() -> list[dict[str, str]]:
    row = sharegpt_row(3)["conversations"]
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    return [{"role": roles[m["from"]], "content": m["value"]} for m in row]


def test_samples_block_is_causal_lm_only() -> None:
    with pytest.raises((SpecError, ValueError), match="causal_lm only"):
        make_spec(task="regression", samples={"from_validation": 3})
    assert make_spec(task="regression").samples.from_validation == 0  # the default is off, so harmless there

"""Sample generations: greedy completions at step 0, at each evaluation and at the end, drawn from the
spec's prompts and the validation split, without changing what the run trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.helpers import make_spec, shakespeare_rows, sharegpt_row
from tuneforge.contract.spec import SpecError
from tuneforge.worker.training.model import load_tokenizer
from tuneforge.worker.training.reporter import MemoryReporter
from tuneforge.worker.training.run import run
from tuneforge.worker.training.samples import SamplePrompt, generate_samples, sample_prompts
from tuneforge.worker.training.setup import prepare_model


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


def test_two_validation_prompts_by_default_for_causal_lm_only(model_dir: Path) -> None:
    from tuneforge.app.jobs.request import JobCreate

    body = {"model": "tiny-llama", "training_file": "file-x", "seed": 3}
    assert JobCreate.model_validate(body).resolve().samples.from_validation == 2  # (make_spec turns it off)
    tok = load_tokenizer(model_dir)
    rows = shakespeare_rows(5)
    assert [p.text for p in sample_prompts(JobCreate.model_validate(body).resolve(), tok, rows)] == [
        r["text"][: min(200, len(r["text"]) // 2)] for r in rows[:2]
    ]
    with pytest.raises((SpecError, ValueError), match="causal_lm only"):
        make_spec(task="regression", samples={"from_validation": 3})
    # The default reaches other tasks too, and takes nothing there.
    regression = JobCreate.model_validate({**body, "task": "regression"}).resolve()
    assert regression.samples.from_validation == 2 and sample_prompts(regression, tok, rows) == []


def test_generation_reuses_keys_and_values_although_training_turns_the_cache_off(model_dir: Path) -> None:
    """Each new token is one position through the model, not the whole sequence again."""
    spec = make_spec()
    model = prepare_model(spec, model_dir, None, torch.device("cpu"), MemoryReporter())
    assert model.config.use_cache is False  # type: ignore[union-attr]  # as training leaves it
    seen: list[int] = []
    embed = model.get_input_embeddings()  # type: ignore[operator]  # prepare_model returns an nn.Module
    embed.register_forward_pre_hook(lambda _m, args: seen.append(args[0].shape[1]) and None)  # type: ignore[func-returns-value]
    prompt = SamplePrompt("x", list(range(5, 17)))
    [item] = generate_samples(model, [prompt], load_tokenizer(model_dir), 4, 64, torch.device("cpu"))
    assert seen[0] == 12 and seen[1:] == [1] * (len(seen) - 1) and len(seen) == item["tokens"]
    assert model.training  # left in train mode for the next step

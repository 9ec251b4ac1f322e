"""The Ollama Modelfile's TEMPLATE, read off a Jinja chat template: the pieces replay the Jinja template
exactly, the BOS the runtime adds is left out, and a template of another shape gets no TEMPLATE."""

from __future__ import annotations

import json
from pathlib import Path

from tuneforge.app.jobs.modelfile import modelfile, pieces_of

SMOLLM2 = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3 = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] | trim }}<|eot_id|>{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
NO_SYSTEM = (  # Gemma's shape: a system message is an error
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n{% endfor %}"
)


def _folder(tmp_path: Path, template: str, **config: object) -> Path:
    (tmp_path / "chat_template.jinja").write_text(template)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    return tmp_path


def test_chatml_with_a_default_system_prompt(tmp_path: Path) -> None:
    folder = _folder(tmp_path, SMOLLM2, bos_token="<|im_start|>", eos_token="<|im_end|>")
    text = modelfile(folder, "smollm2", model_file="m.gguf")
    assert text.splitlines()[1] == "FROM ./m.gguf"
    assert 'PARAMETER stop "<|im_end|>"' in text
    template = text.split('TEMPLATE """', 1)[1].split('"""', 1)[0]
    # Without a system message the default one is written; with one, it is not.
    assert "{{ else }}<|im_start|>system\nYou are a helpful AI assistant named SmolLM" in template
    assert template.endswith("{{ end }}{{ end }}<|im_start|>assistant\n")
    assert '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n' in template
    # (the SmolLM2 BOS is <|im_start|>, but its tokenizer adds none: it stays in the template)


def test_llama3_leaves_the_bos_to_the_runtime(tmp_path: Path) -> None:
    config = {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "add_bos_token": True}
    pieces = pieces_of(LLAMA3, config)
    assert pieces is not None
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert pieces.render(messages) == (
        "<|start_header_id|>system<|end_header_id|>\n\nS<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nU"
        "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    assert 'PARAMETER stop "<|eot_id|>"' in modelfile(_folder(tmp_path, LLAMA3, **config), "llama", model_file="x")


def test_a_template_of_another_shape_gets_no_template_line(tmp_path: Path) -> None:
    text = modelfile(_folder(tmp_path, NO_SYSTEM), "gemma", adapter_file="a.gguf")
    assert "TEMPLATE" not in text.replace("No TEMPLATE", "") and "# No TEMPLATE" in text
    assert "ADAPTER ./a.gguf" in text and "FROM ./base.gguf" in text
    assert "TEMPLATE" not in modelfile(tmp_path / "missing", "x", model_file="x.gguf").replace("No TEMPLATE", "")

"""The Ollama `Modelfile` that travels with a GGUF export, with the model's chat template.

Ollama's `TEMPLATE` is a Go template, the model's chat template is Jinja, and no translator between them
is general. Most chat templates put each message between a prefix and a suffix set by its role (ChatML,
Llama 3, Gemma, Phi-3 ...), so the pieces are read off the Jinja template itself, by rendering it on
marker messages, and written out as a Go template over `.Messages`. The pieces are then checked: the
Go template's own logic, replayed here, must give exactly the Jinja rendering for several conversations.
A template that does not fit that shape gets no `TEMPLATE` line and a comment saying so (Ollama then
falls back to the template it recognises in the GGUF's `tokenizer.chat_template`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2.exceptions import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

SYS, USER, ASST = "\x02SYSTEM\x03", "\x02USER\x03", "\x02ASSISTANT\x03"
USER2 = "\x02USER2\x03"


@dataclass(frozen=True)
class Pieces:
    """What the template writes around each message; `start` before the first when it is the system's,
    `no_system` before the first when there is none (a default system prompt, often)."""

    start: str
    no_system: str
    pre: dict[str, str]
    suf: dict[str, str]
    generation: str

    def render(self, messages: list[dict[str, str]]) -> str:
        """What the Go template below writes for `messages` (with the generation prompt)."""
        out = self.start if messages and messages[0]["role"] == "system" else self.no_system
        for m in messages:
            out += self.pre[m["role"]] + m["content"] + self.suf[m["role"]]
        return out + self.generation

    def go_template(self) -> str:
        # No trim markers ({{-): they would eat the template's own newlines around the pieces.
        def role(r: str) -> str:
            return f'{{{{ else if eq .Role "{r}" }}}}{self.pre[r]}{{{{ .Content }}}}{self.suf[r]}'

        return (
            '{{ if and .Messages (eq (index .Messages 0).Role "system") }}'
            f"{self.start}{{{{ else }}}}{self.no_system}{{{{ end }}}}"
            "{{ range .Messages }}{{ if false }}"
            + "".join(role(r) for r in ("system", "user", "assistant"))
            + f"{{{{ end }}}}{{{{ end }}}}{self.generation}"
        )


def read_chat_template(folder: Path) -> tuple[str | None, dict[str, Any]]:
    """The folder's Jinja chat template (chat_template.jinja, else tokenizer_config.json's) and the
    tokenizer config it renders with."""
    config_path = folder / "tokenizer_config.json"
    config: dict[str, Any] = json.loads(config_path.read_text()) if config_path.is_file() else {}
    jinja = folder / "chat_template.jinja"
    if jinja.is_file():
        return jinja.read_text(), config
    template = config.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        template = next((t.get("template") for t in template if t.get("name") == "default"), None)
    return (template if isinstance(template, str) else None), config


def _token(config: dict[str, Any], name: str) -> str:
    value = config.get(name)
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else ""


def _renderer(template: str, config: dict[str, Any]) -> Any:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    env.filters["tojson"] = lambda x, indent=None, **_: json.dumps(x, indent=indent, ensure_ascii=False)
    compiled = env.from_string(template)
    specials = {"bos_token": _token(config, "bos_token"), "eos_token": _token(config, "eos_token")}
    # The runtime adds BOS itself where the tokenizer does (the GGUF carries add_bos_token), so a BOS the
    # template writes is left out of the Go template only then; elsewhere it is an ordinary piece of text.
    added_bos = specials["bos_token"] if config.get("add_bos_token") is True else ""

    def render(messages: list[dict[str, str]], generation: bool) -> str:
        return str(compiled.render(messages=messages, add_generation_prompt=generation, **specials))

    return render, added_bos


def _msg(role: str, content: str) -> dict[str, str]:
    return {"role": role, "content": content}


def pieces_of(template: str, config: dict[str, Any]) -> Pieces | None:
    """The template's pieces, or None where it is not a prefix/suffix-per-role template."""
    try:
        render, bos = _renderer(template, config)
        s, u, a = _msg("system", SYS), _msg("user", USER), _msg("assistant", ASST)
        only_sys = render([s], False)
        su = render([s, u], False)
        sua = render([s, u, a], False)
        u_gen, u_plain = render([u], True), render([u], False)
    except (TemplateError, TypeError, ValueError, KeyError, IndexError):
        return None
    if not u_gen.startswith(u_plain):
        return None
    generation = u_gen[len(u_plain) :]
    start, _, suf_sys = only_sys.partition(SYS)
    between_su, _, suf_user = su.partition(SYS)[2].partition(USER)
    between_ua, _, suf_asst = sua.partition(USER)[2].partition(ASST)
    no_system, _, _ = u_plain.partition(USER)
    if not (between_su.startswith(suf_sys) and between_ua.startswith(suf_user)):
        return None
    pre_user, pre_asst = between_su[len(suf_sys) :], between_ua[len(suf_user) :]
    pre_sys = ""
    if no_system.endswith(pre_user):
        no_system = no_system[: len(no_system) - len(pre_user)]
    else:
        return None
    if bos and start.startswith(bos) and no_system.startswith(bos):
        start, no_system = start[len(bos) :], no_system[len(bos) :]
    pieces = Pieces(
        start=start,
        no_system=no_system,
        pre={"system": pre_sys, "user": pre_user, "assistant": pre_asst},
        suf={"system": suf_sys, "user": suf_user, "assistant": suf_asst},
        generation=generation,
    )
    checks = [[s, u], [u], [s, u, a, _msg("user", USER2)], [u, a, _msg("user", USER2)]]
    for conversation in checks:
        expected = render(conversation, True)
        if bos and expected.startswith(bos):
            expected = expected[len(bos) :]
        if pieces.render(conversation) != expected:
            return None
    if any("{{" in p or '"""' in p for p in (*pieces.pre.values(), *pieces.suf.values(), start, no_system, generation)):
        return None
    return pieces


def modelfile(folder: Path, base_model: str, *, model_file: str | None = None, adapter_file: str | None = None) -> str:
    """An Ollama Modelfile for a merged GGUF (`model_file`) or a LoRA GGUF on its base (`adapter_file`)."""
    lines = [f"# Ollama: `ollama create NAME -f Modelfile` in this folder. Fine-tuned from {base_model}."]
    if adapter_file is not None:
        lines += [
            "# FROM is the base model as GGUF: the adapter is applied to it. Put the base's f16 GGUF here as",
            f"# base.gguf (llama.cpp's convert_hf_to_gguf.py on {base_model}), or name the same base as pulled",
            "# into Ollama.",
            "FROM ./base.gguf",
            f"ADAPTER ./{adapter_file}",
        ]
    else:
        lines.append(f"FROM ./{model_file}")
    template, config = read_chat_template(folder)
    pieces = pieces_of(template, config) if template else None
    if pieces is None:
        lines.append(
            "# No TEMPLATE: the chat template is not one that writes each message between a prefix and a"
            " suffix; Ollama uses the GGUF's tokenizer.chat_template where it recognises it."
        )
    else:
        lines.append(f'TEMPLATE """{pieces.go_template()}"""')
        stop = pieces.suf["assistant"].strip()
        if stop:
            lines.append(f"PARAMETER stop {json.dumps(stop)}")
    return "\n".join(lines) + "\n"

"""Render docs/training.md from the spec models, so the docs cannot drift from the code.

python -m tuneforge.app.jobs.spec_docs > docs/training.md
"""

from __future__ import annotations

import json
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from tuneforge.contract import spec as s

BLOCKS: list[tuple[str, type[BaseModel], str]] = [
    (
        "quantization",
        s.QuantizationSpec,
        "How the base model's weights are stored while training. With 4 or 8 bits, the linear layers are "
        "quantized; the input embeddings and output head stay in the compute dtype (peft's own preparation "
        "would cast them to fp32); norms, the residual stream and any trained head are fp32, as in QLoRA.",
    ),
    ("lora", s.LoraSpec, "The adapter."),
    ("training", s.TrainingSpec, "The loop."),
    ("training.early_stopping", s.EarlyStoppingSpec, "Optional; off when null."),
    ("training.loss_watchdog", s.LossWatchdogSpec, "Fails a diverging job early with `error.code = nan_loss`."),
    ("scheduler", s.SchedulerSpec, "Learning rate over time. Warmup is linear from 1/(warmup+1) of the peak."),
    ("data", s.DataSpec, "Columns, row shapes and splits."),
    (
        "preference",
        s.PreferenceSpec,
        "Preference tuning, for `method: {type: dpo}` only. The reference model is the base with the adapter "
        "switched off (peft's `disable_adapter()`), not a second copy; for a job started `from_checkpoint`, the "
        "adapter it started from, kept frozen beside the trained one. Each logged step's `extra` holds "
        "`rewards_chosen`, `rewards_rejected`, `reward_margin` and `preference_accuracy`; each evaluation "
        "reports the held-out `preference_accuracy` and `reward_margin` beside `eval_loss`. Both measure the "
        "change from the reference, so at the step-0 baseline they are 0 by construction; the evaluation also "
        "reports `choice_accuracy` (how often the model itself gives the preferred answer the higher "
        "log-probability: at step 0, the base model's own preference) and the mean `logps_chosen` and "
        "`logps_rejected` (DPO can lower both while it widens the margin).",
    ),
    (
        "reinforcement",
        s.ReinforcementSpec,
        "Reinforcement fine-tuning (GRPO), for `method: {type: reinforcement}` only; `grader` comes from "
        "`method.reinforcement.grader`. Per step: `generations_per_prompt` completions of each prompt sampled "
        "with the adapter (transformers' `generate`, KV cache), graded, rewards normalised within each prompt's "
        "group, and a clipped policy-gradient step with `kl_coef` x KL (k3) to the reference: the base (the adapter "
        "off), or, for a job started `from_checkpoint`, the adapter it started from (kept frozen beside it). "
        "A warm start wants a learning rate about 10x below a new adapter's: Adam moves every weight by about "
        "the learning rate from the first step, and a tuned SMS classifier collapsed to one answer at 1e-3 "
        "and held at 1e-4 (docs/benchmarks.md). "
        "Each logged step's `extra`: `reward` and `reward_std` of the sampled completions, `no_signal_groups` "
        "(the share of groups whose rewards were all equal), `kl`, `mean_completion_length`, `clip_fraction`, "
        "`grader_seconds`, `grader_errors`. Each evaluation (every `training.eval_every` steps, OpenAI's "
        "`eval_interval`) grades greedy completions of `eval_samples` validation prompts: its series point's "
        "`extra` has `valid_reward`, `valid_reward_std` and `valid_mean_completion_length` (`eval_loss` = "
        "-reward), the job's final metrics `reward`, and an event with three samples and their rewards; "
        "step 0 is the base's reward, so the result reads reward A -> B. A grader that fails on a sample "
        "scores 0, with a warning event saying why (the first 20), and the job goes on. The loss watchdog's "
        "ratio check is off by default for this method (a policy-gradient loss is centred near 0); a "
        "non-finite loss still fails the job. Defaults: see tuneforge/contract/spec/reinforcement.py for "
        "where each comes from.",
    ),
    (
        "samples",
        s.SamplesSpec,
        "causal_lm only. Greedy generations with the adapter before the first step (step 0: the base model), "
        "at each evaluation and at the end, stored by step and read with "
        "`GET /v1/fine_tuning/jobs/{id}/samples`; each set is announced by a job event with "
        '`data.kind: "samples"` (and `step`, `count`). '
        "Generation draws no random numbers, so a job trains exactly the same with or without samples. "
        "On by default (two validation prompts, 16 tokens each). The prompts are generated together, one "
        "batch with the KV cache (a forward pass per new token for all of them), so the cost is per generated "
        "token, not per prompt: on a CPU, SmolLM2-135M in 4-bit takes about 0.13 s of CPU per token "
        "(bitsandbytes dequantizes the weights at every token). With the evaluations, samples at the default "
        "cadence take at most `training.eval_budget` (10%) of the run; `from_validation: 0` with no `prompts` "
        "turns them off.",
    ),
    (
        "integrations[].wandb",
        s.WandbSettings,
        '`integrations: [{"type": "wandb", "wandb": {...}}]`, OpenAI\'s shape: the worker logs the metric '
        "series, the resolved spec (as config) and the final metrics to a W&B run, offline by default (a run "
        "folder for `wandb sync`). At most one `wandb` and one `mlflow` item. A tracker that is down never fails "
        "or slows the job: one warning event, retries in the background (docs/api.md, docs/deployment.md).",
    ),
    (
        "integrations[].mlflow",
        s.MlflowSettings,
        '`integrations: [{"type": "mlflow", "mlflow": {...}}]`, a Tuneforge extension of the same shape: the '
        "same series, the spec as dotted params and the final metrics, to an MLflow tracking server the operator "
        "lists in TUNEFORGE_MLFLOW_TRACKING_URIS (any other URL is refused at create). The job object's "
        "`integrations` shows the `wandb` items only (OpenAI's type); `spec.integrations` shows all.",
    ),
    (
        "data.augmentation",
        s.AugmentationSpec,
        "Optional; off when null. More training rows made from the ones given, on the training split only: "
        "each row is kept and `copies` changed copies follow it. Seeded per row and copy, so every attempt of "
        "a job sees the same rows. Words are split on whitespace and re-joined with single spaces. The "
        '"Data ready" event reports `augmented` (the copies added) in its `data`.',
    ),
    (
        "data.augmentation.operations[]",
        s.AugmentationOp,
        "Each operation, in the order listed, hits each word (each letter for `char_noise`) with chance `p`, "
        "as in EDA (Wei and Zou, 2019). `synonym_replacement` and `random_insertion` draw synonyms from "
        "WordNet 3.0 on the worker (Debian's `wordnet-base`, read with nltk; `scripts/install.sh` installs "
        "both, `TUNEFORGE_WORDNET_DIR` points elsewhere); a worker without it fails the job at once with "
        "`invalid_spec` saying what to install. Back-translation is not offered: it needs a translation "
        "model per language pair, which Tuneforge does not ship.",
    ),
]
OPTIMIZERS: list[type[BaseModel]] = [s.SGDSpec, s.AdagradSpec, s.RMSpropSpec, s.AdamSpec, s.AdamWSpec, s.AdamW8bitSpec,
              s.PagedAdamW8bitSpec, s.PagedAdamW32bitSpec]  # fmt: skip
EXAMPLES: list[dict[str, Any]] = [
    {
        "model": "llama-3.2-1b",
        "training_file": "file-abc",
        "task": "causal_lm",
        "quantization": {"bits": 4, "quant_type": "nf4", "double_quant": True},
        "lora": {"r": 16, "alpha": 32, "target_modules": "all-linear"},
        "training": {"epochs": 2, "batch_size": 8, "max_seq_length": 1024, "save_every": 200},
        "samples": {"prompts": ["Write a haiku about the sea."], "from_validation": 2, "max_new_tokens": 48},
        "optimizer": {"name": "paged_adamw_8bit"},
        "scheduler": {"name": "cosine", "warmup_ratio": 0.03},
    },
    {
        "model": "llama-3.2-1b",
        "training_file": "file-pairs",
        "method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1, "n_epochs": 1}}},
        "preference": {"loss": "ipo", "length_normalization": True},
        "training": {"batch_size": 4, "max_seq_length": 1024},
    },
    {
        "model": "minilm",
        "training_file": "file-sms",
        "task": "sequence_classification",
        "lora": {"r": 8, "target_modules": ["query", "value"]},
        "training": {"epochs": 3, "batch_size": 32, "learning_rate": 5e-4, "max_seq_length": 128},
        "data": {"label_field": "label", "validation_split": 0.1, "test_split": 0.1},
    },
    {
        "model": "minilm",
        "training_file": "file-lengths",
        "task": "regression",
        "lora": {"r": 16, "target_modules": "all-linear"},
        "training": {"epochs": 2, "batch_size": 32, "loss": {"regression_loss": "huber", "huber_delta": 2.0}},
        "data": {"text_field": "text", "label_field": "label", "test_split": 0.1},
    },
    {
        "model": "minilm",
        "training_file": "file-sms-small",
        "task": "sequence_classification",
        "data": {
            "augmentation": {
                "copies": 1,
                "seed": 0,
                "operations": [
                    {"name": "synonym_replacement", "p": 0.1},
                    {"name": "random_insertion", "p": 0.1},
                    {"name": "random_swap", "p": 0.1},
                    {"name": "random_deletion", "p": 0.1},
                    {"name": "char_noise", "p": 0.05},
                ],
            }
        },
    },
]


DATA_SHAPES = [
    "## Data shapes (`causal_lm`)",
    "",
    "Upload validation detects each file's shape from its columns and reports it as the file's",
    "`data_format`; `data.format` may name it instead. Every bad row is refused at upload with a 400",
    "naming its line and field.",
    "",
    "- **`messages`**: OpenAI's chat format, including function calling: a top-level `tools` (or the",
    "  legacy `functions`), assistant messages with `tool_calls` and `content: null`, `tool` messages",
    "  whose `tool_call_id` answers an earlier call (else the upload is refused), and the legacy",
    "  `function_call` / `function` role (rewritten to `tool_calls` / `tool`). Tools reach the chat",
    "  template as `apply_chat_template(..., tools=...)`, tool-call arguments as objects. A model whose",
    "  template ignores `tools` or `tool_calls` fails the job with `invalid_spec` before training.",
    "  Loss falls on assistant turns, their tool calls included; `weight: 0` on an assistant message",
    "  takes that turn out of the loss (`weight` must be 0 or 1, and only on assistant messages).",
    "- **`alpaca`**: `instruction` and `input` (joined by a blank line) become the user turn, `output`",
    "  the assistant turn (it must not be empty); optional `system`, and `history` as",
    "  `[[instruction, response], ...]` turns before them (their responses are trained on too).",
    "- **`sharegpt`**: `conversations: [{from, value}]`, `from` one of human, gpt, system,",
    "  function_call (`value` a JSON `{name, arguments}`: an assistant tool call) or observation (the",
    "  tool's answer to the latest call); optional top-level `system` and `tools` (a list or a JSON",
    "  string).",
    "- **`prompt_completion`** and **`text`**, as before.",
    "",
    'The "Data ready" event\'s `data` reports `train_tokens` and `loss_tokens`, the tokens whose',
    "prediction is trained on, so a user can see what the mask keeps.",
    "",
    "```json",
    json.dumps(
        {
            "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
            "messages": [
                {"role": "user", "content": "Warm in Rome?"},
                {"role": "assistant", "content": "Checking.", "weight": 0},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {"role": "assistant", "content": "Yes, sunny."},
            ],
        }
    ),
    json.dumps({"instruction": "Translate to French", "input": "cat", "output": "chat"}),
    json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}),
    "```",
    "",
]


def _type(annotation: Any) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(_type(a) for a in args)
    if origin is list:
        return f"list[{_type(args[0])}]"
    if origin is tuple:
        return f"[{', '.join(_type(a) for a in args)}]"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "object"
    return getattr(annotation, "__name__", str(annotation))


def _default(field: Any) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return "see below" if isinstance(value, BaseModel) else f"`{json.dumps(value)}`"
    if field.default is PydanticUndefined:
        return "required"
    return f"`{json.dumps(field.default)}`"


def _table(model: type[BaseModel], prefix: str) -> list[str]:
    rows = ["| field | type | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        if name == "name" and model in OPTIMIZERS:
            continue
        rows.append(f"| `{prefix}{name}` | {_type(field.annotation)} | {_default(field)} | {field.description or ''} |")
    return rows


def render() -> str:
    out = [
        "# The job spec",
        "",
        "Generated from `tuneforge/contract/spec/` by `python -m tuneforge.app.jobs.spec_docs`; "
        "a test keeps it current.",
        "Every block is optional and every field has a default; unknown fields are refused with a 400",
        "that names them. The stored job carries the fully resolved spec as `spec`.",
        "",
        "## OpenAI fields",
        "",
        "`model` (a directory under `TUNEFORGE_MODELS_DIR`), `training_file`, `validation_file`, `suffix`,",
        "`seed` (random when omitted, and recorded), `metadata` (up to 16 string pairs), and",
        "`method: {type: supervised, supervised: {hyperparameters: {n_epochs, batch_size,",
        "learning_rate_multiplier}}}`. These map onto `training.epochs`, `training.batch_size` and",
        f"`training.learning_rate = {s.DEFAULT_LEARNING_RATE} x multiplier`; giving both forms with different",
        "values is refused.",
        "",
        "`method: {type: dpo, dpo: {hyperparameters: {beta, n_epochs, batch_size, learning_rate_multiplier}}}`",
        'trains on OpenAI\'s preference rows: `{"input": {"messages": [...]}, "preferred_output":',
        '[{"role": "assistant", "content": ...}], "non_preferred_output": [...]}` (checked at upload; a',
        "row missing a field is refused naming its line). `beta` maps to `preference.beta`; the other",
        "hyperparameters map as for `supervised`. DPO needs `task: causal_lm`, a tokenizer with a chat",
        "template, and no `training.packing`. The job object shows `method` back in OpenAI's shape.",
        "",
        "`method: {type: reinforcement, reinforcement: {grader, hyperparameters: {n_epochs, batch_size,",
        "learning_rate_multiplier, eval_interval, eval_samples, compute_multiplier}}}` trains on prompt rows:",
        '`{"messages": [...the conversation up to the turn the model writes], "<field>": ...}`; graders read',
        "`{{item.<field>}}` and the completion as `{{sample.output_text}}` (`{{sample.output_json}}` with",
        "`reinforcement.response_format: json_object`). Graders, in OpenAI's shapes: `string_check` (eq, ne,",
        "like, ilike), `text_similarity` (fuzzy_match, bleu, gleu, meteor, rouge_1..rouge_5, rouge_l),",
        "`score_model` and `label_model` (the judge: a base model under the models root, or an `ft:` model of",
        "the job's own organization, its base with the adapter merged; loaded in the worker. Another",
        "organization's `ft:` id is a 400 naming the grader's `model` field),",
        "`python` (`grade(sample, item) -> float`, off unless the operator turns it on: docs/security.md) and",
        "`multi` (`graders` by name, combined by `calculate_output`). At POST a grader reading a field the",
        "training or validation file lacks is refused naming the grader field and the file;",
        "`reasoning_effort` is refused (no model here reasons). `eval_interval` maps to `training.eval_every`,",
        "`eval_samples` to `reinforcement.eval_samples`, `compute_multiplier` to",
        "`reinforcement.generations_per_prompt = max(2, round(4 x multiplier))`. `from_checkpoint` starts RFT",
        "from a supervised job's adapter (a warm start); sweeps reach the block (`search_space:",
        '{"reinforcement.kl_coef": ...}`). Try graders first with `POST /v1/fine_tuning/alpha/graders/validate`',
        "and `/run` (docs/api.md). Each evaluation's mean reward and graded samples are events, shown on the",
        "dashboard's Job page; step 0 is the starting model's reward.",
        "",
        "`from_checkpoint` (top level, beside `method`) continues training from an earlier adapter: an `ft:`",
        "model id, a checkpoint's `fine_tuned_model_checkpoint` (`...:ckpt-step-N`) or a checkpoint id",
        "(`ftckpt-...`) of the same organization, trained on the same base `model`, `task`, `lora.r` and",
        "`lora.target_modules`. The new job's adapter starts from those weights (its optimizer starts fresh).",
        "Another organization's reference is a 404; an incompatible one a 400, both naming `from_checkpoint`.",
        "",
        "## `task`",
        "",
        "`causal_lm` (default): rows with `text`, or `prompt` + `completion`, or chat `messages`",
        "(rendered with the tokenizer's chat template; loss on assistant turns only unless",
        "`training.train_on_inputs`), or alpaca or ShareGPT rows (see Data shapes below).",
        "`sequence_classification`: `text` -> `label` (strings; the label",
        "list is stored in the adapter's `tuneforge.json`, and the classifier head is trained in full and",
        "never quantized). `regression`: `text` -> numeric `label`, MSE on a normalised target.",
        "",
    ]
    for prefix, model, intro in BLOCKS:
        out += [f"## `{prefix}`", "", intro, "", *_table(model, f"{prefix}."), ""]
    out += ["## `optimizer`", "", "Pick one by `name` (default `adamw`); each takes only its own arguments.", ""]
    for opt in OPTIMIZERS:
        name = typing.get_args(opt.model_fields["name"].annotation)[0]
        fields = [f for f in opt.model_fields if f != "name"]
        args = ", ".join(f"`{f}` ({_default(opt.model_fields[f])})" for f in fields) or "no arguments"
        out.append(f"- `{name}`: {args}")
    out += [
        "",
        "`training.weight_decay` applies to matrices only, never to biases or norm weights. The 8-bit and",
        "paged optimizers are bitsandbytes'.",
        "",
        "## Examples",
        "",
    ]
    for example in EXAMPLES:
        out += ["```json", json.dumps(example, indent=2), "```", ""]
    out += DATA_SHAPES
    return "\n".join(out)


if __name__ == "__main__":
    print(render(), end="")

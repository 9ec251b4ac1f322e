"""A tiny causal LM built from a config, for the demo, the tests and the benchmarks.

Nothing is downloaded: the tokenizer is a byte-level BPE trained on the text given, and the model is
a randomly initialised few-layer Llama saved as safetensors.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

# Renders OpenAI function calling too: the tools as JSON up front, and each tool call after its turn's text.
CHAT_TEMPLATE = (
    "{% if tools %}<|bos|>tools\n{{ tools | tojson }}<|eos|>\n{% endif %}"
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}{% endif %}"
    "{% for c in m['tool_calls'] or [] %}<call>{{ c['function']['name'] }} {{ c['function']['arguments'] | tojson }}"
    "</call>{% endfor %}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)
# The template before function calling: it ignores `tools` and `tool_calls` (tests refuse it for tool data).
PLAIN_CHAT_TEMPLATE = (
    "{% for m in messages %}<|bos|>{{ m['role'] }}\n{{ m['content'] }}<|eos|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|bos|>assistant\n{% endif %}"
)


def build_tokenizer(text: str, vocab_size: int = 384) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|pad|>", "<|bos|>", "<|eos|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([text[i : i + 2000] for i in range(0, len(text), 2000)], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<|pad|>", bos_token="<|bos|>", eos_token="<|eos|>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_llama(dest: Path, text: str, *, hidden: int = 64, layers: int = 2, seed: int = 0) -> Path:
    """A few-layer Llama with a BPE tokenizer trained on `text`, saved as safetensors."""
    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(text)
    tokenizer.save_pretrained(dest)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    LlamaForCausalLM(config).save_pretrained(dest, safe_serialization=True)
    return dest

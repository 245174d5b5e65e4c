"""``flexguard merge``: fold a LoRA adapter into its base model for serving (hf backend, vLLM)."""

from __future__ import annotations

from pathlib import Path


def merge(base: str, adapter: str | Path, out: str | Path, *, dtype: str = "auto", template: str | None = None) -> Path:
    """Save base + adapter as one model: safetensors, tokenizer and chat template."""
    import json

    from peft import PeftModel

    from ...template import PromptTemplate
    from .common import load_model_and_tokenizer, write_model_card

    model, tok = load_model_and_tokenizer(base, dtype)
    adapter = Path(adapter)
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    out = Path(out)
    merged.save_pretrained(str(out), safe_serialization=True)
    src_tok = adapter if (adapter / "tokenizer_config.json").exists() else base
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(str(src_tok)).save_pretrained(str(out))
    cfg = json.loads((adapter / "adapter_config.json").read_text())
    write_model_card(out, stage="merged", base=base, cfg={"adapter": str(adapter), "lora": cfg},
                     template=PromptTemplate.load(template) if template else PromptTemplate.load(), metrics={})
    return out

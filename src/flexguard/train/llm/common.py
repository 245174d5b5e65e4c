"""Shared pieces of the TRL stages: loading, datasets, device defaults, curves, model cards."""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from ...schema import Item, hardware
from ...template import PromptTemplate
from .config import SFTRunConfig
from .distill import TrainingRecord


def load_model_and_tokenizer(name: str, dtype: str = "auto"):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ...moderators.loading import resolve_dtype

    torch_dtype = resolve_dtype(dtype, "cuda" if torch.cuda.is_available() else "cpu")
    tok = AutoTokenizer.from_pretrained(name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
    return model, tok


def device_defaults() -> dict[str, Any]:
    """TRL defaults that are wrong on CPU: bf16 autocast and activation checkpointing cost 2-3x there."""
    import torch

    if torch.cuda.is_available():
        return {"bf16": True}
    return {"use_cpu": True, "bf16": False, "fp16": False, "activation_checkpointing": False}


def prompt_rows(records: Sequence[TrainingRecord], tokenizer: Any, template: PromptTemplate) -> list[dict[str, Any]]:
    """String prompt-completion rows: the prompt rendered with the chat template, the answer
    in the model card's format followed by the end-of-turn token."""
    rows = []
    for r in records:
        prompt = template.render(Item(id=r.id, prompt=r.prompt, response=r.response), tokenizer)
        rows.append({"prompt": prompt, "completion": r.completion + tokenizer.eos_token, "risk_score": r.risk_score,
                     "category": r.category, "severity": r.severity})
    return rows


def lora_config(cfg: SFTRunConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), task_type="CAUSAL_LM")


def plot_curves(log_history: list[dict], keys: Sequence[str], path: Path, title: str) -> Path | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = {k: [(h["step"], h[k]) for h in log_history if k in h and "step" in h] for k in keys}
    series = {k: v for k, v in series.items() if v}
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for k, v in series.items():
        ax.plot([s for s, _ in v], [y for _, y in v], marker=".", label=k)
    ax.set_xlabel("step"); ax.set_title(title); ax.legend(fontsize=7)
    fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)
    return path


def write_model_card(out: Path, *, stage: str, base: str, cfg: Any, template: PromptTemplate, metrics: dict[str, Any]) -> None:
    """A short model card next to every saved model."""
    import dataclasses

    cfg_dict = dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else dict(cfg)
    text = f"""---
base_model: {base}
library_name: transformers
tags: [flexguard, content-moderation, {stage}]
---
# FlexGuard {stage} checkpoint

- base model: `{base}`
- stage: {stage}; created {_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
- output format: `<think>…</think>\\nCATEGORY\\nRISK_SCORE` (score 0–100, categories SAFE VIO ILG SEX INF DIS MIS JAIL)
- prompt template: `{template.name}` (sha256 `{template.sha256[:16]}…`)
- hardware: {hardware()['machine']}, {hardware()['cpu_count']} CPUs

Load with flexguard: `flexguard score "…" --model hf:{out}` (or serve it with vLLM and use `--model openai:URL#NAME`).

## Training metrics
```json
{json.dumps(metrics, indent=2, default=str)}
```

## Config
```json
{json.dumps(cfg_dict, indent=2, default=str)}
```

Limitations: scores reflect the training data's rubric annotations; check calibration on your own data
(`flexguard bench`, `flexguard calibrate`) before relying on a threshold.
"""
    (out / "README.md").write_text(text)

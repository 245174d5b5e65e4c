"""Shared pieces of the TRL stages: loading, datasets, device defaults, periodic FlexBench
evaluation, main-process guards, curves, model cards."""

from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError
from ...schema import MODES, Item, hardware
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
    """String prompt-completion rows: the prompt rendered with the chat template (the prompt or
    the response template, by the record's mode), the answer in the model card's format followed
    by the end-of-turn token."""
    rows = []
    for r in records:
        item = Item(id=r.id, prompt=r.prompt, response=r.response)
        prompt = template.render(item, tokenizer)
        rows.append({"prompt": prompt, "completion": r.completion + tokenizer.eos_token, "risk_score": r.risk_score,
                     "category": r.category, "severity": r.severity, "mode": item.mode})
    return rows


def training_rows(cfg: SFTRunConfig, tokenizer: Any, template: PromptTemplate
                  ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Rows of every data file, and the ``eval_fraction`` held out of them (per mode, seeded)."""
    import random

    from .distill import load_records

    rows = prompt_rows([r for path in cfg.data_files for r in load_records(path)], tokenizer, template)
    if not cfg.eval_fraction:
        return rows, []
    rng = random.Random(cfg.seed)
    train, held = [], []
    for mode in MODES:
        part = [r for r in rows if r["mode"] == mode]
        rng.shuffle(part)
        k = round(len(part) * cfg.eval_fraction)
        held += part[:k]
        train += part[k:]
    return train, held


def checkpoint_to_resume(cfg: SFTRunConfig) -> str | None:
    """The last ``checkpoint-N`` folder in ``output_dir`` when ``cfg.resume``; a clear error if there is none."""
    if not cfg.resume:
        return None
    from transformers.trainer_utils import get_last_checkpoint

    out = Path(cfg.output_dir)
    last = get_last_checkpoint(str(out)) if out.is_dir() else None
    if last is None:
        raise ConfigError(f"--resume: no checkpoint-* folder in {out} to resume from (checkpoints are written every "
                          "trl.save_steps steps with trl.save_strategy: steps)")
    return last


def flexbench_sample(folder: str, n_per_mode: int, seed: int) -> list[Item]:
    """Up to ``n_per_mode`` FlexBench valid items of each mode, drawn with ``seed``."""
    import random

    from ...data import load_flexbench

    rng = random.Random(seed)
    out: list[Item] = []
    for mode in MODES:
        items = load_flexbench(folder, subset=mode, split="valid").items
        out += rng.sample(items, min(n_per_mode, len(items)))
    return out


def flexbench_metrics(model: Any, tokenizer: Any, template: PromptTemplate, items: Sequence[Item], *,
                      max_new_tokens: int) -> dict[str, float]:
    """Generate answers for ``items`` with the model being trained and score them as ``flexguard bench`` does.

    Returns ``flexbench/{mode}_worst_f1``, ``…_avg_f1``, ``…_f1_{regime}`` and ``flexbench/parse_error_rate``
    (unparsable answers are counted as flagged, as the default policy does). The model's
    training mode and the tokenizer's padding side are restored afterwards.
    """
    from ...metrics import evaluate
    from ...moderators.hf import HFModerator
    from ...rubric import tier_ranks

    was_training, side = model.training, tokenizer.padding_side
    try:
        results = HFModerator(model, tokenizer, mode="generate", template=template, max_new_tokens=max_new_tokens,
                              batch_size=8).score(list(items))
    finally:
        model.train(was_training)
        tokenizer.padding_side = side
    out: dict[str, float] = {"flexbench/parse_error_rate": sum(r.parse_error for r in results) / max(len(results), 1)}
    for mode in MODES:
        idx = [k for k, it in enumerate(items) if it.mode == mode]
        if not idx:
            continue
        ev = evaluate([results[k].score for k in idx], tier_ranks(items[k].tier for k in idx), n_boot=0)
        out[f"flexbench/{mode}_worst_f1"] = ev.worst_f1
        out[f"flexbench/{mode}_avg_f1"] = ev.avg_f1
        out.update({f"flexbench/{mode}_f1_{r}": m.f1 for r, m in ev.regimes.items()})
    return out


def flexbench_callback(cfg: SFTRunConfig, tokenizer: Any, template: PromptTemplate):
    """A TrainerCallback that logs :func:`flexbench_metrics` every ``cfg.eval_every`` steps and at
    the end, on the main process only (the others wait at their next collective)."""
    from transformers import TrainerCallback

    items = flexbench_sample(cfg.eval_flexbench, cfg.eval_items, cfg.seed) if cfg.eval_flexbench else []

    class FlexBenchEval(TrainerCallback):
        def _run(self, args, state, model) -> None:
            if not items or not state.is_world_process_zero:
                return
            metrics = flexbench_metrics(model, tokenizer, template, items, max_new_tokens=cfg.eval_max_new_tokens)
            state.log_history.append({**{k: round(v, 4) for k, v in metrics.items()}, "step": state.global_step})

        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % cfg.eval_every == 0:
                self._run(args, state, model)

        def on_train_end(self, args, state, control, model=None, **kwargs):
            if state.global_step % cfg.eval_every:
                self._run(args, state, model)

    return FlexBenchEval()


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


@dataclass
class StageInputs:
    """What both TRL stages start from: template, checkpoint to resume, model, tokenizer, rows."""

    template: PromptTemplate
    resume: str | None
    model: Any
    tokenizer: Any
    rows: list[dict[str, Any]]
    held: list[dict[str, Any]]


def prepare(cfg: SFTRunConfig) -> StageInputs:
    """Load everything a stage trains on; errors about the config (e.g. ``--resume`` without a
    checkpoint) come before the model is loaded."""
    template = PromptTemplate.load(cfg.template)
    resume = checkpoint_to_resume(cfg)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    rows, held = training_rows(cfg, tok, template)
    return StageInputs(template, resume, model, tok, rows, held)


def save_outputs(trainer: Any, cfg: SFTRunConfig, inputs: StageInputs, *, stage: str, metrics: dict[str, Any],
                 curves: Sequence[str], title: str) -> Path:
    """Save the model (every process calls it; it writes on the main one), then, on the main
    process only, the tokenizer, ``train_metrics.json``, the curves and the model card."""
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    if trainer.is_world_process_zero():
        inputs.tokenizer.save_pretrained(str(out))
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        plot_curves(trainer.state.log_history, curves, out / "training_curves.png", title)
        write_model_card(out, stage=stage + ("-lora-adapter" if cfg.lora else ""), base=cfg.model, cfg=cfg,
                         template=inputs.template, metrics=metrics)
    trainer.accelerator.wait_for_everyone()
    return out

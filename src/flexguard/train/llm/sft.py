"""``flexguard train sft``: supervised warm-up with TRL's SFTTrainer (loss on the answer only)."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import SFTRunConfig


def tokens_per_second(log_history: list[dict[str, Any]], seconds: float) -> float | None:
    """Training throughput from TRL's running ``num_tokens`` log."""
    seen = [h["num_tokens"] for h in log_history if "num_tokens" in h]
    return round(seen[-1] / seconds, 1) if seen and seconds > 0 else None


@dataclass
class TrainOutcome:
    output_dir: Path
    log_history: list[dict[str, Any]]
    metrics: dict[str, Any]


def main(cfg: SFTRunConfig) -> TrainOutcome:
    """Train and save (the adapter when ``cfg.lora``), with tokenizer, curves and a model card."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ...template import PromptTemplate
    from .common import device_defaults, load_model_and_tokenizer, lora_config, plot_curves, prompt_rows, write_model_card
    from .distill import load_records

    template = PromptTemplate.load(cfg.template)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    rows = prompt_rows(load_records(cfg.data), tok, template)
    args = SFTConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                        "logging_steps": 5, "completion_only_loss": True, "max_length": 4096, **device_defaults(), **cfg.trl})
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=lora_config(cfg))
    t0 = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    metrics = {"train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step, "examples": len(rows),
               "seconds": round(seconds, 1),
               "tokens_per_s": tokens_per_second(trainer.state.log_history, seconds), "adapter": cfg.lora}
    plot_curves(trainer.state.log_history, ["loss"], out / "training_curves.png", "SFT loss")
    write_model_card(out, stage="sft" + ("-lora-adapter" if cfg.lora else ""), base=cfg.model, cfg=cfg, template=template,
                     metrics=metrics)
    return TrainOutcome(output_dir=out, log_history=trainer.state.log_history, metrics=metrics)

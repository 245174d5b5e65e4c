"""``flexguard train sft``: supervised warm-up with TRL's SFTTrainer (loss on the answer only).

Both moderation modes train together when ``data`` lists the prompt and the response files.
Periodic FlexBench evaluation (``eval_flexbench``), an eval split (``eval_fraction``) and
``--resume`` come from the config; with ``accelerate launch`` every process trains and only
the main one writes the tokenizer, curves and model card.
"""

from __future__ import annotations

import json
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


def last_flexbench(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest periodic FlexBench evaluation in a log history (empty without one)."""
    evals = [h for h in log_history if any(k.startswith("flexbench/") for k in h)]
    return evals[-1] if evals else {}


def main(cfg: SFTRunConfig) -> TrainOutcome:
    """Train and save (the adapter when ``cfg.lora``), with tokenizer, curves and a model card."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from ...template import PromptTemplate
    from .common import (
        checkpoint_to_resume,
        device_defaults,
        flexbench_callback,
        load_model_and_tokenizer,
        lora_config,
        plot_curves,
        training_rows,
        write_model_card,
    )

    template = PromptTemplate.load(cfg.template)
    resume = checkpoint_to_resume(cfg)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    rows, held = training_rows(cfg, tok, template)
    evals = {"eval_strategy": "steps", "eval_steps": cfg.eval_every} if held else {}
    args = SFTConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                        "logging_steps": 5, "completion_only_loss": True, "max_length": 4096, **evals,
                        **device_defaults(), **cfg.trl})
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows),
                         eval_dataset=Dataset.from_list(held) if held else None, processing_class=tok,
                         peft_config=lora_config(cfg), callbacks=[flexbench_callback(cfg, tok, template)])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))  # every process calls it; it writes on the main one
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    modes = {m: sum(r["mode"] == m for r in rows) for m in ("prompt", "response")}
    metrics = {"train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step, "examples": len(rows),
               "examples_per_mode": modes, "held_out": len(held), "seconds": round(seconds, 1),
               "tokens_per_s": tokens_per_second(hist, seconds), "adapter": cfg.lora, "resumed_from": resume,
               "flexbench": last_flexbench(hist), "world_size": trainer.args.world_size}
    if trainer.is_world_process_zero():
        tok.save_pretrained(str(out))
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        plot_curves(hist, ["loss", "eval_loss"], out / "training_curves.png", "SFT loss")
        write_model_card(out, stage="sft" + ("-lora-adapter" if cfg.lora else ""), base=cfg.model, cfg=cfg,
                         template=template, metrics=metrics)
    trainer.accelerator.wait_for_everyone()
    return TrainOutcome(output_dir=out, log_history=hist, metrics=metrics)

"""``flexguard train sft``: supervised warm-up with TRL's SFTTrainer (loss on the answer only).

Both moderation modes train together when ``data`` lists the prompt and the response files.
Periodic FlexBench evaluation (``eval_flexbench``), an eval split (``eval_fraction``) and
``--resume`` come from the config; with ``accelerate launch`` every process trains and only
the main one writes the tokenizer, curves and model card.
"""

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


def last_flexbench(log_history: list[dict[str, Any]]) -> dict[str, Any]:
    """The latest periodic FlexBench evaluation in a log history (empty without one)."""
    evals = [h for h in log_history if any(k.startswith("flexbench/") for k in h)]
    return evals[-1] if evals else {}


def main(cfg: SFTRunConfig) -> TrainOutcome:
    """Train and save (the adapter when ``cfg.lora``), with tokenizer, curves and a model card."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from .common import device_defaults, flexbench_callback, lora_config, prepare, save_outputs

    inputs = prepare(cfg)
    evals = {"eval_strategy": "steps", "eval_steps": cfg.eval_every} if inputs.held else {}
    args = SFTConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                        "logging_steps": 5, "completion_only_loss": True, "max_length": 4096, **evals,
                        **device_defaults(), **cfg.trl})
    trainer = SFTTrainer(model=inputs.model, args=args, train_dataset=Dataset.from_list(inputs.rows),
                         eval_dataset=Dataset.from_list(inputs.held) if inputs.held else None,
                         processing_class=inputs.tokenizer, peft_config=lora_config(cfg),
                         callbacks=[flexbench_callback(cfg, inputs.tokenizer, inputs.template)])
    t0 = time.perf_counter()
    result = trainer.train(resume_from_checkpoint=inputs.resume)
    seconds = time.perf_counter() - t0
    hist = trainer.state.log_history
    losses = [h["loss"] for h in hist if "loss" in h]
    modes = {m: sum(r["mode"] == m for r in inputs.rows) for m in ("prompt", "response")}
    metrics = {"train_loss": result.training_loss, "first_loss": losses[0] if losses else None,
               "last_loss": losses[-1] if losses else None, "steps": trainer.state.global_step,
               "examples": len(inputs.rows), "examples_per_mode": modes, "held_out": len(inputs.held),
               "seconds": round(seconds, 1), "tokens_per_s": tokens_per_second(hist, seconds), "adapter": cfg.lora,
               "resumed_from": inputs.resume, "flexbench": last_flexbench(hist), "world_size": trainer.args.world_size}
    out = save_outputs(trainer, cfg, inputs, stage="sft", metrics=metrics, curves=["loss", "eval_loss"], title="SFT loss")
    return TrainOutcome(output_dir=out, log_history=hist, metrics=metrics)

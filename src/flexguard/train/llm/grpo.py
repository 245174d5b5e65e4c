"""``flexguard train grpo``: risk alignment with TRL's GRPOTrainer and the rubric rewards.

Same data, evaluation, resume and main-process rules as :mod:`.sft`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .config import GRPORunConfig
from .sft import TrainOutcome, last_flexbench, tokens_per_second


def main(cfg: GRPORunConfig) -> TrainOutcome:
    """Sample answers, reward format / score–severity alignment / category, update the policy."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

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
    from .rewards import REWARDS

    template = PromptTemplate.load(cfg.template)
    resume = checkpoint_to_resume(cfg)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    rows, held = training_rows(cfg, tok, template)
    rows = [{k: v for k, v in r.items() if k != "completion"} for r in rows]
    names = list(cfg.reward_weights)
    args = GRPOConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                         "logging_steps": 1, "max_completion_length": 1024, "num_generations": 4,
                         "per_device_train_batch_size": 8, "beta": 0.0, **device_defaults(), **cfg.trl,
                         "reward_weights": [cfg.reward_weights[n] for n in names]})
    trainer = GRPOTrainer(model=model, reward_funcs=[REWARDS[n] for n in names], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=lora_config(cfg),
                          callbacks=[flexbench_callback(cfg, tok, template)])
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=resume)
    seconds = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    hist = trainer.state.log_history
    keys = ["reward"] + [f"rewards/{REWARDS[n].__name__}/mean" for n in names]
    rewards = [h["reward"] for h in hist if "reward" in h]
    metrics = {"steps": trainer.state.global_step, "first_reward": rewards[0] if rewards else None,
               "last_reward": rewards[-1] if rewards else None, "seconds": round(seconds, 1),
               "tokens_per_s": tokens_per_second(hist, seconds), "examples": len(rows),
               "reward_weights": cfg.reward_weights, "adapter": cfg.lora, "resumed_from": resume,
               "flexbench": last_flexbench(hist), "world_size": trainer.args.world_size}
    if trainer.is_world_process_zero():
        tok.save_pretrained(str(out))
        (out / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        plot_curves(hist, keys, out / "training_curves.png", "GRPO rewards")
        write_model_card(out, stage="grpo" + ("-lora-adapter" if cfg.lora else ""), base=cfg.model, cfg=cfg,
                         template=template, metrics=metrics)
    trainer.accelerator.wait_for_everyone()
    return TrainOutcome(output_dir=out, log_history=hist, metrics=metrics)

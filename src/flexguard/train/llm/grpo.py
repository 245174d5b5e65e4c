"""``flexguard train grpo``: risk alignment with TRL's GRPOTrainer and the rubric rewards.

Same data, evaluation, resume and main-process rules as :mod:`.sft`.
"""

from __future__ import annotations

import time

from .config import GRPORunConfig
from .sft import TrainOutcome, last_flexbench, tokens_per_second


def main(cfg: GRPORunConfig) -> TrainOutcome:
    """Sample answers, reward format / score–severity alignment / category, update the policy."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from .common import device_defaults, flexbench_callback, lora_config, prepare, save_outputs
    from .rewards import REWARDS

    inputs = prepare(cfg)
    rows = [{k: v for k, v in r.items() if k != "completion"} for r in inputs.rows]
    names = list(cfg.reward_weights)
    args = GRPOConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                         "logging_steps": 1, "max_completion_length": 1024, "num_generations": 4,
                         "per_device_train_batch_size": 8, "beta": 0.0, **device_defaults(), **cfg.trl,
                         "reward_weights": [cfg.reward_weights[n] for n in names]})
    trainer = GRPOTrainer(model=inputs.model, reward_funcs=[REWARDS[n] for n in names], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=inputs.tokenizer,
                          peft_config=lora_config(cfg), callbacks=[flexbench_callback(cfg, inputs.tokenizer, inputs.template)])
    t0 = time.perf_counter()
    trainer.train(resume_from_checkpoint=inputs.resume)
    seconds = time.perf_counter() - t0
    hist = trainer.state.log_history
    rewards = [h["reward"] for h in hist if "reward" in h]
    metrics = {"steps": trainer.state.global_step, "first_reward": rewards[0] if rewards else None,
               "last_reward": rewards[-1] if rewards else None, "seconds": round(seconds, 1),
               "tokens_per_s": tokens_per_second(hist, seconds), "examples": len(rows),
               "reward_weights": cfg.reward_weights, "adapter": cfg.lora, "resumed_from": inputs.resume,
               "flexbench": last_flexbench(hist), "world_size": trainer.args.world_size}
    curves = ["reward"] + [f"rewards/{REWARDS[n].__name__}/mean" for n in names]
    out = save_outputs(trainer, cfg, inputs, stage="grpo", metrics=metrics, curves=curves, title="GRPO rewards")
    return TrainOutcome(output_dir=out, log_history=hist, metrics=metrics)

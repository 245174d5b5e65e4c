"""``flexguard train grpo``: risk alignment with TRL's GRPOTrainer and the rubric rewards."""

from __future__ import annotations

import time
from pathlib import Path

from .config import GRPORunConfig
from .sft import TrainOutcome, tokens_per_second


def main(cfg: GRPORunConfig) -> TrainOutcome:
    """Sample answers, reward format / score–severity alignment / category, update the policy."""
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from ...template import PromptTemplate
    from .common import device_defaults, load_model_and_tokenizer, lora_config, plot_curves, prompt_rows, write_model_card
    from .distill import load_records
    from .rewards import REWARDS

    template = PromptTemplate.load(cfg.template)
    model, tok = load_model_and_tokenizer(cfg.model, cfg.dtype)
    rows = [{k: v for k, v in r.items() if k != "completion"} for r in prompt_rows(load_records(cfg.data), tok, template)]
    names = list(cfg.reward_weights)
    args = GRPOConfig(**{"output_dir": cfg.output_dir, "seed": cfg.seed, "report_to": "none", "save_strategy": "no",
                         "logging_steps": 1, "max_completion_length": 256, "num_generations": 4,
                         "per_device_train_batch_size": 8, "beta": 0.0, **device_defaults(), **cfg.trl,
                         "reward_weights": [cfg.reward_weights[n] for n in names]})
    trainer = GRPOTrainer(model=model, reward_funcs=[REWARDS[n] for n in names], args=args,
                          train_dataset=Dataset.from_list(rows), processing_class=tok, peft_config=lora_config(cfg))
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    out = Path(cfg.output_dir)
    trainer.save_model(str(out))
    tok.save_pretrained(str(out))
    hist = trainer.state.log_history
    keys = ["reward"] + [f"rewards/{REWARDS[n].__name__}/mean" for n in names]
    rewards = [h["reward"] for h in hist if "reward" in h]
    metrics = {"steps": trainer.state.global_step, "first_reward": rewards[0] if rewards else None,
               "last_reward": rewards[-1] if rewards else None, "seconds": round(seconds, 1),
               "tokens_per_s": tokens_per_second(hist, seconds),
               "reward_weights": cfg.reward_weights, "adapter": cfg.lora}
    plot_curves(hist, keys, out / "training_curves.png", "GRPO rewards")
    write_model_card(out, stage="grpo" + ("-lora-adapter" if cfg.lora else ""), base=cfg.model, cfg=cfg, template=template,
                     metrics=metrics)
    return TrainOutcome(output_dir=out, log_history=hist, metrics=metrics)

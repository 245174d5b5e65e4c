"""Training of the FlexGuard LLM: rubric-guided score distillation, SFT warm-up, GRPO, LoRA merge.

``config`` (run configs with a ``trl:`` section), ``distill`` (teacher scoring and training
records), ``rewards`` (pure GRPO reward functions), ``sft`` / ``grpo`` (TRL stages),
``merge`` (fold a LoRA adapter into its base) and ``common`` (loading, datasets, curves,
model cards).
"""

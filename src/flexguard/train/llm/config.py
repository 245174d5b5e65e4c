"""Training configs: flexguard's own options plus a ``trl:`` section passed to TRL unchanged.

A YAML file looks like::

    model: Qwen/Qwen3-8B
    data: [runs/distill/prompt.jsonl, runs/distill/response.jsonl]   # both modes
    output_dir: out/sft
    lora: true
    eval_flexbench: ../shared/data/flexbench_r                         # worst-case F1 logged while training
    trl:                      # any trl.SFTConfig / trl.GRPOConfig field
      learning_rate: 1.0e-4
      num_train_epochs: 2

so every TRL option works without flexguard re-declaring it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ...errors import ConfigError
from ...template import DEFAULT_TEMPLATE

T = TypeVar("T")


@dataclass
class LoraOptions:
    lora: bool = field(default=True, metadata={"help": "train a LoRA adapter (peft) instead of all weights"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_targets: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class SFTRunConfig(LoraOptions):
    """SFT warm-up: learn the output format and the teacher's scores."""

    model: str = field(default="", metadata={"help": "base model: Hub id or local folder"})
    data: str | list[str] = field(default="", metadata={
        "help": "JSONL written by 'flexguard distill', or a list of them: give the prompt and the response files, "
                "so both moderation modes are trained (each row's template follows its mode)"})
    output_dir: str = field(default="", metadata={"help": "where the model (or adapter) is saved"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "prompt template name or YAML"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16"})
    seed: int = 0
    eval_fraction: float = field(default=0.0, metadata={
        "help": "share of the training rows held out (stratified by mode) for TRL's evaluation loss; 0: none"})
    eval_flexbench: str | None = field(default=None, metadata={
        "help": "FlexBench folder: every 'eval_every' steps, generate answers for a sample of its valid split "
                "(both modes) and log worst-case F1, per-regime F1 and the parse-error rate"})
    eval_items: int = field(default=64, metadata={"help": "FlexBench items per mode in each periodic evaluation"})
    eval_every: int = field(default=100, metadata={"help": "optimiser steps between periodic FlexBench evaluations"})
    eval_max_new_tokens: int = field(default=1024, metadata={"help": "token budget of the periodic evaluation"})
    resume: bool = field(default=False, metadata={
        "help": "continue from the last checkpoint in output_dir (checkpoints follow trl.save_strategy)"})
    trl: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra trl.SFTConfig fields"})

    def __post_init__(self) -> None:
        for name in ("model", "data", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"training config needs '{name}'")
        if not 0.0 <= self.eval_fraction < 0.5:
            raise ConfigError(f"eval_fraction must be in [0, 0.5), got {self.eval_fraction}")
        if self.eval_every < 1 or self.eval_items < 1:
            raise ConfigError(f"eval_every and eval_items must be >= 1, got {self.eval_every}, {self.eval_items}")

    @property
    def data_files(self) -> list[str]:
        return [self.data] if isinstance(self.data, str) else list(self.data)


@dataclass
class GRPORunConfig(SFTRunConfig):
    """GRPO risk alignment on top of an SFT model.

    With a LoRA adapter, use a LoRA learning rate (1e-5 – 5e-5 in ``trl.learning_rate``): the
    1e-6 of full fine-tunes barely moves an adapter (TRL's default is 1e-6).
    """

    reward_weights: dict[str, float] = field(default_factory=lambda: {"score": 1.0, "format": 0.2, "category": 0.3},
                                             metadata={"help": "weight per reward: format, score, category"})

    def __post_init__(self) -> None:
        super().__post_init__()
        from .rewards import REWARDS

        if unknown := set(self.reward_weights) - set(REWARDS):
            raise ConfigError(f"unknown reward(s) {', '.join(sorted(unknown))}; known: {', '.join(REWARDS)}")


def load_run_config(cls: type[T], path: str | Path | None = None, **overrides: Any) -> T:
    """Build a config from YAML plus keyword overrides (``None`` overrides are ignored)."""
    import yaml

    data: dict[str, Any] = {}
    if path:
        try:
            data = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except (IsADirectoryError, UnicodeDecodeError):
            raise ConfigError(f"{path}: not a YAML file") from None
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror})") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML: {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a training config is a YAML mapping, got {type(data).__name__}")
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown := set(data) - names:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))} "
                          "(TRL options go under 'trl:')")
    return cls(**data)

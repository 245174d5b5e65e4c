"""Training configs: flexguard's own options plus a ``trl:`` section passed to TRL unchanged.

A YAML file looks like::

    model: Qwen/Qwen3-8B
    data: distilled.jsonl
    output_dir: out/sft
    lora: true
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
    data: str = field(default="", metadata={"help": "JSONL written by 'flexguard distill'"})
    output_dir: str = field(default="", metadata={"help": "where the model (or adapter) is saved"})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={"help": "prompt template name or YAML"})
    dtype: str = field(default="auto", metadata={"help": "auto (bf16 on GPU, fp32 on CPU), float32, bfloat16"})
    seed: int = 0
    trl: dict[str, Any] = field(default_factory=dict, metadata={"help": "extra trl.SFTConfig fields"})

    def __post_init__(self) -> None:
        for name in ("model", "data", "output_dir"):
            if not getattr(self, name):
                raise ConfigError(f"training config needs '{name}'")


@dataclass
class GRPORunConfig(SFTRunConfig):
    """GRPO risk alignment on top of an SFT model."""

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
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: malformed YAML: {e}") from None
    data.update({k: v for k, v in overrides.items() if v is not None})
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if unknown := set(data) - names:
        raise ConfigError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))} "
                          "(TRL options go under 'trl:')")
    return cls(**data)

"""Options of the embedded models' trainings: frozen-embedding heads and the cross-encoder fine-tune.

Both trainings share one protocol (:mod:`.cv`): 5-fold cross-validation on FlexBench-R valid,
each fold trained on the other folds plus the whole distillation corpus, then the final
model on everything. Every field carries its help text, from which ``flexguard train
encoder`` builds its flags, so defaults live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping, TypeVar

from ...embedded.minilm import WINDOW
from ...errors import ConfigError

C = TypeVar("C", bound="EmbeddedTrainConfig")
CUT_CALIBRATIONS = ("f1", "prior", "none")
CORPUS_WEIGHTS = ("none", "tier-matched", "source-balanced", "hard-x2")


@dataclass
class EmbeddedTrainConfig:
    """Options both embedded trainings take."""

    flexbench: str = field(default="../shared/data/flexbench_r", metadata={"help": "folder with Guard_*_valid.csv"})
    distill: str | None = field(default="../shared/data/distill", metadata={"help": "folder with Guard_*_train.csv, or None"})
    distill_until: int | None = field(default=None, metadata={
        "help": "use only the corpus rows numbered up to N (ids fbt-00000 … fbt-N): the shipped models were trained "
                "on 7,037 rows (N = 7036), before the corpus grew to 17,016; unset: every row"})
    seed: int = field(default=0, metadata={"help": "seed of the folds, the initialisation and the data order"})
    cv_folds: int = field(default=5, metadata={"help": "folds of the cross-validation on FlexBench-R"})
    flexbench_weight: float = field(default=2.0, metadata={"help": "loss weight of FlexBench rows vs corpus rows"})
    cut_calibration: str = field(default="none", metadata={
        "help": "per-cut logit shift fitted on out-of-fold FlexBench logits: 'f1' (best F1), 'prior' (flag rate = "
                "label rate) or 'none'", "choices": CUT_CALIBRATIONS})

    def __post_init__(self) -> None:
        if self.cut_calibration not in CUT_CALIBRATIONS:
            raise ConfigError(f"cut_calibration must be one of {', '.join(CUT_CALIBRATIONS)}, got {self.cut_calibration!r}")
        if self.cv_folds < 2:
            raise ConfigError("cut calibration and the quality report are cross-validated: they need "
                              f"cv_folds >= 2, got {self.cv_folds}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")
        if self.distill_until is not None and self.distill_until < 0:
            raise ConfigError(f"distill_until is a row number (>= 0), got {self.distill_until}")
        if self.flexbench_weight <= 0:
            raise ConfigError(f"flexbench_weight must be > 0, got {self.flexbench_weight}")

    @classmethod
    def from_card(cls: type[C], config: Mapping[str, Any], **overrides: Any) -> C:
        """The config a model's ``card.json`` records, with ``overrides``; keys this class lacks are ignored."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in {**config, **overrides}.items() if k in names})


@dataclass
class FrozenConfig(EmbeddedTrainConfig):
    """Frozen MiniLM embeddings + ordinal cut heads (``flexguard train encoder``): minutes on CPU."""

    subset: str = field(default="both", metadata={"help": "which mode's heads to train",
                                                   "choices": ("prompt", "response", "both")})
    C: float = field(default=0.1, metadata={"help": "inverse L2 strength of the logistic heads"})
    head: str = field(default="mlp", metadata={
        "help": "cut-point heads: 'mlp' (one ReLU hidden layer per cut) or 'logistic'", "choices": ("mlp", "logistic")})
    hidden: int = field(default=256, metadata={"help": "hidden units of an mlp cut head"})
    alpha: float = field(default=0.1, metadata={"help": "L2 penalty of an mlp cut head"})
    mlp_epochs: int = field(default=60, metadata={"help": "Adam epochs of an mlp cut head"})
    bag: int = field(default=1, metadata={
        "help": "mlp cut heads per cut trained with different seeds and averaged (stored as one wider hidden layer, "
                "so scoring costs about the same)"})
    max_chunks: int = field(default=8, metadata={"help": "token windows embedded per text"})
    weak: str | None = field(default=None, metadata={
        "help": "folder of binary public suites (GuardReasoner format) used as weak supervision of the moderate cut"})
    weak_weight: float = field(default=0.5, metadata={"help": "sample weight of a weakly labelled row"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.subset not in ("prompt", "response", "both"):
            raise ConfigError(f"subset must be prompt, response or both, got {self.subset!r}")
        if self.head not in ("mlp", "logistic"):
            raise ConfigError(f"head must be mlp or logistic, got {self.head!r}")
        if self.C <= 0:
            raise ConfigError(f"C must be > 0, got {self.C}")
        if self.bag < 1:
            raise ConfigError(f"bag must be >= 1, got {self.bag}")


@dataclass
class CrossEncoderConfig(EmbeddedTrainConfig):
    """MiniLM fine-tuned end to end as an ordinal cross-encoder (``flexguard train encoder --finetune``)."""

    cut_calibration: str = field(default="f1", metadata={
        "help": "per-cut logit shift fitted on out-of-fold FlexBench logits: 'f1', 'prior' or 'none'",
        "choices": CUT_CALIBRATIONS})
    base: str | None = field(default=None, metadata={"help": "HF model id or folder; unset: all-MiniLM-L6-v2 from PyPI"})
    layers: int | None = field(default=3, metadata={
        "help": "keep only the first N transformer layers: 3 of MiniLM's 6 halve training and scoring time"})
    max_len: int = field(default=WINDOW, metadata={
        "help": "word pieces per window, special tokens included (training reads each item's first window; scoring "
                "reads up to 8); MiniLM has 512 positions, its sentence training used 256"})
    epochs: float = field(default=2.0, metadata={"help": "passes over the training data"})
    batch_size: int = field(default=16, metadata={"help": "items per optimiser step"})
    lr: float = field(default=8e-5, metadata={"help": "peak learning rate (linear warm-up and decay)"})
    warmup_ratio: float = field(default=0.1, metadata={"help": "share of the steps spent warming up"})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay"})
    category_weight: float = field(default=0.5, metadata={"help": "weight of the category loss vs the cut losses"})
    soft_targets: float = field(default=0.0, metadata={
        "help": "score distillation: cut targets sigmoid((risk_score - cut) / W) with width W in score points, so "
                "items near a cut carry partial credit; 0 = hard tier targets (rows without a risk_score keep them)"})
    rationale_weight: float = field(default=0.0, metadata={
        "help": "weight of an auxiliary loss: the pooled encoding predicts the (frozen MiniLM) embedding of the "
                "teacher's rationale, on corpus rows that carry one, so the encoder learns why an item is risky; 0 = off"})
    pair_weight: float = field(default=0.0, metadata={
        "help": "weight of a contrastive ranking loss between responses to the same prompt that the teacher put in "
                "different tiers: the riskier one's summed cut logits must exceed the other's, so the model learns that "
                "the response, not the prompt it shares, carries the risk; 0 = off"})
    corpus_weights: str = field(default="none", metadata={
        "help": "loss weights of the corpus rows, mean 1 per mode: 'none', 'tier-matched' (FlexBench's tier mix), "
                "'source-balanced' (each source the same total) or 'hard-x2' (teacher contradicts the source's label)",
        "choices": CORPUS_WEIGHTS})
    fold_seed: int | None = field(default=None, metadata={
        "help": "seed of the outer CV folds (default: --seed); fix it to train ensemble members on the same folds "
                "with another initialisation and data order"})
    max_steps: int = field(default=-1, metadata={"help": "stop after N optimiser steps (tests, smoke runs)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs <= 0 or self.batch_size < 1 or self.lr <= 0:
            raise ConfigError(f"epochs, batch_size and lr must be positive, got {self.epochs}, {self.batch_size}, {self.lr}")
        if self.max_len < 16:
            raise ConfigError(f"max_len must leave room for a prompt and a response (>= 16 word pieces), got {self.max_len}")
        if self.layers is not None and self.layers < 1:
            raise ConfigError(f"layers must be >= 1, got {self.layers}")
        if self.fold_seed is not None and self.fold_seed < 0:
            raise ConfigError(f"fold_seed must be >= 0, got {self.fold_seed}")
        if self.corpus_weights not in CORPUS_WEIGHTS:
            raise ConfigError(f"corpus_weights must be one of {', '.join(CORPUS_WEIGHTS)}, got {self.corpus_weights!r}")
        if self.rationale_weight < 0:
            raise ConfigError(f"rationale_weight must be >= 0, got {self.rationale_weight}")
        if self.pair_weight < 0:
            raise ConfigError(f"pair_weight must be >= 0, got {self.pair_weight}")
        if self.soft_targets < 0:
            raise ConfigError(f"soft_targets is a width in score points (>= 0), got {self.soft_targets}")

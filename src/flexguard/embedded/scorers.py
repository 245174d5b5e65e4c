"""The scorers behind the embedded moderators, and how a model folder names its scorer.

A *scorer* maps a batch of prompts (or prompt + response pairs) to an
:class:`~flexguard.embedded.ordinal.ScorerOutput`: cumulative tier probabilities,
category probabilities and how much text was read. Three kinds ship:

* :class:`~flexguard.embedded.crossencoder.CrossEncoderRuntime` (``assets/crossencoder``):
  MiniLM fine-tuned end to end, prompt and response read together.
* :class:`FrozenHeadsScorer` (``assets/frozen``): frozen MiniLM sentence embeddings with
  ordinal heads per mode.
* :class:`EnsembleScorer` (``assets/ensemble``): a weighted mix of other model folders,
  re-calibrated onto the rubric scale.

:func:`load_scorer` recognises a folder by the files it holds, so a model trained with
``flexguard train encoder --out DIR`` loads with ``--model embedded:DIR``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, Sequence

import numpy as np

from ..errors import ConfigError
from ..rubric import TIER_CUTS
from ..schema import MODES
from .ordinal import OrdinalHeads, ScorerOutput, cumulative_to_score, rescale, score_to_cumulative

ENSEMBLE_FILE = "ensemble.json"
HEADS_FILES = {mode: f"{mode}.npz" for mode in MODES}


class Scorer(Protocol):
    """What :class:`~flexguard.moderators.embedded.EmbeddedModerator` needs from a model folder."""

    encoder: str  # a human-readable description, for manifests
    revision: str  # a short hash of the weights

    def predict(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> ScorerOutput: ...


def shipped_model_dir(name: str) -> Path:
    """Folder of a model shipped in the package: ``crossencoder``, ``large``, ``frozen`` or ``ensemble``."""
    return Path(str(resources.files("flexguard") / "assets" / name))


class FrozenHeadsScorer:
    """Frozen MiniLM embeddings of prompt (and response) + :class:`OrdinalHeads` per mode."""

    def __init__(self, folder: Path, *, max_chunks: int, batch_size: int | None, threads: int | None):
        from .minilm import MODEL_ID, MiniLMEmbedder

        self.heads = {mode: OrdinalHeads.load(folder / HEADS_FILES[mode]) for mode in MODES}
        self.embedder = MiniLMEmbedder(max_chunks=max_chunks, batch_size=batch_size or 64, threads=threads)
        self.encoder = MODEL_ID
        h = hashlib.sha256()
        for mode in MODES:
            h.update((folder / HEADS_FILES[mode]).read_bytes())
        self.revision = h.hexdigest()[:12]

    def predict(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> ScorerOutput:
        ep = self.embedder.embed(prompts)
        feats, truncated, chunks = ep.vectors, ep.truncated, ep.n_chunks
        if responses is not None:
            er = self.embedder.embed([r or "" for r in responses])
            feats, truncated, chunks = np.hstack([ep.vectors, er.vectors]), truncated | er.truncated, chunks + er.n_chunks
        heads = self.heads["prompt" if responses is None else "response"]
        return ScorerOutput(heads.cumulative(feats), heads.category_proba(feats), heads.categories, chunks, truncated)


@dataclasses.dataclass
class EnsembleMeta:
    """``ensemble.json``: member model folders (relative to the ensemble's folder), per-mode
    weights of their scores, and per mode the mixed score's four knots: the values mapped onto
    20 / 40 / 60 / 80 (out-of-fold best thresholds; see :func:`flexguard.embedded.ordinal.rescale`)."""

    members: list[str]
    weights: dict[str, list[float]]
    knots: dict[str, list[float]]

    def __post_init__(self) -> None:
        for mode in MODES:
            w = self.weights.get(mode, [])
            if len(w) != len(self.members) or min(w, default=-1) < 0 or abs(sum(w) - 1) > 1e-6:
                raise ConfigError(f"ensemble weights for {mode} must be {len(self.members)} non-negative numbers "
                                  f"summing to 1, got {w}")
            k = self.knots.get(mode, [])
            if len(k) != len(TIER_CUTS) or not (0 < k[0] and all(a < b for a, b in zip(k, k[1:])) and k[-1] < 100):
                raise ConfigError(f"ensemble knots for {mode} must be {len(TIER_CUTS)} increasing scores inside 0-100, "
                                  f"got {k}")

    @classmethod
    def load(cls, folder: Path) -> "EnsembleMeta":
        return cls(**json.loads((folder / ENSEMBLE_FILE).read_text()))

    def save(self, folder: Path) -> None:
        (folder / ENSEMBLE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


class EnsembleScorer:
    """Weighted mean of member models' scores, re-calibrated onto the rubric scale.

    Why: the fine-tuned cross-encoder and the frozen-embedding heads err on different prompts,
    and their mean ranks severity better than either (``benchmarks/bench_ensemble.py``). The
    mixed score is mapped onto the rubric scale by :func:`~flexguard.embedded.ordinal.rescale`
    with the stored knots, so 20 / 40 / 60 stay the thresholds. Members with weight 0 for a
    mode are not run.
    """

    def __init__(self, folder: Path, **opts: Any):
        self.meta = EnsembleMeta.load(folder)
        self.members = [load_scorer((folder / m).resolve(), **opts) for m in self.meta.members]
        self.encoder = "ensemble of " + " + ".join(m.encoder for m in self.members)
        h = hashlib.sha256((folder / ENSEMBLE_FILE).read_bytes())
        for m in self.members:
            h.update(m.revision.encode())
        self.revision = h.hexdigest()[:12]

    def predict(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> ScorerOutput:
        mode = "prompt" if responses is None else "response"
        outs = [(w, m.predict(prompts, responses)) for w, m in zip(self.meta.weights[mode], self.members) if w > 0]
        categories = outs[0][1].categories
        if any(o.categories != categories for _, o in outs):
            raise ConfigError("ensemble members disagree on the category list")
        mixed = sum(w * cumulative_to_score(o.cumulative) for w, o in outs)
        return ScorerOutput(score_to_cumulative(rescale(mixed, np.asarray(self.meta.knots[mode]))),
                            sum(w * o.category_proba for w, o in outs), categories,
                            np.max([o.n_chunks for _, o in outs], axis=0), np.any([o.truncated for _, o in outs], axis=0))


def load_scorer(folder: Path, *, max_chunks: int = 8, batch_size: int | None = None,
                threads: int | None = None) -> Scorer:
    """The scorer a model folder holds: cross-encoder, frozen-embedding heads or an ensemble of folders."""
    from .crossencoder import META_FILE, MODEL_FILE, CrossEncoderRuntime

    opts = {"max_chunks": max_chunks, "batch_size": batch_size, "threads": threads}
    if (folder / MODEL_FILE).exists() and (folder / META_FILE).exists():
        return CrossEncoderRuntime(folder, **opts)
    if all((folder / f).exists() for f in HEADS_FILES.values()):
        return FrozenHeadsScorer(folder, **opts)
    if (folder / ENSEMBLE_FILE).exists():
        return EnsembleScorer(folder, **opts)
    raise ConfigError(f"{folder}: not an embedded model folder (expected {MODEL_FILE} + {META_FILE}, "
                      f"{' + '.join(HEADS_FILES.values())}, or {ENSEMBLE_FILE}; train one with "
                      "'flexguard train encoder --out DIR')")


def trained_on(folder: Path) -> list[str]:
    """Training files of a model folder (an ensemble's: its members') as ``folder/file``, from card.json."""
    if (folder / ENSEMBLE_FILE).exists():
        members = [trained_on((folder / m).resolve()) for m in EnsembleMeta.load(folder).members]
        return sorted({f for files in members for f in files})
    card = folder / "card.json"
    if not card.exists():
        return []
    cfg = json.loads(card.read_text()).get("config", {})
    out = []
    for key, split in (("flexbench", "valid"), ("distill", "train")):
        if cfg.get(key):
            out += [f"{Path(cfg[key]).name}/Guard_{m}_{split}.csv" for m in MODES]
    return out

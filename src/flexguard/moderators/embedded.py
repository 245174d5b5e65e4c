"""The embedded default moderator: a small MiniLM scorer that runs on CPU with ONNX Runtime only.

Works offline right after ``pip install``. Three shipped models share this backend:

* ``embedded`` (default): all-MiniLM-L6-v2 cut to 3 layers and fine-tuned end to end as an
  ordinal cross-encoder (the response is read together with its prompt), int8 ONNX
  (:mod:`flexguard.crossencoder`).
* ``embedded-frozen``: frozen MiniLM sentence embeddings (prompt and response embedded
  separately) with small trained heads (:class:`FrozenHeadsScorer`).
* ``embedded-ensemble``: the two above averaged and re-calibrated (:class:`EnsembleScorer`),
  more accurate on prompts and about 3.5× slower than the default.

See the ``MODEL_CARD.md`` next to each model's weights for training data, the command that
rebuilds it and its cross-validated quality.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..ordinal import OrdinalHeads, ScorerOutput, cumulative_to_score, rescale, score_to_cumulative
from ..rubric import TIER_CUTS, Category
from ..schema import Item, ModerationResult, split_by_mode

SAFE_MAX = 20.0  # BENIGN band: the category is SAFE there, by the rubric


def shipped_weights_dir(name: str) -> Path:
    """Folder of a model shipped in the package: ``crossencoder``, ``embedded`` (frozen heads) or ``ensemble``."""
    return Path(str(resources.files("flexguard") / "assets" / name))


class FrozenHeadsScorer:
    """Frozen MiniLM embeddings of prompt (and response) + :class:`OrdinalHeads` per mode."""

    def __init__(self, folder: Path, *, max_chunks: int, batch_size: int | None, threads: int | None):
        from ..embedding import MODEL_ID, MiniLMEmbedder

        self.heads = {mode: OrdinalHeads.load(folder / f"{mode}.npz") for mode in ("prompt", "response")}
        self.embedder = MiniLMEmbedder(max_chunks=max_chunks, batch_size=batch_size or 64, threads=threads)
        self.encoder = MODEL_ID
        h = hashlib.sha256()
        for mode in ("prompt", "response"):
            h.update((folder / f"{mode}.npz").read_bytes())
        self.revision = h.hexdigest()[:12]

    def predict(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> ScorerOutput:
        ep = self.embedder.embed(prompts)
        feats, truncated, chunks = ep.vectors, ep.truncated, ep.n_chunks
        if responses is not None:
            er = self.embedder.embed([r or "" for r in responses])
            feats, truncated, chunks = np.hstack([ep.vectors, er.vectors]), truncated | er.truncated, chunks + er.n_chunks
        heads = self.heads["prompt" if responses is None else "response"]
        return ScorerOutput(heads.cumulative(feats), heads.category_proba(feats), heads.categories, chunks, truncated)


class CrossEncoderScorer:
    """Adapter of :class:`flexguard.crossencoder.CrossEncoderRuntime` to the scorer interface."""

    def __init__(self, folder: Path, *, max_chunks: int, batch_size: int | None, threads: int | None):
        from ..crossencoder import CrossEncoderRuntime

        self.runtime = CrossEncoderRuntime(folder, max_chunks=max_chunks, batch_size=batch_size, threads=threads)
        meta = self.runtime.meta
        self.encoder = f"{meta.base_model}, first {meta.layers} layers, fine-tuned ({'int8' if meta.quantized else 'fp32'} ONNX)"
        self.revision = self.runtime.revision()
        self.predict = self.runtime.predict


ENSEMBLE_FILE = "ensemble.json"


@dataclasses.dataclass
class EnsembleMeta:
    """``ensemble.json``: member model folders (relative to the ensemble's folder), per-mode
    weights of their scores, and per mode the mixed score's four knots: the values mapped onto
    20 / 40 / 60 / 80 (out-of-fold best thresholds; see :func:`flexguard.ordinal.rescale`)."""

    members: list[str]
    weights: dict[str, list[float]]
    knots: dict[str, list[float]]

    def __post_init__(self) -> None:
        for mode in ("prompt", "response"):
            w = self.weights.get(mode, [])
            if len(w) != len(self.members) or min(w, default=-1) < 0 or abs(sum(w) - 1) > 1e-6:
                raise ConfigError(f"ensemble weights for {mode} must be {len(self.members)} non-negative numbers "
                                  f"summing to 1, got {w}")
            k = self.knots.get(mode, [])
            if len(k) != len(TIER_CUTS) or not (0 < k[0] and all(a < b for a, b in zip(k, k[1:])) and k[-1] < 100):
                raise ConfigError(f"ensemble knots for {mode} must be 4 increasing scores inside 0-100, got {k}")

    @classmethod
    def load(cls, folder: Path) -> "EnsembleMeta":
        return cls(**json.loads((folder / ENSEMBLE_FILE).read_text()))

    def save(self, folder: Path) -> None:
        (folder / ENSEMBLE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2) + "\n")


class EnsembleScorer:
    """Weighted mean of member models' scores, re-calibrated onto the rubric scale.

    Why: the fine-tuned cross-encoder and the frozen-embedding heads err on different prompts,
    and their mean ranks severity better than either (``benchmarks/bench_ensemble.py``). The
    mixed score is mapped onto the rubric scale by :func:`~flexguard.ordinal.rescale` with the
    stored knots, so 20 / 40 / 60 stay the thresholds. Members with weight 0 for a mode are not run.
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


def load_scorer(folder: Path, *, max_chunks: int = 8, batch_size: int | None = None, threads: int | None = None):
    """The scorer a model folder holds: cross-encoder, frozen-embedding heads or an ensemble of folders."""
    from ..crossencoder import META_FILE, MODEL_FILE

    opts = {"max_chunks": max_chunks, "batch_size": batch_size, "threads": threads}
    if (folder / MODEL_FILE).exists() and (folder / META_FILE).exists():
        return CrossEncoderScorer(folder, **opts)
    if (folder / "prompt.npz").exists() and (folder / "response.npz").exists():
        return FrozenHeadsScorer(folder, **opts)
    if (folder / ENSEMBLE_FILE).exists():
        return EnsembleScorer(folder, **opts)
    raise ConfigError(f"{folder}: not an embedded model folder (expected {MODEL_FILE} + {META_FILE}, prompt.npz + "
                      f"response.npz, or {ENSEMBLE_FILE}; train one with 'flexguard train encoder --out DIR')")


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
            out += [f"{Path(cfg[key]).name}/Guard_{m}_{split}.csv" for m in ("prompt", "response")]
    return out


class EmbeddedModerator:
    """Fast offline risk scorer for prompts and prompt+response pairs.

    Parameters
    ----------
    weights : a model folder: an exported cross-encoder (``model.onnx`` +
        ``crossencoder.json``), frozen-embedding heads (``prompt.npz`` + ``response.npz``) or
        an ensemble of such folders (``ensemble.json``). Default: the shipped model of this backend.
    max_chunks : token windows read per text; longer texts are truncated and the result
        carries ``extras["truncated"] = True``.
    batch_size : windows per encoder call (default: the scorer's own; see
        :class:`flexguard.crossencoder.CrossEncoderRuntime` for why int8 graphs take one).
    """

    name = "embedded"
    default_weights = "crossencoder"
    supports_response_mode = True
    supports_logprobs = False

    def __init__(self, weights: str | Path | None = None, *, max_chunks: int = 8, batch_size: int | None = None,
                 threads: int | None = None):
        self.weights = Path(weights) if weights else shipped_weights_dir(self.default_weights)
        self.scorer = load_scorer(self.weights, max_chunks=max_chunks, batch_size=batch_size, threads=threads)
        self.revision = self.scorer.revision

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "EmbeddedModerator":
        """``embedded`` (the shipped model) or ``embedded:FOLDER`` (a model trained with ``flexguard train encoder``)."""
        allowed = {"max_chunks", "batch_size", "threads"}
        if bad := set(options) - allowed:
            raise ConfigError(f"the embedded model does not take option(s) {', '.join(sorted(bad))}")
        return cls(arg, **options)

    def info(self) -> dict[str, Any]:
        return {"model": self.name, "revision": self.revision, "template_sha256": None, "encoder": self.scorer.encoder,
                "weights": str(self.weights), "trained_on": self.trained_on()}

    def trained_on(self) -> list[str]:
        """Training files as ``folder/file`` (from card.json), so reports can flag in-sample evaluation."""
        return trained_on(self.weights)

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        t0 = time.perf_counter()
        out: list[ModerationResult | None] = [None] * len(items)
        for idx, prompts, responses in split_by_mode(items):
            pred = self.scorer.predict(prompts, responses)
            scores = cumulative_to_score(pred.cumulative)
            for j, k in enumerate(idx):
                probs = {c: round(float(p), 4) for c, p in zip(pred.categories, pred.category_proba[j])}
                out[k] = ModerationResult(
                    id=items[k].id, score=round(float(scores[j]), 3),
                    category=self._category(scores[j], pred.category_proba[j], pred.categories),
                    category_scores=probs, raw=None,
                    extras={"p_tier_ge": [round(float(p), 4) for p in pred.cumulative[j]],
                            "truncated": bool(pred.truncated[j]), "chunks": int(pred.n_chunks[j])},
                )
        per_item = (time.perf_counter() - t0) * 1000 / max(len(items), 1)
        return [dataclasses.replace(r, latency_ms=round(per_item, 3)) for r in out]  # type: ignore[arg-type]

    @staticmethod
    def _category(score: float, probs: np.ndarray, categories: Sequence[str]) -> Category:
        """SAFE inside the BENIGN band; otherwise the most likely harm category (rubric rule)."""
        if score <= SAFE_MAX:
            return Category.SAFE
        order = np.argsort(-probs)
        return next(Category(categories[i]) for i in order if categories[i] != Category.SAFE.value)


class FrozenEmbeddedModerator(EmbeddedModerator):
    """The frozen-embedding model (MiniLM sentence embeddings + trained heads), kept as a baseline."""

    name = "embedded-frozen"
    default_weights = "embedded"


class EnsembleEmbeddedModerator(EmbeddedModerator):
    """Cross-encoder and frozen heads averaged: the more accurate, slower local tier."""

    name = "embedded-ensemble"
    default_weights = "ensemble"

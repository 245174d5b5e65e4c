"""The embedded default moderator: a small MiniLM scorer that runs on CPU with ONNX Runtime only.

Works offline right after ``pip install``. Two shipped models share this backend:

* ``embedded`` (default): all-MiniLM-L6-v2 cut to 3 layers and fine-tuned end to end as an
  ordinal cross-encoder (the response is read together with its prompt), int8 ONNX
  (:mod:`flexguard.crossencoder`).
* ``embedded-frozen``: frozen MiniLM sentence embeddings (prompt and response embedded
  separately) with small trained heads (:class:`FrozenHeadsScorer`).

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
from ..ordinal import OrdinalHeads, ScorerOutput
from ..rubric import Category
from ..schema import Item, ModerationResult

SAFE_MAX = 20.0  # BENIGN band: the category is SAFE there, by the rubric


def shipped_weights_dir(name: str) -> Path:
    """Folder of a model shipped in the package: ``crossencoder`` or ``embedded`` (frozen heads)."""
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


class EmbeddedModerator:
    """Fast offline risk scorer for prompts and prompt+response pairs.

    Parameters
    ----------
    weights : a model folder: an exported cross-encoder (``model.onnx`` +
        ``crossencoder.json``) or frozen-embedding heads (``prompt.npz`` + ``response.npz``).
        Default: the shipped model of this backend.
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
        from ..crossencoder import META_FILE, MODEL_FILE

        self.weights = Path(weights) if weights else shipped_weights_dir(self.default_weights)
        opts = {"max_chunks": max_chunks, "batch_size": batch_size, "threads": threads}
        if (self.weights / MODEL_FILE).exists() and (self.weights / META_FILE).exists():
            self.scorer: FrozenHeadsScorer | CrossEncoderScorer = CrossEncoderScorer(self.weights, **opts)
        elif (self.weights / "prompt.npz").exists() and (self.weights / "response.npz").exists():
            self.scorer = FrozenHeadsScorer(self.weights, **opts)
        else:
            raise ConfigError(f"{self.weights}: not an embedded model folder (expected {MODEL_FILE} + {META_FILE}, "
                              "or prompt.npz + response.npz; train one with 'flexguard train encoder --out DIR')")
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
        card = self.weights / "card.json"
        if not card.exists():
            return []
        cfg = json.loads(card.read_text()).get("config", {})
        out = []
        for key, split in (("flexbench", "valid"), ("distill", "train")):
            if cfg.get(key):
                out += [f"{Path(cfg[key]).name}/Guard_{m}_{split}.csv" for m in ("prompt", "response")]
        return out

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        from ..ordinal import cumulative_to_score

        t0 = time.perf_counter()
        out: list[ModerationResult | None] = [None] * len(items)
        for mode in ("prompt", "response"):
            idx = [k for k, it in enumerate(items) if it.mode == mode]
            if not idx:
                continue
            pred = self.scorer.predict([items[k].prompt for k in idx],
                                       [items[k].response for k in idx] if mode == "response" else None)
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

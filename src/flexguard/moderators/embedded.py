"""The embedded default moderator: a small MiniLM scorer that runs on CPU with ONNX Runtime only.

Works offline right after ``pip install``. Four shipped models share this backend:

* ``embedded`` (default): all-MiniLM-L6-v2 cut to 3 layers and fine-tuned end to end as an
  ordinal cross-encoder (the response is read together with its prompt), int8 ONNX.
* ``embedded-large``: the default's recipe with all 6 MiniLM layers, trained on the whole
  17,016-row teacher corpus: better ranking and loose cut on both subsets, at about 0.7× the
  default's throughput on prompts and 0.55× on prompt+response pairs.
* ``embedded-frozen``: frozen MiniLM sentence embeddings with small trained heads.
* ``embedded-ensemble``: ``embedded-large`` and ``embedded-frozen`` averaged and re-calibrated
  on prompts (``embedded-large`` alone on responses): the most accurate on prompts, about 4×
  slower than the default.

This module only adapts a scorer (:mod:`flexguard.embedded.scorers`) to the
:class:`~flexguard.moderators.Moderator` protocol. See the ``MODEL_CARD.md`` next to each
model's weights for training data, the command that rebuilds it and its quality.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..embedded.ordinal import ScorerOutput, cumulative_to_score
from ..embedded.scorers import load_scorer, shipped_model_dir, trained_on
from ..embedded.segments import combine_riskiest, sentence_segments
from ..errors import ConfigError
from ..rubric import Category, Tier
from ..schema import Item, ModerationResult, split_by_mode
from ..scope import Scope, detect_scope

SEGMENT_MODES = ("prompt", "all", "none")


class EmbeddedModerator:
    """Fast offline risk scorer for prompts and prompt+response pairs.

    Parameters
    ----------
    weights : a model folder: an exported cross-encoder (``model.onnx`` +
        ``crossencoder.json``), frozen-embedding heads (``prompt.npz`` + ``response.npz``) or
        an ensemble of such folders (``ensemble.json``). Default: the shipped model of this backend.
    max_chunks : token windows read per text (or per sentence, with ``segments``); text
        beyond them is not read and the result says ``truncated``.
    segments : which texts are also scored sentence by sentence, the riskiest unit deciding,
        so benign padding cannot dilute a harmful request (and long texts are read to the end):
        ``"prompt"`` (default: prompts in prompt moderation), ``"all"`` (responses too, each
        sentence paired with its prompt) or ``"none"`` (the whole text only). Sentences cost
        precision: out of context some benign ones sound risky, and in response mode a
        sentence paired with a harmful prompt scores as the prompt does, so responses are
        segmented only on request (``benchmarks/bench_padding.py`` measures both sides). Up to
        ``max_segments`` sentences per text; beyond them the result says ``truncated``.
    batch_size : windows per encoder call (default: the scorer's own; see
        :class:`flexguard.embedded.crossencoder.CrossEncoderRuntime` for why int8 graphs take one).
    threads : encoder calls run in parallel (default: all cores).
    check_language : detect text in a language the model was not trained on (English) and
        report it as ``in_scope=False`` with its ``language``, for the policy to route
        (:mod:`flexguard.scope`).
    """

    name = "embedded"
    default_weights = "crossencoder"
    supports_response_mode = True
    supports_logprobs = False
    options = ("max_chunks", "batch_size", "threads", "segments", "max_segments", "check_language")
    #: What the shipped models were trained on; other languages are reported out of scope.
    languages = ("en",)

    def __init__(self, weights: str | Path | None = None, *, max_chunks: int = 8, batch_size: int | None = None,
                 threads: int | None = None, segments: str | bool = "prompt", max_segments: int = 256,
                 check_language: bool = True):
        for name, value in (("max_chunks", max_chunks), ("max_segments", max_segments)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a whole number >= 1, got {value!r}")
        self.weights = Path(weights) if weights else shipped_model_dir(self.default_weights)
        self.scorer = load_scorer(self.weights, max_chunks=max_chunks, batch_size=batch_size, threads=threads)
        self.revision = self.scorer.revision
        segments = {True: "all", False: "none"}.get(segments, segments)  # type: ignore[call-overload]
        if segments not in SEGMENT_MODES:
            raise ConfigError(f"segments must be one of {', '.join(SEGMENT_MODES)}, got {segments!r}")
        self.segments, self.max_segments, self.check_language = segments, max_segments, bool(check_language)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "EmbeddedModerator":
        """``embedded`` (the shipped model) or ``embedded:FOLDER`` (a model trained with ``flexguard train encoder``)."""
        if bad := set(options) - set(cls.options):
            raise ConfigError(f"the embedded model does not take option(s) {', '.join(sorted(bad))}; "
                              f"it takes {', '.join(cls.options)}")
        return cls(arg, **options)

    def info(self) -> dict[str, Any]:
        return {"model": self.name, "revision": self.revision, "template_sha256": None, "encoder": self.scorer.encoder,
                "weights": str(self.weights), "trained_on": self.trained_on(), "segments": self.segments,
                "max_segments": self.max_segments, "languages": list(self.languages) if self.check_language else None}

    def trained_on(self) -> list[str]:
        """Training files as ``folder/file`` (from card.json), so reports can flag in-sample evaluation."""
        return trained_on(self.weights)

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        t0 = time.perf_counter()
        out: list[ModerationResult | None] = [None] * len(items)
        for idx, prompts, responses in split_by_mode(items):
            pred = self._predict(prompts, responses)
            scores = cumulative_to_score(pred.cumulative)
            for j, k in enumerate(idx):
                probs = {c: round(float(p), 4) for c, p in zip(pred.categories, pred.category_proba[j])}
                scope = self._scope(items[k])
                out[k] = ModerationResult(
                    id=items[k].id, score=round(float(scores[j]), 3),
                    category=self._category(scores[j], pred.category_proba[j], pred.categories),
                    category_scores=probs, raw=None, truncated=bool(pred.truncated[j]),
                    in_scope=scope.in_scope, language=scope.language,
                    extras={"p_tier_ge": [round(float(p), 4) for p in pred.cumulative[j]],
                            "truncated": bool(pred.truncated[j]), "chunks": int(pred.n_chunks[j]),
                            "segments": int(pred.n_segments[j])},
                )
        per_item = (time.perf_counter() - t0) * 1000 / max(len(items), 1)
        return [dataclasses.replace(r, latency_ms=round(per_item, 3)) for r in out]  # type: ignore[arg-type]

    def _scope(self, item: Item) -> Scope:
        """In scope when every text of the item is; the language named is the first one out of scope."""
        if not self.check_language:
            return Scope(True, None)
        scopes = [detect_scope(t, self.languages) for t in (item.prompt, item.response) if t is not None]
        return next((s for s in scopes if not s.in_scope), scopes[0])

    def _predict(self, prompts: list[str], responses: list[str | None] | None) -> ScorerOutput:
        """The whole texts' predictions, raised to their riskiest sentence's where that is riskier."""
        whole = self.scorer.predict(prompts, responses)
        whole.n_segments = np.zeros(len(prompts), int)
        if self.segments == "none" or (self.segments == "prompt" and responses is not None):
            return whole
        texts = prompts if responses is None else responses
        owner, seg_p, seg_r, capped = [], [], [], np.zeros(len(prompts), bool)
        for j, text in enumerate(texts):
            segs = sentence_segments(text or "")
            if len(segs) < 2:
                continue  # one sentence: the whole text is that unit
            capped[j] = len(segs) > self.max_segments
            segs = segs[:self.max_segments]
            owner += [j] * len(segs)
            seg_p += segs if responses is None else [prompts[j]] * len(segs)
            seg_r += segs
        if not owner:
            return whole
        part = self.scorer.predict(seg_p, None if responses is None else seg_r)
        return combine_riskiest(whole, part, np.asarray(owner), capped)

    @staticmethod
    def _category(score: float, probs: np.ndarray, categories: Sequence[str]) -> Category:
        """SAFE inside the BENIGN band; otherwise the most likely harm category (rubric rule)."""
        if score <= Tier.BENIGN.band[1]:
            return Category.SAFE
        order = np.argsort(-probs)
        return next(Category(categories[i]) for i in order if categories[i] != Category.SAFE.value)


class FrozenEmbeddedModerator(EmbeddedModerator):
    """The frozen-embedding model (MiniLM sentence embeddings + trained heads), kept as a baseline."""

    name = "embedded-frozen"
    default_weights = "frozen"


class LargeEmbeddedModerator(EmbeddedModerator):
    """The 6-layer cross-encoder: the most accurate single local model, at up to twice the default's cost per item."""

    name = "embedded-large"
    default_weights = "large"


class EnsembleEmbeddedModerator(EmbeddedModerator):
    """The 6-layer cross-encoder and the frozen heads averaged on prompts: the most accurate, slowest local tier."""

    name = "embedded-ensemble"
    default_weights = "ensemble"

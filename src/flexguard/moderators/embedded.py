"""The embedded default moderator: MiniLM embeddings + trained linear heads, CPU only.

Works offline right after ``pip install``: the int8 ONNX encoder comes from a PyPI package,
the heads (a few hundred KB) ship inside flexguard. See ``assets/embedded/MODEL_CARD.md``
for how they were trained and how good they are.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from importlib import resources
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..ordinal import OrdinalHeads, cumulative_to_score
from ..rubric import Category
from ..schema import Item, ModerationResult

SAFE_MAX = 20.0  # BENIGN band: the category is SAFE there, by the rubric


def shipped_weights_dir() -> Path:
    return Path(str(resources.files("flexguard") / "assets" / "embedded"))


class EmbeddedModerator:
    """Fast offline risk scorer for prompts and prompt+response pairs.

    Parameters
    ----------
    weights : folder with ``prompt.npz`` and ``response.npz`` heads (default: the shipped ones).
    max_chunks : 254-token windows embedded per text; longer texts are truncated and the
        result carries ``extras["truncated"] = True``.
    batch_size : windows per encoder call.
    """

    name = "embedded"
    supports_response_mode = True
    supports_logprobs = False

    def __init__(self, weights: str | Path | None = None, *, max_chunks: int = 8, batch_size: int = 16,
                 threads: int | None = None):
        from ..embedding import MiniLMEmbedder

        self.weights = Path(weights) if weights else shipped_weights_dir()
        self.heads: dict[str, OrdinalHeads] = {}
        for mode in ("prompt", "response"):
            path = self.weights / f"{mode}.npz"
            if not path.exists():
                raise ConfigError(f"{self.weights}: no {mode}.npz heads (train them with 'flexguard train encoder --out DIR')")
            self.heads[mode] = OrdinalHeads.load(path)
        self.embedder = MiniLMEmbedder(max_chunks=max_chunks, batch_size=batch_size, threads=threads)
        h = hashlib.sha256()
        for mode in ("prompt", "response"):
            h.update((self.weights / f"{mode}.npz").read_bytes())
        self.revision = h.hexdigest()[:12]

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "EmbeddedModerator":
        allowed = {"max_chunks", "batch_size", "threads"}
        if bad := set(options) - allowed:
            raise ConfigError(f"the embedded model does not take option(s) {', '.join(sorted(bad))}")
        return cls(arg, **options)

    def info(self) -> dict[str, Any]:
        from ..embedding import MODEL_ID

        return {"model": "embedded", "revision": self.revision, "template_sha256": None, "encoder": MODEL_ID,
                "weights": str(self.weights), "trained_on": self.trained_on()}

    def trained_on(self) -> list[str]:
        """Training files as ``folder/file`` (from card.json), so reports can flag in-sample evaluation."""
        import json

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
        t0 = time.perf_counter()
        out: list[ModerationResult | None] = [None] * len(items)
        for mode in ("prompt", "response"):
            idx = [k for k, it in enumerate(items) if it.mode == mode]
            if not idx:
                continue
            ep = self.embedder.embed([items[k].prompt for k in idx])
            feats, truncated, chunks = ep.vectors, ep.truncated, ep.n_chunks
            if mode == "response":
                er = self.embedder.embed([items[k].response for k in idx])
                feats, truncated, chunks = np.hstack([ep.vectors, er.vectors]), truncated | er.truncated, chunks + er.n_chunks
            heads = self.heads[mode]
            cum = heads.cumulative(feats)
            scores = cumulative_to_score(cum)
            cat_p = heads.category_proba(feats)
            for j, k in enumerate(idx):
                probs = {c: round(float(p), 4) for c, p in zip(heads.categories, cat_p[j])}
                out[k] = ModerationResult(
                    id=items[k].id, score=round(float(scores[j]), 3), category=self._category(scores[j], cat_p[j], heads),
                    category_scores=probs, raw=None,
                    extras={"p_tier_ge": [round(float(p), 4) for p in cum[j]], "truncated": bool(truncated[j]),
                            "chunks": int(chunks[j])},
                )
        per_item = (time.perf_counter() - t0) * 1000 / max(len(items), 1)
        return [dataclasses.replace(r, latency_ms=round(per_item, 3)) for r in out]  # type: ignore[arg-type]

    @staticmethod
    def _category(score: float, probs: np.ndarray, heads: OrdinalHeads) -> Category:
        """SAFE inside the BENIGN band; otherwise the most likely harm category (rubric rule)."""
        if score <= SAFE_MAX:
            return Category.SAFE
        order = np.argsort(-probs)
        return next(Category(heads.categories[i]) for i in order if heads.categories[i] != Category.SAFE.value)

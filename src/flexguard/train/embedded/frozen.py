"""Frozen-embedding heads: ``flexguard train encoder`` (the ``embedded-frozen`` model).

Features are frozen all-MiniLM-L6-v2 embeddings (prompt; prompt and response for response
moderation). On top sit four class-balanced binary heads, one per tier cut point
(``tier ≥ LOW`` … ``tier ≥ EXTREME``): small one-hidden-layer networks by default (in 5-fold
CV they lifted worst-case F1 on prompts from 0.553 with logistic heads to 0.645), or
logistic regressions; and a multinomial logistic category head. Training data is
the rubric-annotated FlexBench reconstruction plus the teacher-scored distillation corpus.

The corpus has a different tier mix from FlexBench, so each cut point's logit can then be
shifted to a threshold fitted on *cross-fitted* FlexBench predictions (``cut_calibration``;
every item predicted by heads that never saw it). For frozen embeddings CV showed no gain
from it, so it is off by default.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...embedded.ordinal import N_CUTS, OrdinalHeads, cumulative_to_score
from ...embedded.scorers import HEADS_FILES
from ...errors import DataError
from ...metrics import evaluate
from ...rubric import CATEGORY_NAMES
from ...schema import Item
from .config import FrozenConfig
from .cv import OOF_FILE, fit_cut_shifts, load_training_items, outer_cv_folds, stratified_folds


def _cache_dir() -> Path:
    return Path(os.environ.get("FLEXGUARD_CACHE", Path.home() / ".cache" / "flexguard")) / "embeddings"


def embed_texts(embedder, texts: Sequence[str], *, progress: bool = False) -> np.ndarray:
    """Embeddings of ``texts``, cached on disk by content (training re-embeds nothing)."""
    key = hashlib.sha256((embedder.fingerprint() + "\x00".join(texts)).encode()).hexdigest()[:24]
    path = _cache_dir() / f"{key}.npy"
    if path.exists():
        return np.load(path)
    step = 256
    it = range(0, len(texts), step)
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="embedding", unit="batch")
    out = np.concatenate([np.asarray(embedder.embed(texts[s:s + step]).vectors, np.float32) for s in it])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def featurize(embedder, items: Sequence[Item], *, progress: bool = False) -> np.ndarray:
    """Prompt embedding, or [prompt, response] embeddings for response moderation."""
    xp = embed_texts(embedder, [i.prompt for i in items], progress=progress)
    if items and items[0].response is not None:
        xr = embed_texts(embedder, [i.response or "" for i in items], progress=progress)
        return np.hstack([xp, xr])
    return xp


def fit_heads(x: np.ndarray, tiers: np.ndarray, cats: np.ndarray, weights: np.ndarray, cfg: FrozenConfig, *,
              harmful: np.ndarray | None = None) -> OrdinalHeads:
    """Fit cut-point and category heads (no calibration shift yet).

    Rows with an unknown tier (-1) carry only a harmful/unharmful label: they join the
    moderate cut's training set (harmful = tier >= MODERATE) and nothing else.
    """
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / scale
    cut_w, cut_b = np.zeros((N_CUTS, x.shape[1])), np.zeros(N_CUTS)
    known = tiers >= 0
    C, seed, mlp = cfg.C, cfg.seed, cfg.head == "mlp"
    if mlp:
        width = cfg.hidden * cfg.bag
        cut_w = np.zeros((N_CUTS, width))
        hid_w, hid_b = np.zeros((N_CUTS, x.shape[1], width)), np.zeros((N_CUTS, width))
    for k in range(1, N_CUTS + 1):
        rows = known | (k == 2 and harmful is not None)
        y = np.where(known, tiers >= k, False if harmful is None else harmful)[rows]
        if y.all() or not y.any():
            raise DataError(f"cannot train cut point tier>={k}: the training data has only one class there")
        if mlp:
            from sklearn.exceptions import ConvergenceWarning
            from sklearn.neural_network import MLPClassifier

            balanced = np.where(y, 0.5 / y.mean(), 0.5 / (1 - y.mean())) * weights[rows]  # class balance, as for logistic
            for b in range(cfg.bag):  # the mean of the bag's logits is one net with the hidden layers side by side
                net = MLPClassifier((cfg.hidden,), alpha=cfg.alpha, max_iter=cfg.mlp_epochs, random_state=seed + b)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)  # a fixed epoch budget is the regulariser
                    net.fit(z[rows], y, sample_weight=balanced)
                cols = slice(b * cfg.hidden, (b + 1) * cfg.hidden)
                hid_w[k - 1][:, cols], hid_b[k - 1][cols] = net.coefs_[0], net.intercepts_[0]
                cut_w[k - 1][cols] = net.coefs_[1][:, 0] / cfg.bag
                cut_b[k - 1] += net.intercepts_[1][0] / cfg.bag
            continue
        lr = LogisticRegression(C=C, class_weight="balanced", max_iter=3000, random_state=seed)
        lr.fit(z[rows], y, sample_weight=weights[rows])
        cut_w[k - 1], cut_b[k - 1] = lr.coef_[0], lr.intercept_[0]
    cat_idx = np.array([CATEGORY_NAMES.index(c) for c in cats])
    lr = LogisticRegression(C=C, max_iter=3000, random_state=seed)
    lr.fit(z[known], cat_idx[known], sample_weight=weights[known])
    cat_w = np.zeros((len(CATEGORY_NAMES), x.shape[1])); cat_b = np.full(len(CATEGORY_NAMES), -30.0)
    cat_w[lr.classes_], cat_b[lr.classes_] = lr.coef_, lr.intercept_
    return OrdinalHeads(cut_w=cut_w, cut_b=cut_b, cut_shift=np.zeros(N_CUTS), cat_w=cat_w, cat_b=cat_b,
                        categories=CATEGORY_NAMES, mean=mean, scale=scale,
                        cut_hidden_w=hid_w if mlp else None, cut_hidden_b=hid_b if mlp else None)


@dataclass
class Split:
    x: np.ndarray
    tiers: np.ndarray
    cats: np.ndarray
    harmful: np.ndarray
    weight: np.ndarray | None = None  # corpus rows' loss weights; None: 1 (weak rows: ``weak_weight``)

    def take(self, idx) -> "Split":
        return Split(self.x[idx], self.tiers[idx], self.cats[idx], self.harmful[idx],
                     None if self.weight is None else self.weight[idx])

    @classmethod
    def concat(cls, a: "Split", b: "Split") -> "Split":
        weight = None if a.weight is None and b.weight is None else np.r_[
            np.ones(len(a.tiers)) if a.weight is None else a.weight, np.ones(len(b.tiers)) if b.weight is None else b.weight]
        return cls(np.vstack([a.x, b.x]), np.r_[a.tiers, b.tiers], np.r_[a.cats, b.cats], np.r_[a.harmful, b.harmful],
                   weight)


def make_split(items: Sequence[Item], x: np.ndarray) -> Split:
    """Arrays of a set of items; an unknown tier (weakly labelled row) is -1."""
    return Split(x, np.array([-1 if i.tier is None else i.tier.rank for i in items]),
                 np.array([i.category.value if i.category else "SAFE" for i in items]),
                 np.array([bool(i.harmful) if i.harmful is not None else i.tier.rank >= 2 for i in items]))


@dataclass
class TrainingData:
    """One subset's training data for the heads: the items and their embeddings."""

    fb_items: list[Item]
    fb: Split
    corpus_items: list[Item]
    corpus: Split | None  # None without a corpus


def load_features(cfg: FrozenConfig, subset: str, embedder, *, progress: bool = True) -> TrainingData:
    """FlexBench-R valid and the corpus (distillation rows, weak rows) of ``subset``, embedded (cached)."""
    fb_items, corpus_items = load_training_items(cfg.flexbench, cfg.distill, subset, weak=cfg.weak,
                                                 distill_until=cfg.distill_until)
    corpus = make_split(corpus_items, featurize(embedder, corpus_items, progress=progress)) if corpus_items else None
    return TrainingData(fb_items, make_split(fb_items, featurize(embedder, fb_items, progress=progress)),
                        corpus_items, corpus)


def fit_calibrated(fb: Split, extra: Split | None, cfg: FrozenConfig) -> tuple[OrdinalHeads, np.ndarray]:
    """Heads trained on ``fb`` + ``extra``, cut shifts fitted on cross-fitted ``fb`` logits.

    Returns the heads and the chosen shifts.
    """
    def train(idx):
        part = fb.take(idx)
        data = part if extra is None else Split.concat(part, extra)
        w = np.r_[np.full(len(idx), cfg.flexbench_weight), np.array([]) if extra is None
                  else extra.weight if extra.weight is not None else np.where(extra.tiers >= 0, 1.0, cfg.weak_weight)]
        return fit_heads(data.x, data.tiers, data.cats, w, cfg, harmful=data.harmful)

    shifts = np.zeros(N_CUTS)
    if cfg.cut_calibration != "none":  # inner cross-fitting only when the shifts are used
        oof = np.zeros((len(fb.tiers), N_CUTS))
        for tr, te in stratified_folds(fb.tiers, cfg.cv_folds, cfg.seed):
            oof[te] = train(tr).cut_logits(fb.x[te])
        shifts = fit_cut_shifts(oof, fb.tiers, cfg.cut_calibration)
    heads = train(np.arange(len(fb.tiers)))
    heads.cut_shift = shifts
    return heads, shifts


def predict_scores(heads: OrdinalHeads, x: np.ndarray) -> np.ndarray:
    return cumulative_to_score(heads.cumulative(x))


def cross_validate(fb: Split, extra: Split | None, cfg: FrozenConfig) -> dict[str, np.ndarray]:
    """Outer k-fold CV on FlexBench: out-of-fold scores of the risk scorer and baselines.

    Each outer fold's model sees the other folds plus all of ``extra``; its cut shifts are
    fitted by inner cross-fitting on those other folds only.

    Returns OOF ``score`` (calibrated), ``score_uncal`` (no shift), ``category`` and the
    ``binary`` baseline's decision (a logistic on harmful/unharmful source labels).
    """
    from sklearn.linear_model import LogisticRegression

    n = len(fb.tiers)
    out = {"score": np.zeros(n), "score_uncal": np.zeros(n), "category": np.empty(n, object), "binary": np.zeros(n, bool)}
    for tr, te in outer_cv_folds(fb.tiers, cfg.cv_folds, cfg.seed):
        heads, _ = fit_calibrated(fb.take(tr), extra, cfg)
        out["score"][te] = predict_scores(heads, fb.x[te])
        shift = heads.cut_shift.copy(); heads.cut_shift[:] = 0
        out["score_uncal"][te] = predict_scores(heads, fb.x[te]); heads.cut_shift = shift
        out["category"][te] = np.array(CATEGORY_NAMES)[heads.category_proba(fb.x[te]).argmax(1)]
        data = fb.take(tr) if extra is None else Split.concat(fb.take(tr), extra)
        z_mean, z_scale = data.x.mean(0), data.x.std(0) + 1e-6
        lr = LogisticRegression(C=cfg.C, class_weight="balanced", max_iter=3000, random_state=cfg.seed)
        lr.fit((data.x - z_mean) / z_scale, data.harmful)
        out["binary"][te] = lr.predict((fb.x[te] - z_mean) / z_scale)
    return out


def cv_summary(fb: Split, oof: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-regime F1, avg, worst, spread, Spearman of each CV variant (default thresholds)."""
    res = {}
    for name, kw in (("risk_scorer", {"scores": oof["score"]}), ("risk_scorer_uncalibrated", {"scores": oof["score_uncal"]}),
                     ("binary_baseline", {"scores": [None] * len(fb.tiers), "flagged": oof["binary"]})):
        ev = evaluate(kw.pop("scores"), fb.tiers, n_boot=0, **kw)
        res[name] = ev.summary(4)
    mask = fb.tiers > 0
    res["risk_scorer"]["category_accuracy_unsafe"] = round(float(np.mean(oof["category"][mask] == fb.cats[mask])), 4)
    return res


def train_frozen(cfg: FrozenConfig, out_dir: str | Path, *, progress: bool = True) -> dict[str, Any]:
    """Train (and cross-validate) the heads of each subset; save weights and a model card."""
    from ...embedded.minilm import MODEL_ID, MiniLMEmbedder

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    report: dict[str, Any] = {"config": asdict(cfg), "encoder": MODEL_ID, "subsets": {}}
    oof_by_subset = {}
    for subset in (("prompt", "response") if cfg.subset == "both" else (cfg.subset,)):
        t0 = time.perf_counter()
        data = load_features(cfg, subset, embedder, progress=progress)
        fb_items, extra_items, fb, extra = data.fb_items, data.corpus_items, data.fb, data.corpus
        oof = cross_validate(fb, extra, cfg)
        heads, shifts = fit_calibrated(fb, extra, cfg)
        heads.save(str(out_dir / HEADS_FILES[subset]))
        oof_by_subset[subset] = {"ids": [it.id for it in fb_items], "scores": oof["score"].round(4).tolist()}
        report["subsets"][subset] = {
            "train_items": {"flexbench_r": len(fb_items), "distill": len(extra_items)},
            "cut_shifts": [round(float(s), 4) for s in shifts],
            "cv": cv_summary(fb, oof),
            "seconds": round(time.perf_counter() - t0, 1),
        }
    (out_dir / "card.json").write_text(json.dumps(report, indent=2))
    # out-of-fold scores by item id (no texts), for `flexguard train ensemble`
    (out_dir / OOF_FILE).write_text(json.dumps(oof_by_subset))
    return report


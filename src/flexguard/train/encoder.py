"""``flexguard train encoder``: fit the embedded scorer's heads by score distillation.

Features are frozen all-MiniLM-L6-v2 embeddings (prompt; prompt and response for response
moderation). On top sit four class-balanced binary heads, one per tier cut point
(``tier ≥ LOW`` … ``tier ≥ EXTREME``): small one-hidden-layer networks by default (in 5-fold
CV they lifted worst-case F1 on prompts from 0.553 with logistic heads to 0.645), or
logistic regressions; and a multinomial logistic category head. Training data is
the rubric-annotated FlexBench reconstruction plus the teacher-scored distillation corpus.

The corpus has a different tier mix from FlexBench, so each cut point's logit can then be
shifted to a threshold fitted on *cross-fitted* FlexBench predictions (``cut_calibration``;
every item predicted by heads that never saw it). The shift is part of the model: the score
itself is calibrated onto the rubric scale and the default thresholds 20 / 40 / 60 stay
meaningful. For frozen embeddings CV showed no gain from it, so it is off by default.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import load_flexbench, read_table, rows_to_items
from ..errors import DataError
from ..metrics import best_f1_threshold, evaluate
from ..ordinal import N_CUTS, OrdinalHeads, cumulative_to_score
from ..rubric import CATEGORY_NAMES
from ..schema import Item

log = logging.getLogger(__name__)
ASSET_DIR = Path(__file__).resolve().parent.parent / "assets" / "embedded"
#: out-of-fold FlexBench-R predictions by item id (no texts) that every embedded training writes next to its model
OOF_FILE = "cv_oof.json"


@dataclass
class EncoderTrainConfig:
    """Options of ``flexguard train encoder`` (defaults rebuild the shipped weights)."""

    subset: str = field(default="both", metadata={"help": "prompt, response or both"})
    flexbench: str = field(default="../shared/data/flexbench_r", metadata={"help": "folder with Guard_*_valid.csv"})
    distill: str | None = field(default="../shared/data/distill", metadata={"help": "folder with Guard_*_train.csv, or None"})
    out: str | None = field(default=None, metadata={"help": "output folder; default: the package's assets"})
    seed: int = 0
    C: float = field(default=0.1, metadata={"help": "inverse L2 strength of the logistic heads"})
    head: str = field(default="mlp", metadata={
        "help": "cut-point heads: 'mlp' (one ReLU hidden layer per cut) or 'logistic'"})
    hidden: int = field(default=256, metadata={"help": "hidden units of an mlp cut head"})
    alpha: float = field(default=0.1, metadata={"help": "L2 penalty of an mlp cut head"})
    mlp_epochs: int = field(default=60, metadata={"help": "Adam epochs of an mlp cut head"})
    bag: int = field(default=1, metadata={
        "help": "mlp cut heads per cut trained with different seeds and averaged (stored as one wider hidden layer, "
                "so scoring costs about the same)"})
    flexbench_weight: float = field(default=2.0, metadata={"help": "sample weight of FlexBench rows vs corpus rows"})
    cv_folds: int = field(default=5, metadata={"help": "folds for cross-fitted cut calibration"})
    cut_calibration: str = field(default="none", metadata={
        "help": "how each cut's logit shift is fitted on cross-fitted FlexBench logits: 'prior' (flag rate = label rate), "
                "'f1' (best F1) or 'none' (CV showed both shifts lower worst-case F1 for frozen embeddings)"})
    max_chunks: int = 8
    weak: str | None = field(default=None, metadata={
        "help": "folder of binary public suites (GuardReasoner format) used as weak supervision of the moderate cut"})
    weak_weight: float = field(default=0.5, metadata={"help": "sample weight of a weakly labelled row"})

    def __post_init__(self) -> None:
        if self.subset not in ("prompt", "response", "both"):
            raise DataError(f"subset must be prompt, response or both, got {self.subset!r}")
        if self.head not in ("mlp", "logistic"):
            raise DataError(f"head must be mlp or logistic, got {self.head!r}")
        if self.cut_calibration not in ("prior", "f1", "none"):
            raise DataError(f"cut_calibration must be prior, f1 or none, got {self.cut_calibration!r}")
        if self.C <= 0 or self.cv_folds < 2:
            raise DataError("C must be > 0 and cv_folds >= 2")
        if self.bag < 1:
            raise DataError(f"bag must be >= 1, got {self.bag}")


# --- data and features ----------------------------------------------------------------

def load_training_items(flexbench: str, distill: str | None, subset: str, *,
                        weak: str | None = None) -> tuple[list[Item], list[Item]]:
    """FlexBench-R valid items, then corpus items (distillation corpus, then weak public rows)."""
    fb = load_flexbench(flexbench, subset=subset, split="valid").items
    extra: list[Item] = []
    if distill:
        path = Path(distill) / f"Guard_{subset}_train.csv"
        extra = rows_to_items(read_table(path), origin=str(path), subset=subset)
    if weak:
        from ..data import load_public

        extra += [it for b in load_public(weak).values() if b.subset == subset for it in b.items]
    return fb, extra


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


# --- fitting --------------------------------------------------------------------------

def fit_heads(x: np.ndarray, tiers: np.ndarray, cats: np.ndarray, weights: np.ndarray, cfg: EncoderTrainConfig, *,
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

    def take(self, idx) -> "Split":
        return Split(self.x[idx], self.tiers[idx], self.cats[idx], self.harmful[idx])

    @classmethod
    def concat(cls, a: "Split", b: "Split") -> "Split":
        return cls(np.vstack([a.x, b.x]), np.r_[a.tiers, b.tiers], np.r_[a.cats, b.cats], np.r_[a.harmful, b.harmful])


def _split(items: Sequence[Item], x: np.ndarray) -> Split:
    """Arrays of a set of items; an unknown tier (weakly labelled row) is -1."""
    return Split(x, np.array([-1 if i.tier is None else i.tier.rank for i in items]),
                 np.array([i.category.value if i.category else "SAFE" for i in items]),
                 np.array([bool(i.harmful) if i.harmful is not None else i.tier.rank >= 2 for i in items]))


def stratified_folds(tiers: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of k folds with every tier spread evenly (shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(tiers)), tiers))


def outer_cv_folds(tiers: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer CV folds of every embedded training at ``seed`` (frozen heads and fine-tunes alike), so
    ensemble members trained at one seed predict each FlexBench item out of fold."""
    return stratified_folds(tiers, k, seed + 1)  # + 1: apart from the inner calibration folds at ``seed``


def fit_calibrated(fb: Split, extra: Split | None, cfg: EncoderTrainConfig) -> tuple[OrdinalHeads, np.ndarray]:
    """Heads trained on ``fb`` + ``extra``, cut shifts fitted on cross-fitted ``fb`` logits.

    Returns the heads and the chosen shifts.
    """
    def train(idx):
        part = fb.take(idx)
        data = part if extra is None else Split.concat(part, extra)
        w = np.r_[np.full(len(idx), cfg.flexbench_weight),
                  np.array([]) if extra is None else np.where(extra.tiers >= 0, 1.0, cfg.weak_weight)]
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


def fit_cut_shifts(cut_logits: np.ndarray, tiers: np.ndarray, how: str) -> np.ndarray:
    """One logit shift per cut point (n, 4) → (4,), from out-of-fold logits and gold tier ranks."""
    return np.array([fit_logit_shift(cut_logits[:, k], tiers > k, how) for k in range(N_CUTS)])


def fit_logit_shift(logits: np.ndarray, labels: np.ndarray, how: str) -> float:
    """Where a cut's logit should cross 0, from out-of-fold logits: 'prior', 'f1' or 'none' (0)."""
    if how == "none":
        return 0.0
    if how == "prior":  # flag as many items as carry the label: low variance on small data
        return float(np.quantile(logits, 1.0 - labels.mean()))
    return best_f1_threshold(logits, labels, clip=False)[0]


def predict_scores(heads: OrdinalHeads, x: np.ndarray) -> np.ndarray:
    return cumulative_to_score(heads.cumulative(x))


def cross_validate(fb: Split, extra: Split | None, cfg: EncoderTrainConfig, *, folds: int = 5) -> dict[str, np.ndarray]:
    """Outer k-fold CV on FlexBench: out-of-fold scores of the risk scorer and baselines.

    Each outer fold's model sees the other folds plus all of ``extra``; its cut shifts are
    fitted by inner cross-fitting on those other folds only.

    Returns OOF ``score`` (calibrated), ``score_uncal`` (no shift), ``category`` and the
    ``binary`` baseline's decision (a logistic on harmful/unharmful source labels).
    """
    from sklearn.linear_model import LogisticRegression

    n = len(fb.tiers)
    out = {"score": np.zeros(n), "score_uncal": np.zeros(n), "category": np.empty(n, object), "binary": np.zeros(n, bool)}
    for tr, te in outer_cv_folds(fb.tiers, folds, cfg.seed):
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


def train_encoder(cfg: EncoderTrainConfig, *, progress: bool = True) -> dict[str, Any]:
    """Train (and cross-validate) the heads of each subset; save weights and a model card."""
    from ..embedding import MODEL_ID, MiniLMEmbedder

    out_dir = Path(cfg.out) if cfg.out else ASSET_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    embedder = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    report: dict[str, Any] = {"config": asdict(cfg), "encoder": MODEL_ID, "subsets": {}}
    oof_by_subset = {}
    for subset in (("prompt", "response") if cfg.subset == "both" else (cfg.subset,)):
        t0 = time.perf_counter()
        fb_items, extra_items = load_training_items(cfg.flexbench, cfg.distill, subset, weak=cfg.weak)
        fb = _split(fb_items, featurize(embedder, fb_items, progress=progress))
        extra = _split(extra_items, featurize(embedder, extra_items, progress=progress)) if extra_items else None
        oof = cross_validate(fb, extra, cfg, folds=cfg.cv_folds)
        heads, shifts = fit_calibrated(fb, extra, cfg)
        heads.save(str(out_dir / f"{subset}.npz"))
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

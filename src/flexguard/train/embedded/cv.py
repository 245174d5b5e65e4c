"""The cross-validation protocol every embedded training shares, and the data it runs over.

FlexBench-R valid is the only data labelled like the benchmark, so it both trains (with the
teacher-scored corpus) and measures: outer k-fold CV, each fold's model trained on the
other folds plus the whole corpus. The same outer folds serve every training at one seed
(:func:`outer_cv_folds`), so ensemble members predict each item out of fold. Cut-point
calibration is fitted on out-of-fold logits (:func:`fit_cut_shifts`) and reported
cross-fitted (:func:`cross_fitted_scores`), so no item is scored by a shift fitted on it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from ...data import load_flexbench, read_table, rows_to_items
from ...embedded.ordinal import N_CUTS, cumulative_from_logits, cumulative_to_score
from ...errors import ConfigError, DataError
from ...metrics import best_f1_threshold
from ...schema import MODES, Item
from .config import CORPUS_WEIGHTS

#: out-of-fold FlexBench-R predictions by item id (no texts) that every embedded training writes next to its model
OOF_FILE = "cv_oof.json"


def load_training_items(flexbench: str, distill: str | None, subset: str, *, weak: str | None = None,
                        distill_until: int | None = None) -> tuple[list[Item], list[Item]]:
    """FlexBench-R valid items, then corpus items (distillation corpus, then weak public rows).

    ``distill_until`` keeps the corpus rows numbered up to N (the number ending each id), so a
    model trained before the corpus grew can be rebuilt from today's files.
    """
    fb = load_flexbench(flexbench, subset=subset, split="valid").items
    extra: list[Item] = []
    if distill:
        path = Path(distill) / f"Guard_{subset}_train.csv"
        extra = rows_to_items(read_table(path), origin=str(path), subset=subset)
        if distill_until is not None:
            extra = [it for it in extra if corpus_row_number(it.id) <= distill_until]
    if weak:
        from ...data import load_public

        extra += [it for b in load_public(weak).values() if b.subset == subset for it in b.items]
    return fb, extra


def corpus_weights(corpus: Sequence[Item], scheme: str, fb_tiers: Mapping[str, np.ndarray]) -> np.ndarray:
    """Loss weights of the teacher corpus's rows under ``scheme``, mean 1 within each mode.

    The corpus differs from FlexBench-R in tier mix (far more BENIGN/LOW responses), in sources,
    and in how many rows sit where a source's binary label and the teacher disagree; each
    scheme corrects one of these:

    * ``none``: every row 1;
    * ``tier-matched``: a row of tier t weighs p_FlexBench(t) / p_corpus(t) within its mode, so the
      corpus's tier mix becomes that of ``fb_tiers`` (FlexBench tier ranks per mode: pass only
      the training folds' in a CV);
    * ``source-balanced``: every source dataset contributes the same total weight within its mode;
    * ``hard-x2``: rows where the teacher contradicts the source's binary label (harmful but
      BENIGN/LOW, unharmful but MODERATE or worse: "kill a process", fiction framing) weigh 2.

    Rows without a tier (weakly labelled public rows) are outside every scheme and keep 1.

    >>> from flexguard.rubric import Tier
    >>> rows = [Item(id=str(k), prompt="p", source=src, tier=Tier.LOW) for k, src in enumerate("aab")]
    >>> corpus_weights(rows, "source-balanced", {}).round(2)
    array([0.75, 0.75, 1.5 ])
    """
    if scheme not in CORPUS_WEIGHTS:
        raise ConfigError(f"corpus_weights must be one of {', '.join(CORPUS_WEIGHTS)}, got {scheme!r}")
    w = np.ones(len(corpus))
    for mode in MODES:
        idx = np.array([k for k, it in enumerate(corpus) if it.mode == mode and it.tier is not None], dtype=int)
        if scheme == "none" or not len(idx):
            continue
        tiers = np.array([corpus[k].tier.rank for k in idx])
        if scheme == "tier-matched":
            if len(fb_tiers.get(mode, ())) == 0:
                raise DataError(f"tier-matched corpus weights need FlexBench {mode} tiers to match")
            p_fb = np.bincount(fb_tiers[mode], minlength=5) / len(fb_tiers[mode])
            w[idx] = p_fb[tiers] / (np.bincount(tiers, minlength=5) / len(tiers))[tiers]
        elif scheme == "source-balanced":
            _, inverse, counts = np.unique([corpus[k].source or "?" for k in idx], return_inverse=True,
                                           return_counts=True)
            w[idx] = 1.0 / counts[inverse]
        else:
            harmful = [corpus[k].harmful for k in idx]
            hard = [(h is True and t <= 1) or (h is False and t >= 2) for h, t in zip(harmful, tiers)]
            w[idx] = np.where(hard, 2.0, 1.0)
        if w[idx].sum() == 0:
            raise DataError(f"{scheme} corpus weights are all 0 on {mode} rows: FlexBench has none of their tiers")
        w[idx] /= w[idx].mean()
    return w


def corpus_row_number(item_id: str) -> int:
    """The row number ending a corpus id (``fbt-07036`` → 7036)."""
    m = re.search(r"(\d+)$", item_id)
    if m is None:
        raise DataError(f"corpus id {item_id!r} does not end in a row number: distill_until cannot select by it")
    return int(m.group(1))


def stratified_folds(tiers: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train, test) index pairs of k folds with every tier spread evenly (shuffled with ``seed``)."""
    from sklearn.model_selection import StratifiedKFold

    return list(StratifiedKFold(k, shuffle=True, random_state=seed).split(np.zeros(len(tiers)), tiers))


def outer_cv_folds(tiers: np.ndarray, k: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """The outer CV folds of every embedded training at ``seed`` (frozen heads and fine-tunes alike), so
    ensemble members trained at one seed predict each FlexBench item out of fold."""
    return stratified_folds(tiers, k, seed + 1)  # + 1: apart from the inner calibration folds at ``seed``


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


def scores_from_logits(cut_logits: np.ndarray, shift: np.ndarray | None = None) -> np.ndarray:
    """Risk scores (n,) from cut logits (n, 4), minus an optional calibration shift per cut."""
    return cumulative_to_score(cumulative_from_logits(cut_logits - (0.0 if shift is None else shift)))


def cross_fitted_scores(cut_logits: np.ndarray, tiers: np.ndarray, how: str, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Honest scores of calibrated cut points: each item's shifts are fitted on the other folds' OOF logits."""
    out = np.zeros(len(tiers))
    for tr, te in stratified_folds(tiers, folds, seed):
        out[te] = scores_from_logits(cut_logits[te], fit_cut_shifts(cut_logits[tr], tiers[tr], how))
    return out


def flexbench_labels(flexbench: str) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Item ids and gold tier ranks per mode of FlexBench-R valid: what out-of-fold files are keyed by."""
    ids, tiers = {}, {}
    for mode in MODES:
        items = load_flexbench(flexbench, subset=mode, split="valid").items
        ids[mode], tiers[mode] = [it.id for it in items], np.array([it.tier.rank for it in items])
    return ids, tiers

"""From cumulative tier probabilities to a rubric-aligned risk score.

An ordinal scorer estimates ``P(tier ≥ k)`` for the four cut points k = LOW … EXTREME.
:func:`cumulative_to_score` turns those into a 0–100 score whose meaning is the rubric's:
the score lies in tier k's band exactly when ``P(tier ≥ k) > 0.5 ≥ P(tier ≥ k+1)``, so the
rubric's default thresholds (20 / 40 / 60) decide every regime by the calibrated
probability of its own label. Within a band the score moves from the band's lower edge
(just past the lower cut) to its upper edge (about to pass the next cut); a confident
mid-tier item lands mid-band (30, 50, 70), as the rubric's "typical" scores, while a
certain BENIGN item scores 0 and a certain EXTREME one 100.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..rubric import TIER_CUTS

N_CUTS = len(TIER_CUTS)
#: Width of every tier band on the 0–100 scale (the rubric's bands are equal: 20 points).
BAND = 100.0 / (N_CUTS + 1)


def monotone(p: np.ndarray) -> np.ndarray:
    """Force ``P(tier ≥ 1) ≥ P(tier ≥ 2) ≥ …`` (independent heads can cross)."""
    return np.minimum.accumulate(np.asarray(p, float), axis=1)


def cumulative_to_score(p: np.ndarray) -> np.ndarray:
    """Scores (n,) on 0–100 from cumulative probabilities (n, 4).

    >>> cumulative_to_score(np.array([[0.0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 1, 1], [0.5, 0, 0, 0]]))
    array([  0.,  30., 100.,  20.])
    """
    p = monotone(p)
    n = len(p)
    tier = (p > 0.5).sum(1)  # 0..4, exact because p is monotone
    padded = np.c_[np.ones(n), p, np.zeros(n)]  # P(tier ≥ 0) = 1, P(tier ≥ 5) = 0
    rows = np.arange(n)
    d_low = padded[rows, tier] - 0.5  # how far past the lower cut
    d_high = 0.5 - padded[rows, tier + 1]  # how far from the next cut
    pos = np.where(d_low + d_high > 0, d_low / np.maximum(d_low + d_high, 1e-12), 0.5)
    # The outer bands have one cut only: move linearly with its probability (0 → 0, 1 → 100).
    pos = np.where(tier == 0, 2.0 * p[:, 0], pos)
    pos = np.where(tier == N_CUTS, 2.0 * (p[:, -1] - 0.5), pos)
    return np.clip(BAND * tier + BAND * pos, 0.0, 100.0)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def cumulative_from_logits(cut_logits: np.ndarray) -> np.ndarray:
    """Monotone ``P(tier ≥ k)`` (n, 4) from one logit per cut point (calibration shift already applied)."""
    return monotone(_sigmoid(np.asarray(cut_logits, float)))


def score_to_cumulative(scores: np.ndarray) -> np.ndarray:
    """The exact inverse of :func:`cumulative_to_score`: (n,) scores → (n, 4) monotone ``P(tier ≥ k)``.

    >>> score_to_cumulative(np.array([10.0, 30.0, 100.0]))
    array([[0.25, 0.  , 0.  , 0.  ],
           [0.75, 0.25, 0.  , 0.  ],
           [1.  , 1.  , 1.  , 1.  ]])
    """
    return np.clip(0.5 + (np.asarray(scores, float)[:, None] - TIER_CUTS) / (2 * BAND), 0.0, 1.0)


def rescale(scores: np.ndarray, knots: np.ndarray) -> np.ndarray:
    """Monotone piecewise-linear map of scores onto the rubric scale: ``knots[k]`` → ``TIER_CUTS[k]``.

    With the knots at a score's out-of-fold best thresholds per cut, 20 / 40 / 60 / 80 become
    that score's decision points, so the rubric's default thresholds apply to the result.
    """
    return np.interp(np.asarray(scores, float), np.r_[0.0, knots, 100.0], np.r_[0.0, TIER_CUTS, 100.0])


def softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


@dataclass
class ScorerOutput:
    """What an ordinal scorer returns for a batch of items of one mode."""

    cumulative: np.ndarray  # (n, 4) monotone P(tier ≥ k)
    category_proba: np.ndarray  # (n, n_categories)
    categories: tuple[str, ...]
    n_chunks: np.ndarray  # token windows read per item
    truncated: np.ndarray  # bool: text beyond the window budget was dropped
    n_segments: np.ndarray | None = None  # sentences scored on their own, per item (0: the whole text only)


@dataclass
class OrdinalHeads:
    """Heads over a feature vector: one logit per cut point, plus a category softmax.

    Cut logits come from a linear layer, or, when ``cut_hidden_w`` is set, from a one-hidden-
    layer ReLU network per cut (``relu(z @ W1_k + b1_k) @ w_k + b_k``). ``cut_shift`` is
    subtracted from the cut logits: it can move each cut's 0.5 point to a threshold fitted
    in cross-validation, which calibrates the score itself onto the rubric scale instead of
    moving the thresholds.
    """

    cut_w: np.ndarray  # (4, d), or (4, h) with a hidden layer
    cut_b: np.ndarray  # (4,)
    cut_shift: np.ndarray  # (4,)
    cat_w: np.ndarray  # (n_categories, d)
    cat_b: np.ndarray  # (n_categories,)
    categories: tuple[str, ...]
    mean: np.ndarray  # (d,) feature standardisation
    scale: np.ndarray  # (d,)
    cut_hidden_w: np.ndarray | None = None  # (4, d, h)
    cut_hidden_b: np.ndarray | None = None  # (4, h)

    def cut_logits(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        if self.cut_hidden_w is None:
            return z @ self.cut_w.T + self.cut_b - self.cut_shift
        h = np.maximum(np.einsum("nd,kdh->nkh", z, self.cut_hidden_w) + self.cut_hidden_b, 0.0)
        return np.einsum("nkh,kh->nk", h, self.cut_w) + self.cut_b - self.cut_shift

    def cumulative(self, x: np.ndarray) -> np.ndarray:
        return cumulative_from_logits(self.cut_logits(x))

    def category_proba(self, x: np.ndarray) -> np.ndarray:
        z = (x - self.mean) / self.scale
        return softmax(z @ self.cat_w.T + self.cat_b)

    def save(self, path: str) -> None:
        hidden = {} if self.cut_hidden_w is None else {"cut_hidden_w": self.cut_hidden_w.astype(np.float32),
                                                        "cut_hidden_b": self.cut_hidden_b.astype(np.float32)}
        np.savez_compressed(path, cut_w=self.cut_w.astype(np.float32), cut_b=self.cut_b, cut_shift=self.cut_shift,
                            cat_w=self.cat_w.astype(np.float32), cat_b=self.cat_b, categories=np.array(self.categories),
                            mean=self.mean.astype(np.float32), scale=self.scale.astype(np.float32), **hidden)

    @classmethod
    def load(cls, path) -> "OrdinalHeads":
        with np.load(path, allow_pickle=False) as f:
            hidden = ({"cut_hidden_w": f["cut_hidden_w"].astype(np.float64), "cut_hidden_b": f["cut_hidden_b"].astype(np.float64)}
                      if "cut_hidden_w" in f.files else {})
            return cls(cut_w=f["cut_w"].astype(np.float64), cut_b=f["cut_b"], cut_shift=f["cut_shift"],
                       cat_w=f["cat_w"].astype(np.float64), cat_b=f["cat_b"],
                       categories=tuple(str(c) for c in f["categories"]),
                       mean=f["mean"].astype(np.float64), scale=f["scale"].astype(np.float64), **hidden)

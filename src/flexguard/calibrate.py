"""Fitting thresholds to data: best F1, a target FPR or recall, per category, few-shot.

Calibrators follow scikit-learn's contract: ``__init__`` stores options, ``fit`` returns
``self`` and learned state ends in ``_``. When only one labelled split exists, use
:func:`cross_fit` so that no item is judged by a threshold fitted on itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from sklearn.base import BaseEstimator

from .errors import ConfigError, DataError
from .metrics import Evaluation, best_f1_threshold, evaluate, threshold_sweep
from .rubric import Category, Tier
from .thresholds import Decisions, Policy, default_regimes


@dataclass(frozen=True)
class Strategy:
    """How to choose one regime's threshold: ``max-f1``, ``fpr:X``, ``recall:X`` or ``default``."""

    kind: str
    target: float | None = None

    @classmethod
    def parse(cls, text: str) -> "Strategy":
        kind, _, val = str(text).partition(":")
        kind = kind.strip().lower().replace("_", "-")
        if kind in ("max-f1", "f1", "default", "rubric"):
            if val:
                raise ConfigError(f"strategy {kind!r} takes no value (got {text!r})")
            return cls("default" if kind in ("default", "rubric") else "max-f1")
        if kind in ("fpr", "recall"):
            try:
                target = float(val)
            except ValueError:
                raise ConfigError(f"strategy {text!r}: give a target in (0, 1), e.g. {kind}:0.05") from None
            if not 0 < target < 1:
                raise ConfigError(f"strategy {text!r}: target must be strictly between 0 and 1")
            return cls(kind, target)
        raise ConfigError(f"unknown strategy {text!r}; use max-f1, fpr:0.05, recall:0.95 or default")

    def __str__(self) -> str:
        return self.kind if self.target is None else f"{self.kind}:{self.target:g}"


def fit_threshold(scores: np.ndarray, labels: np.ndarray, strategy: Strategy | str, *, default: float | None = None) -> float:
    """One threshold on 0–100 for binary ``labels`` (unsafe when ``score > threshold``).

    ``fpr:X`` returns the lowest threshold whose FPR is at most X (the most recall the FPR
    budget allows); ``recall:X`` the highest threshold whose recall is at least X.
    """
    st = strategy if isinstance(strategy, Strategy) else Strategy.parse(strategy)
    scores, labels = np.asarray(scores, float), np.asarray(labels, bool)
    if st.kind == "default":
        if default is None:
            raise ConfigError("the 'default' strategy needs a rubric default threshold")
        return float(default)
    if len(scores) == 0 or np.isnan(scores).any():
        raise DataError("cannot fit a threshold: scores are empty or contain missing values")
    pos, neg = int(labels.sum()), int((~labels).sum())
    if st.kind == "max-f1":
        if pos == 0:
            raise DataError("cannot fit a max-f1 threshold: no positive items")
        return best_f1_threshold(scores, labels)[0]
    t, tp, fp = threshold_sweep(scores, labels)
    if st.kind == "fpr":
        if neg == 0:
            raise DataError("cannot fit an FPR target: no negative items")
        ok = np.nonzero(fp / neg <= st.target + 1e-12)[0]
        return float(t[ok[-1]])
    if pos == 0:
        raise DataError("cannot fit a recall target: no positive items")
    ok = np.nonzero(tp / pos >= st.target - 1e-12)[0]
    return float(t[ok[0]])


class ThresholdCalibrator(BaseEstimator):
    """Fit a :class:`Policy` from scores and gold tiers.

    Parameters
    ----------
    strategy : ``"max-f1"``, ``"fpr:0.05"``, ``"recall:0.95"`` or ``"default"``; a single string
        applies to every regime, a dict sets it per regime.
    per_category : also fit thresholds per predicted category; categories with fewer than
        ``min_support`` items (or without both classes) keep the global threshold.
    regimes : ``{regime: minimum tier}``; FlexBench's three by default.
    base : policy whose thresholds the ``default`` strategy and unfitted parts keep.

    Examples
    --------
    >>> import numpy as np
    >>> cal = ThresholdCalibrator("max-f1").fit(np.array([5., 30, 50, 70, 90]), np.arange(5))
    >>> cal.thresholds_
    {'strict': 17.5, 'moderate': 40.0, 'loose': 60.0}
    """

    def __init__(self, strategy: str | dict[str, str] = "max-f1", *, per_category: bool = False,
                 min_support: int = 30, regimes: dict[str, Tier | str] | None = None, base: Policy | None = None):
        self.strategy = strategy
        self.per_category = per_category
        self.min_support = min_support
        self.regimes = regimes
        self.base = base

    def _strategies(self, regimes: list[str]) -> dict[str, Strategy]:
        if isinstance(self.strategy, dict):
            if unknown := set(self.strategy) - set(regimes):
                raise ConfigError(f"strategy given for unknown regime(s) {', '.join(sorted(unknown))}")
            return {r: Strategy.parse(self.strategy.get(r, "default")) for r in regimes}
        return {r: Strategy.parse(self.strategy) for r in regimes}

    def fit(self, scores: Sequence[float], tiers: Sequence[int],
            categories: Sequence[str | None] | None = None) -> "ThresholdCalibrator":
        scores = np.asarray(scores, float)
        tiers = np.asarray(tiers, int)
        if len(scores) != len(tiers):
            raise DataError(f"{len(scores)} scores but {len(tiers)} tiers")
        regimes = {r: Tier.parse(t) for r, t in (self.regimes or default_regimes()).items()}
        base = self.base or Policy(regimes=regimes, thresholds={r: t.threshold for r, t in regimes.items()})
        names = base.regime_names
        strategies = self._strategies(names)
        ok = ~np.isnan(scores)
        if not ok.any():
            raise DataError("cannot calibrate: no item has a score")
        s, y = scores[ok], tiers[ok]

        def fit_all(sv: np.ndarray, yv: np.ndarray) -> dict[str, float]:
            th = {r: fit_threshold(sv, yv >= base.regimes[r].rank, strategies[r], default=base.thresholds[r]) for r in names}
            # Keep the nesting of regimes: a stricter regime never flags less.
            vals = np.maximum.accumulate([th[r] for r in names])
            return {r: round(float(v), 4) for r, v in zip(names, vals)}

        self.thresholds_ = fit_all(s, y)
        self.category_thresholds_: dict[Category, dict[str, float]] = {}
        self.support_ = {"all": int(ok.sum())}
        if self.per_category:
            if categories is None:
                raise DataError("per-category calibration needs predicted categories")
            cats = np.array([None if c is None else str(c) for c in categories], dtype=object)[ok]
            for c in Category:
                m = cats == c.value
                self.support_[c.value] = int(m.sum())
                if c is Category.SAFE or m.sum() < self.min_support:
                    continue
                yc = y[m]
                if all(0 < (yc >= base.regimes[r].rank).sum() < len(yc) for r in names):
                    self.category_thresholds_[c] = fit_all(s[m], yc)
        self.policy_ = Policy(
            thresholds=self.thresholds_, regimes=dict(base.regimes), categories=dict(self.category_thresholds_),
            default_regime=base.default_regime, name=f"calibrated-{self.strategy if isinstance(self.strategy, str) else 'mixed'}",
            meta={"strategy": self.strategy, "per_category": self.per_category, "min_support": self.min_support,
                  "support": self.support_},
        )
        return self

    def predict(self, scores: Sequence[float], categories: Sequence[str | None] | None = None) -> Decisions:
        if not hasattr(self, "policy_"):
            raise ConfigError("call fit() before predict()")
        return self.policy_.decide_many(scores, categories=categories)


def cross_fit(calibrator: ThresholdCalibrator, scores: Sequence[float], tiers: Sequence[int], *,
              categories: Sequence[str | None] | None = None, n_splits: int = 5, seed: int = 0
              ) -> tuple[dict[str, np.ndarray], list[dict[str, float]]]:
    """Out-of-fold decisions: each item is judged by thresholds fitted on the other folds.

    Returns ``(flags per regime, thresholds of each fold)``. Folds are stratified by tier
    when the data allows it.
    """
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    scores, tiers = np.asarray(scores, float), np.asarray(tiers, int)
    if len(scores) < 2 * n_splits:
        raise DataError(f"cross-fitting with {n_splits} folds needs at least {2 * n_splits} items, got {len(scores)}")
    counts = np.bincount(tiers[tiers >= 0], minlength=5)
    # Stratify by tier when every present tier can fill each fold; tiny sets fall back to plain folds.
    if counts[counts > 0].min() >= n_splits:
        splits = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(scores, tiers)
    else:
        splits = KFold(n_splits, shuffle=True, random_state=seed).split(scores)
    cats = None if categories is None else np.asarray(categories, dtype=object)
    flags: dict[str, np.ndarray] = {}
    fold_th = []
    for train, test in splits:
        cal = clone(calibrator).fit(scores[train], tiers[train], None if cats is None else cats[train])
        dec = cal.predict(scores[test], None if cats is None else list(cats[test]))
        for r, f in dec.flags.items():
            flags.setdefault(r, np.zeros(len(scores), bool))[test] = f
        fold_th.append(cal.thresholds_)
    return flags, fold_th

def cross_fitted_evaluation(calibrator: ThresholdCalibrator, scores: Sequence[float | None], tiers: Sequence[int], *,
                            policy: Policy, categories: Sequence[str | None] | None = None,
                            flagged: Sequence[bool | None] | None = None, n_splits: int = 5, n_boot: int = 0,
                            seed: int = 0) -> tuple[Evaluation, list[dict[str, float]]]:
    """How thresholds fitted by ``calibrator`` do on items they were not fitted on.

    Cross-fits the calibrator (:func:`cross_fit`) and evaluates its out-of-fold decisions.
    Items without a score take part in fitting as never-flagged (score -1) and are judged by
    :func:`~flexguard.metrics.evaluate`'s rules. Returns the evaluation and each fold's thresholds.
    """
    s = np.array([np.nan if v is None else v for v in scores], float)
    flags, fold_th = cross_fit(calibrator, np.where(np.isnan(s), -1.0, s), tiers, categories=categories,
                               n_splits=n_splits, seed=seed)
    ev = evaluate(s, tiers, policy=policy, flagged=flagged, decisions=flags, n_boot=n_boot, seed=seed)
    return ev, fold_th


@dataclass
class PolicyFit:
    """A policy fitted on labelled predictions, how it does on held-out folds, and what to tell the user."""

    policy: Policy
    held_out: Evaluation
    note: str | None = None


def calibrate_from_predictions(predictions: str, bench, *, strategy: str = "max-f1", base: Policy | None = None,
                               per_category: bool = False, min_support: int = 30, seed: int = 0) -> PolicyFit:
    """Fit a policy to a predictions file (``{"id", "score", "category"?}``) on a labelled benchmark.

    The policy is fitted on every item; the held-out numbers come from cross-fitting the same
    strategy (:func:`cross_fitted_evaluation`), so they are honest about fitting on one split.
    """
    from .moderators.predictions import PredictionsModerator

    res = PredictionsModerator(predictions).score(bench.items)  # matches ids, names the missing ones
    if missing := sum(r.score is None for r in res):
        raise DataError(f"{predictions}: calibration needs a score for every item ({missing} have none)")
    scores = np.array([r.score for r in res])
    cats = [None if r.category is None else r.category.value for r in res]
    if per_category and all(c is None for c in cats):
        raise DataError(f"{predictions}: --per-category needs a 'category' in the predictions, and none has one")
    base = base or Policy()
    cal = ThresholdCalibrator(strategy, per_category=per_category, min_support=min_support,
                              regimes=dict(base.regimes), base=base)
    cal.fit(scores, bench.tier_ranks, cats if per_category else None)
    held, _ = cross_fitted_evaluation(cal, scores, bench.tier_ranks, policy=base,
                                      categories=cats if per_category else None, seed=seed)
    policy = cal.policy_
    policy.meta.update({"fitted_on": f"{bench.origin} ({len(bench)} items)",
                        "cross_fitted": {r: {"f1": round(m.f1, 4), "fpr": round(m.fpr, 4), "recall": round(m.recall, 4)}
                                         for r, m in held.regimes.items()}})
    note = None
    if per_category:
        fitted = ", ".join(c.value for c in cal.category_thresholds_)
        note = (f"per-category overrides: {fitted}" if fitted else
                f"no per-category thresholds: no category has {min_support} or more items with both safe and unsafe "
                f"labels under every regime (support: {cal.support_}); lower --min-support to fit smaller ones")
    return PolicyFit(policy, held, note)


@dataclass
class ThresholdUncertainty:
    """A threshold fitted from few labels, with its bootstrap spread."""

    threshold: float
    ci: tuple[float, float]
    std: float
    n: int
    positives: int


def bootstrap_threshold(scores: Sequence[float], labels: Sequence[bool], strategy: str = "max-f1", *,
                        n_boot: int = 500, seed: int = 0, default: float | None = None) -> ThresholdUncertainty:
    """Fit a threshold on ``n`` labelled examples and say how uncertain it is.

    Resamples the examples ``n_boot`` times and refits; resamples without both classes are
    skipped. Use it to decide whether a handful of labels is enough to move off the defaults
    (``default``: the threshold the ``default`` strategy keeps).
    """
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    st = Strategy.parse(strategy)
    t0 = fit_threshold(s, y, st, default=default)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(s), len(s))
        if 0 < y[idx].sum() < len(idx):
            draws.append(fit_threshold(s[idx], y[idx], st, default=t0))
    if not draws:
        raise DataError("bootstrap impossible: the examples need both safe and unsafe labels")
    d = np.array(draws)
    return ThresholdUncertainty(threshold=t0, ci=(float(np.percentile(d, 2.5)), float(np.percentile(d, 97.5))),
                                std=float(d.std()), n=len(s), positives=int(y.sum()))


class TierProbabilityCalibrator:
    """Isotonic maps from a risk score to P(tier ≥ k), k = LOW … EXTREME.

    Turns a score into calibrated probabilities of each regime's label, and measures how
    well-calibrated that is (expected calibration error, reliability plot).
    """

    def __init__(self, *, n_bins: int = 10):
        self.n_bins = n_bins

    def fit(self, scores: Sequence[float], tiers: Sequence[int]) -> "TierProbabilityCalibrator":
        from sklearn.isotonic import IsotonicRegression

        s, t = np.asarray(scores, float), np.asarray(tiers, int)
        self.models_ = {}
        for k in range(1, 5):
            y = (t >= k).astype(float)
            iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip", increasing=True)
            self.models_[Tier.from_rank(k)] = iso.fit(s, y)
        return self

    def predict_proba(self, scores: Sequence[float]) -> dict[Tier, np.ndarray]:
        s = np.asarray(scores, float)
        return {k: m.predict(s) for k, m in self.models_.items()}

    def ece(self, scores: Sequence[float], tiers: Sequence[int]) -> dict[str, float]:
        """Expected calibration error of P(tier ≥ k) on (held-out) data, per k."""
        t = np.asarray(tiers, int)
        out = {}
        for k, p in self.predict_proba(scores).items():
            y = (t >= k.rank).astype(float)
            bins = np.minimum((p * self.n_bins).astype(int), self.n_bins - 1)
            err = sum(abs(p[bins == b].mean() - y[bins == b].mean()) * (bins == b).sum() for b in np.unique(bins))
            out[k.value] = float(err / len(p))
        return out

    def plot_reliability(self, scores: Sequence[float], tiers: Sequence[int], path: str) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from sklearn.calibration import calibration_curve

        t = np.asarray(tiers, int)
        fig, ax = plt.subplots(figsize=(4.5, 4))
        for k, p in self.predict_proba(scores).items():
            frac, mean = calibration_curve((t >= k.rank), p, n_bins=self.n_bins, strategy="quantile")
            ax.plot(mean, frac, marker="o", ms=3, label=f"P(tier ≥ {k.value})")
        ax.plot([0, 1], [0, 1], "k:", lw=0.8)
        ax.set_xlabel("predicted probability"); ax.set_ylabel("observed frequency"); ax.legend(fontsize=7)
        ax.set_title("Reliability")
        fig.tight_layout(); fig.savefig(path, dpi=110); plt.close(fig)

"""Build an ensemble of embedded models from their out-of-fold predictions (no retraining).

``flexguard train ensemble`` mixes the scores of trained model folders (by default the shipped
cross-encoder and frozen-embedding heads) with per-mode weights, and fits the mixed score's
calibration on the members' *out-of-fold* FlexBench-R predictions (the ``cv_oof.json``
every ``flexguard train encoder`` run writes). All trainings use the same outer folds, so every
prediction of an item comes from models that never saw it. The mix is mapped onto the rubric
scale by a monotone piecewise-linear function whose knots are its best thresholds per cut
(:func:`fit_knots`); the ensemble's own CV row cross-fits those knots.

Weights not given are chosen from a grid by the same out-of-fold worst-case F1
(:func:`select_weights`). Choosing on the data that then reports the result is optimistic, so
the report adds a nested row (:func:`selected_in_cv`): each fold scored with weights and knots
chosen on the other folds only.
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...embedded.ordinal import rescale
from ...embedded.scorers import EnsembleMeta
from ...errors import ConfigError, DataError
from ...metrics import best_f1_threshold, evaluate
from ...rubric import TIER_CUTS
from ...schema import MODES
from .cards import write_ensemble_card
from .cv import OOF_FILE, cross_fitted_scores, flexbench_labels, scores_from_logits, stratified_folds


def cut_calibration(folder: Path) -> str:
    """How a cross-encoder's cut logits are calibrated: its card says, and the card is written when training ends."""
    card = folder / "card.json"
    if not card.exists():
        raise DataError(f"{card}: missing; it says how the cut logits in {OOF_FILE} are calibrated "
                        "(a training still running, or stopped before its final model, has none)")
    return json.loads(card.read_text()).get("config", {}).get("cut_calibration", "none")


def member_oof_scores(folder: Path, ids: dict[str, list[str]], tiers: dict[str, np.ndarray], *,
                      seed: int = 0) -> dict[str, np.ndarray]:
    """A member's out-of-fold scores per mode, aligned with ``ids``.

    Frozen heads store scores; a cross-encoder stores cut logits, whose calibration is then
    cross-fitted here exactly as its own CV report does (so its scores stay out of fold).
    """
    path = folder / OOF_FILE
    if not path.exists():
        raise DataError(f"{path}: missing; train the member with 'flexguard train encoder' (it writes {OOF_FILE})")
    oof = json.loads(path.read_text())
    out = {}
    for mode in MODES:
        rec = oof.get(mode)
        if rec is None or sorted(rec["ids"]) != sorted(ids[mode]):
            raise DataError(f"{path}: out-of-fold {mode} predictions do not cover the same FlexBench items")
        pos = {i: k for k, i in enumerate(rec["ids"])}
        order = [pos[i] for i in ids[mode]]
        if "scores" in rec:
            out[mode] = np.asarray(rec["scores"], float)[order]
            continue
        how = cut_calibration(folder)
        logits = np.asarray(rec["cut_logits_int8"] if np.any(rec["cut_logits_int8"]) else rec["cut_logits"])[order]
        out[mode] = (scores_from_logits(logits) if how == "none"
                     else cross_fitted_scores(logits, tiers[mode], how, seed=seed))
    return out


def mix(scores: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * s for w, s in zip(weights, scores))


def fit_knots(scores: np.ndarray, tiers: np.ndarray) -> np.ndarray:
    """Per cut, the score threshold with the best F1 on (out-of-fold) scores, kept increasing.

    These become the knots of :func:`flexguard.embedded.ordinal.rescale`: the calibrated score crosses
    20 / 40 / 60 / 80 exactly where the mix best separates the tiers.
    """
    knots = np.array([best_f1_threshold(scores, tiers > k)[0] for k in range(len(TIER_CUTS))])
    knots = np.clip(np.maximum.accumulate(knots), 0.01, 99.99)  # rescale needs 0 < k1 < … < k4 < 100
    return knots + 1e-3 * np.arange(len(knots))


def cross_fitted_rescale(scores: np.ndarray, tiers: np.ndarray, *, folds: int = 5, seed: int = 0) -> np.ndarray:
    """Honest calibrated scores: each item's knots are fitted on the other folds."""
    out = np.zeros(len(tiers))
    for tr, te in stratified_folds(tiers, folds, seed):
        out[te] = rescale(scores[te], fit_knots(scores[tr], tiers[tr]))
    return out


def single_member(weights: Sequence[float]) -> bool:
    """One member carries all the weight: the mix is that member, already calibrated, and is not rescaled."""
    return max(weights) == 1.0


def honest_scores(mixed: np.ndarray, tiers: np.ndarray, weights: Sequence[float], *, seed: int = 0) -> np.ndarray:
    """A mix's out-of-fold calibrated scores, as its CV row reports them."""
    return mixed if single_member(weights) else cross_fitted_rescale(mixed, tiers, seed=seed)


def weight_grid(n: int, step: float = 0.25) -> list[tuple[float, ...]]:
    """Every weight vector of ``n`` members on a grid of ``step`` (1/step must be whole) that sums to 1."""
    if n < 2 or not 0 < step <= 1 or abs(round(1 / step) * step - 1) > 1e-9:
        raise ConfigError(f"a weight grid needs >= 2 members and a step dividing 1, got n={n}, step={step}")
    k = round(1 / step)
    return [tuple(c / k for c in combo) for combo in itertools.product(range(k + 1), repeat=n) if sum(combo) == k]


def worst_case_f1(scores: np.ndarray, tiers: np.ndarray) -> float:
    return evaluate(scores, tiers, n_boot=0).worst_f1


def select_weights(members: Sequence[np.ndarray], tiers: np.ndarray, grid: Sequence[tuple[float, ...]], *,
                   seed: int = 0) -> tuple[float, ...]:
    """The grid weights whose mix has the best out-of-fold worst-case F1 (knots cross-fitted)."""
    return max(grid, key=lambda w: worst_case_f1(honest_scores(mix(members, w), tiers, w, seed=seed), tiers))


def selected_in_cv(members: Sequence[np.ndarray], tiers: np.ndarray, grid: Sequence[tuple[float, ...]], *,
                   folds: int = 5, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, ...]]]:
    """Honest scores of the whole recipe: per fold, weights and knots chosen on the other folds only.

    Returns the scores and the weights each fold chose (their spread shows how stable the choice is).
    """
    out, chosen = np.zeros(len(tiers)), []
    for tr, te in stratified_folds(tiers, folds, seed):
        w = select_weights([m[tr] for m in members], tiers[tr], grid, seed=seed)
        held = mix([m[te] for m in members], w)
        out[te] = held if single_member(w) else rescale(held, fit_knots(mix([m[tr] for m in members], w), tiers[tr]))
        chosen.append(w)
    return out, chosen


def train_ensemble(members: Sequence[str | Path], weights: dict[str, list[float] | None], flexbench: str,
                   out_dir: str | Path, *, step: float = 0.25, seed: int = 0) -> dict[str, Any]:
    """Fit and save an ensemble (``ensemble.json`` + ``card.json`` with its CV report and the members').

    ``weights[mode]`` None: chosen from :func:`weight_grid` (``step``) by :func:`select_weights`,
    and the report gets the nested row of :func:`selected_in_cv` for that mode.
    """
    out_dir = Path(out_dir)
    members = [Path(m).resolve() for m in members]
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two member folders")
    search = [m for m in MODES if weights.get(m) is None]
    grid = weight_grid(len(members), step) if search else []
    equal = [1 / len(members)] * len(members)  # stands in for searched modes while validating the given ones
    EnsembleMeta([str(m) for m in members], {m: weights.get(m) or equal for m in MODES},
                 {m: list(TIER_CUTS) for m in MODES})
    ids, tiers = flexbench_labels(flexbench)
    oof = [member_oof_scores(m, ids, tiers, seed=seed) for m in members]
    relative = [os.path.relpath(m, out_dir.resolve()) for m in members]  # portable: no machine paths in the card
    chosen = {m: list(weights[m]) if m not in search else
              list(select_weights([o[m] for o in oof], tiers[m], grid, seed=seed)) for m in MODES}
    report: dict[str, Any] = {"config": {"members": relative, "weights": chosen, "searched": search, "step": step,
                                         "flexbench": flexbench, "seed": seed}, "cv": {}}
    knots = {}
    for mode in MODES:
        w, t, scores = chosen[mode], tiers[mode], [o[mode] for o in oof]
        mixed = mix(scores, w)
        rows = {f"member {m.name}": o[mode] for m, o in zip(members, oof)}
        rows["ensemble (rescaled, cross-fitted)"] = honest_scores(mixed, t, w, seed=seed)
        if mode in search:
            rows["ensemble, weights selected in CV (nested)"], per_fold = selected_in_cv(scores, t, grid, seed=seed)
            report.setdefault("weights_per_fold", {})[mode] = [list(x) for x in per_fold]
        report["cv"][mode] = {}
        for name, s in rows.items():
            ev = evaluate(s, t, n_boot=1000, seed=seed)
            report["cv"][mode][name] = {**ev.summary(4), "mean_score_by_tier": ev.mean_score_by_tier}
        knots[mode] = [round(float(x), 4) for x in (TIER_CUTS if single_member(w) else fit_knots(mixed, t))]
    out_dir.mkdir(parents=True, exist_ok=True)
    EnsembleMeta(relative, chosen, knots).save(out_dir)
    report["knots"] = knots
    (out_dir / "card.json").write_text(json.dumps(report, indent=2))
    write_ensemble_card(report, out_dir)
    return report

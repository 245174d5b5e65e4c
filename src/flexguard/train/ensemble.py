"""Build an ensemble of embedded models from their out-of-fold predictions (no retraining).

``flexguard train ensemble`` mixes the scores of trained model folders (by default the shipped
cross-encoder and frozen-embedding heads) with per-mode weights, and fits the mixed score's
calibration on the members' *out-of-fold* FlexBench-R predictions (the ``cv_oof.json``
every ``flexguard train encoder`` run writes). Both trainings use the same outer folds, so every
prediction of an item comes from models that never saw it. The mix is mapped onto the rubric
scale by a monotone piecewise-linear function whose knots are its best thresholds per cut
(:func:`fit_knots`); the ensemble's own CV row cross-fits those knots.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..data import load_flexbench
from ..errors import ConfigError, DataError
from ..moderators.embedded import EnsembleMeta
from ..metrics import best_f1_threshold
from ..ordinal import rescale
from ..rubric import TIER_CUTS
from .encoder import OOF_FILE, stratified_folds
from .finetune import cross_fitted_scores, scores_from_logits

MODES = ("prompt", "response")


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
    card = json.loads((folder / "card.json").read_text()) if (folder / "card.json").exists() else {}
    how = card.get("config", {}).get("cut_calibration", "none")
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
        logits = np.asarray(rec["cut_logits_int8"] if np.any(rec["cut_logits_int8"]) else rec["cut_logits"])[order]
        out[mode] = (scores_from_logits(logits) if how == "none"
                     else cross_fitted_scores(logits, tiers[mode], how, seed=seed))
    return out


def mix(scores: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    return sum(w * s for w, s in zip(weights, scores))


def fit_knots(scores: np.ndarray, tiers: np.ndarray) -> np.ndarray:
    """Per cut, the score threshold with the best F1 on (out-of-fold) scores, kept increasing.

    These become the knots of :func:`flexguard.ordinal.rescale`: the calibrated score crosses
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


def flexbench_labels(flexbench: str) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """Item ids and gold tier ranks per mode of FlexBench-R valid: what out-of-fold files are keyed by."""
    ids, tiers = {}, {}
    for mode in MODES:
        items = load_flexbench(flexbench, subset=mode, split="valid").items
        ids[mode], tiers[mode] = [it.id for it in items], np.array([it.tier.rank for it in items])
    return ids, tiers


def train_ensemble(members: Sequence[str | Path], weights: dict[str, list[float]], flexbench: str, out_dir: str | Path,
                   *, seed: int = 0) -> dict[str, Any]:
    """Fit and save an ensemble (``ensemble.json`` + ``card.json`` with its CV report and the members')."""
    from ..metrics import evaluate

    out_dir = Path(out_dir)
    members = [Path(m).resolve() for m in members]
    if len(members) < 2:
        raise ConfigError("an ensemble needs at least two member folders")
    EnsembleMeta([str(m) for m in members], weights, {m: list(TIER_CUTS) for m in MODES})  # validates the weights
    ids, tiers = flexbench_labels(flexbench)
    oof = [member_oof_scores(m, ids, tiers, seed=seed) for m in members]
    relative = [os.path.relpath(m, out_dir.resolve()) for m in members]  # portable: no machine paths in the card
    report: dict[str, Any] = {"config": {"members": relative, "weights": weights, "flexbench": flexbench, "seed": seed},
                              "cv": {}}
    knots = {}
    for mode in MODES:
        w, t = weights[mode], tiers[mode]
        mixed = mix([o[mode] for o in oof], w)
        rows = {f"member {m.name}": o[mode] for m, o in zip(members, oof)}
        rows["ensemble (rescaled, cross-fitted)"] = honest_scores(mixed, t, w, seed=seed)
        report["cv"][mode] = {}
        for name, scores in rows.items():
            ev = evaluate(scores, t, n_boot=1000, seed=seed)
            report["cv"][mode][name] = {**ev.summary(4), "mean_score_by_tier": ev.mean_score_by_tier}
        knots[mode] = [round(float(x), 4) for x in (TIER_CUTS if single_member(w) else fit_knots(mixed, t))]
    out_dir.mkdir(parents=True, exist_ok=True)
    EnsembleMeta(relative, weights, knots).save(out_dir)
    report["knots"] = knots
    (out_dir / "card.json").write_text(json.dumps(report, indent=2))
    write_model_card(report, out_dir)
    return report


def write_model_card(report: dict[str, Any], folder: Path) -> Path:
    """MODEL_CARD.md of an ensemble: members, weights, knots and the CV table from its report."""
    cfg = report["config"]
    members = [Path(m).name for m in cfg["members"]]
    lines = ["# flexguard embedded ensemble", "",
             f"Weighted mean of the scores of {', '.join(f'`{m}`' for m in members)}, mapped onto the rubric scale by a "
             "monotone piecewise-linear function whose knots (the mixed score values that become 20 / 40 / 60 / 80) are "
             "the mix's best-F1 thresholds per cut on the members' out-of-fold FlexBench-R predictions. Nothing is "
             "retrained; each member keeps its own model card.", "",
             "| mode | weights | knots |", "|---|---|---|"]
    lines += [f"| {m} | {', '.join(f'{n} {w:g}' for n, w in zip(members, cfg['weights'][m]))} | "
              f"{', '.join(f'{k:.1f}' for k in report['knots'][m])} |" for m in MODES]
    lines += ["", "Rebuild, from this folder: `flexguard train ensemble --out . --members " + " ".join(cfg["members"])
              + f" --flexbench {cfg['flexbench']} --prompt-weights "
              + " ".join(f"{w:g}" for w in cfg["weights"]["prompt"]) + " --response-weights "
              + " ".join(f"{w:g}" for w in cfg["weights"]["response"]) + "`", "",
              "## 5-fold cross-validation on flexbench_r (thresholds 20 / 40 / 60)", "",
              "| mode | model | F1 strict | F1 moderate | F1 loose | avg F1 | worst F1 [95% CI] | spread | Spearman |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, rows in report["cv"].items():
        for name, r in rows.items():
            ci = r.get("worst_f1_ci") or [float("nan")] * 2
            lines.append(f"| {mode} | {name} | {r['f1_strict']:.3f} | {r['f1_moderate']:.3f} | {r['f1_loose']:.3f} | "
                         f"{r['avg_f1']:.3f} | {r['worst_f1']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | {r['f1_spread']:.3f} | "
                         f"{r['spearman']:.3f} |")
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path

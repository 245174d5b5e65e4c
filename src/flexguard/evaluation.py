"""Evaluating a moderator on a benchmark (``flexguard bench``): score, evaluate, report.

Scoring goes through :func:`flexguard.runner.score_items` (resumable predictions file),
the numbers through :func:`flexguard.metrics.evaluate`, calibrated thresholds through
:func:`flexguard.calibrate.cross_fitted_evaluation` and the files through
:mod:`flexguard.report`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .calibrate import ThresholdCalibrator, cross_fitted_evaluation
from .data import Benchmark
from .metrics import Evaluation, breakdown, evaluate, item_groups
from .moderators import Moderator
from .report import write_report
from .runner import score_items
from .thresholds import Policy


@dataclass
class BenchResult:
    evaluation: Evaluation
    metrics: dict[str, Any]
    out_dir: Path
    warning: str | None = None


def run_bench(
    moderator: Moderator,
    bench: Benchmark,
    out_dir: str | Path,
    *,
    policy: Policy | None = None,
    calibrate: str | None = "max-f1",
    batch_size: int = 32,
    n_boot: int = 1000,
    seed: int = 0,
    progress: bool = True,
) -> BenchResult:
    """Score ``bench`` (resumably, into ``out_dir/predictions.jsonl``), evaluate, report.

    With ``calibrate`` (a strategy such as ``max-f1``), the report adds the same predictions
    judged with calibrated thresholds. A benchmark has one labelled split here, so the
    thresholds are *cross-fitted* (5 folds): no item is judged by a threshold fitted on it.
    """
    policy = policy or Policy()
    out = Path(out_dir)
    run = score_items(moderator, bench.items, out=out / "predictions.jsonl", batch_size=batch_size, progress=progress,
                      policy=policy,
                      manifest_extra={"data": {"origin": bench.origin, "subset": bench.subset, "split": bench.split}})
    scores = np.array([np.nan if r.score is None else r.score for r in run.results])
    flagged = [r.flagged for r in run.results]
    cats = [None if r.category is None else r.category.value for r in run.results]
    tiers = bench.tier_ranks
    ev = evaluate(scores, tiers, policy=policy, flagged=flagged, categories=cats, mode=bench.subset, n_boot=n_boot, seed=seed)
    manifest = run.manifest.to_dict()
    manifest["thresholds"] = policy.to_dict()
    manifest["seed"] = seed
    manifest["data"] = {"origin": bench.origin, "subset": bench.subset, "split": bench.split, "n": len(bench)}
    extra = []
    if calibrate and not ev.binary and np.isfinite(scores).sum() >= 10:
        cal = ThresholdCalibrator(calibrate, regimes=dict(policy.regimes), base=policy)
        ev_cal, fold_th = cross_fitted_evaluation(cal, scores, tiers, policy=policy, flagged=flagged, n_boot=n_boot,
                                                  seed=seed)
        note = (f"Thresholds calibrated with strategy '{calibrate}' by 5-fold cross-fitting on this split: each item is "
                f"judged by thresholds fitted on the other folds. Mean fitted thresholds: "
                + ", ".join(f"{r} {np.mean([t[r] for t in fold_th]):.1f}" for r in policy.regime_names))
        extra.append(("calibrated", f"Calibrated thresholds ({calibrate}, cross-fitted)", ev_cal, note))
    warning = in_sample_warning(moderator, bench.origin)
    breakdowns = {by: breakdown(scores, tiers, g, policy=policy, flagged=flagged, categories=cats, mode=bench.subset,
                                on_missing=ev.missing_policy)
                  for by, g in item_groups(bench.items).items() if any(g)}
    metrics = write_report(out, ev, manifest, title=f"FlexBench {bench.subset}/{bench.split}: {manifest['model']}",
                           scores=scores, tiers=tiers, extra_sections=extra,
                           extra_metrics={"in_sample_warning": warning} if warning else None, breakdowns=breakdowns)
    return BenchResult(evaluation=ev, metrics=metrics, out_dir=out, warning=warning)


def in_sample_warning(moderator: Moderator, origin: str) -> str | None:
    """A warning when the moderator was trained on the file being evaluated."""
    parts = Path(origin.removeprefix("hub:")).parts[-2:]
    key = "/".join(parts)
    if key in moderator.info().get("trained_on", []):
        return (f"{moderator.name} was trained on {key}: these numbers are in-sample and overstate quality; "
                "see the model card's cross-validated numbers")
    return None


def run_public(
    moderator: Moderator,
    suites: dict[str, Benchmark],
    out_dir: str | Path,
    *,
    policy: Policy | None = None,
    regime: str | None = None,
    batch_size: int = 32,
    progress: bool = True,
) -> dict[str, Any]:
    """Binary public suites (harmful/unharmful gold): F1 etc. under one regime's threshold.

    Writes ``<suite>.predictions.jsonl`` per suite (resumable) and ``public_metrics.json``.
    """
    import json

    from .metrics import evaluate_binary_suite
    from .schema import RunManifest

    policy = policy or Policy()
    regime = regime or policy.default_regime
    threshold = policy.thresholds[regime]
    out = Path(out_dir)
    table: dict[str, Any] = {}
    manifest: RunManifest | None = None
    for name, suite in suites.items():
        run = score_items(moderator, suite.items, out=out / f"{name}.predictions.jsonl", batch_size=batch_size,
                          progress=progress, policy=policy, strictness=regime,
                          manifest_extra={"data": {"origin": suite.origin, "suite": name}})
        manifest = run.manifest
        m = evaluate_binary_suite([r.score for r in run.results], suite.binary_labels(), threshold=threshold,
                                  flagged=[r.flagged for r in run.results])
        table[name] = {"subset": suite.subset, "n": m.n, "positives": m.positives, "f1": round(m.f1, 4),
                       "precision": round(m.precision, 4), "recall": round(m.recall, 4), "fpr": round(m.fpr, 4),
                       "auroc": None if m.auroc is None else round(m.auroc, 4)}
    result = {"regime": regime, "threshold": threshold, "suites": table,
              "manifest": manifest.to_dict() if manifest else None}
    (out / "public_metrics.json").write_text(json.dumps(result, indent=2))
    return result

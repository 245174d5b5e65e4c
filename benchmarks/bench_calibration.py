"""Thresholds fitted for a target vs what they achieve on held-out items.

    python benchmarks/bench_calibration.py     # needs results/embedded_oof.json from bench_embedded.py

Scores are the embedded moderator's out-of-fold CV scores on flexbench_r (no item scored by
a model that saw it). Every threshold is fitted by 5-fold cross-fitting, so the achieved
FPR / recall / F1 are measured on items the threshold never saw.
"""

from __future__ import annotations

import json

import numpy as np

from _common import RESULTS, table, write_result
from flexguard.calibrate import ThresholdCalibrator, bootstrap_threshold, cross_fit, fit_threshold
from flexguard.metrics import evaluate

STRATEGIES = ["default", "max-f1", "fpr:0.05", "fpr:0.10", "recall:0.90", "recall:0.95"]


def main() -> None:
    path = RESULTS / "embedded_oof.json"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run benchmarks/bench_embedded.py first")
    oof = json.loads(path.read_text())
    payload: dict = {"targets": {}, "few_shot": {}}
    for subset, rows in oof.items():
        s = np.array([r["score"] for r in rows])
        t = np.array([r["tier"] for r in rows])
        cats = [r["category"] for r in rows]
        out = []
        for strategy in STRATEGIES:
            for per_cat in (False, True):
                if per_cat and strategy == "default":
                    continue
                cal = ThresholdCalibrator(strategy, per_category=per_cat, min_support=40)
                flags, folds = cross_fit(cal, s, t, categories=cats if per_cat else None, n_splits=5, seed=0)
                ev = evaluate(s, t, decisions=flags, n_boot=0)
                for r, m in ev.regimes.items():
                    out.append({"strategy": strategy + (" +per-category" if per_cat else ""), "regime": r,
                                "threshold": round(float(np.mean([f[r] for f in folds])), 1),
                                "achieved_fpr": round(m.fpr, 3), "achieved_recall": round(m.recall, 3), "f1": round(m.f1, 3)})
        payload["targets"][subset] = out
        print(f"\n{subset}: cross-fitted thresholds, achieved on held-out folds")
        print(table(out, ["strategy", "regime", "threshold", "achieved_fpr", "achieved_recall", "f1"]))
        # few-shot: fit the moderate threshold on n labelled items, evaluate on the rest
        rng = np.random.default_rng(0)
        few = []
        for n in (20, 50, 100, 200):
            f1s, widths = [], []
            for rep in range(20):
                idx = rng.permutation(len(s))
                train, test = idx[:n], idx[n:]
                y = t >= 2
                if not 0 < y[train].sum() < n:
                    continue
                u = bootstrap_threshold(s[train], y[train], "max-f1", n_boot=200, seed=rep)
                th = fit_threshold(s[train], y[train], "max-f1")
                pred = s[test] > th
                tp = np.sum(pred & y[test]); f1s.append(2 * tp / (pred.sum() + y[test].sum()))
                widths.append(u.ci[1] - u.ci[0])
            few.append({"n_labelled": n, "heldout_f1_mean": round(float(np.mean(f1s)), 3),
                        "heldout_f1_sd": round(float(np.std(f1s)), 3), "threshold_ci_width": round(float(np.mean(widths)), 1)})
        payload["few_shot"][subset] = few
        print(f"{subset}: few-shot max-f1 threshold for the moderate regime (20 random draws each)")
        print(table(few, ["n_labelled", "heldout_f1_mean", "heldout_f1_sd", "threshold_ci_width"]))
    print(f"-> {write_result('calibration', payload)}")


if __name__ == "__main__":
    main()

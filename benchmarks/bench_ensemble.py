"""Would averaging the two embedded models beat either? Measured on their out-of-fold predictions.

    python benchmarks/bench_ensemble.py

Reads the out-of-fold FlexBench-R predictions that training wrote next to the shipped
cross-encoder and frozen heads (``cv_oof.json``; both CVs use the same folds, so every
prediction of an item comes from models that never saw it) and scores a grid of mixing weights
exactly as ``flexguard train ensemble`` does: weighted mean of the two scores, mapped onto the
rubric scale with knots cross-fitted per fold. The shipped ensemble's weights (equal on prompts,
the prior choice; the cross-encoder alone on responses, where no mix clearly won) were picked
after looking at this grid, so its best row is slightly optimistic; all rows are reported.
"""

from __future__ import annotations

import argparse

from _common import DATA, table, write_result

WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)  # weight of the cross-encoder


def main() -> None:
    from flexguard.metrics import evaluate
    from flexguard.moderators.embedded import shipped_weights_dir
    from flexguard.train.ensemble import MODES, flexbench_labels, honest_scores, member_oof_scores, mix

    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    ids, tiers = flexbench_labels(str(DATA / "flexbench_r"))
    ce, frozen = (member_oof_scores(shipped_weights_dir(m), ids, tiers, seed=args.seed) for m in ("crossencoder", "embedded"))
    rows = []
    for mode in MODES:
        for w in WEIGHTS:
            mixed = mix([ce[mode], frozen[mode]], [w, 1 - w])
            # a member alone keeps its own calibration; a mix is rescaled with cross-fitted knots
            ev = evaluate(honest_scores(mixed, tiers[mode], [w, 1 - w], seed=args.seed), tiers[mode], n_boot=1000,
                          seed=args.seed)
            rows.append({"subset": mode, "w_crossencoder": w, **ev.summary(4)})
    print(table(rows, ["subset", "w_crossencoder", "f1_strict", "f1_moderate", "f1_loose", "avg_f1", "worst_f1",
                       "f1_spread", "spearman"]))
    print(f"-> {write_result('ensemble', {'rows': rows})}")


if __name__ == "__main__":
    main()

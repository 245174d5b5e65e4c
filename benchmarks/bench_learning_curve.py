"""Learning curve of the embedded models over the distillation corpus (issue 24): is more teacher data the lever?

    python benchmarks/bench_learning_curve.py                     # frozen heads: minutes
    python benchmarks/bench_learning_curve.py --model crossencoder  # the fine-tune: hours; resumable per fold

The corpus grew from 7,037 rows (ids up to ``fbt-07036``) to 17,016. Same protocol as the
shipped models (5-fold CV on ``flexbench_r`` valid, each fold trained on the other folds plus
the corpus part, thresholds 20/40/60), same folds and seed for every point: the first 7,037
rows; those plus half of the newer rows (seeded); all rows. Worst-case F1 with bootstrap
intervals per subset. The cross-encoder's CV writes each finished fold under
``runs/learning_curve/`` and a rerun resumes there, so the long curve can span sessions.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

import numpy as np

from _common import DATA, ROOT, table, write_result

OLD_LAST = 7036  # fbt-07036: the last row of the 7,037-row corpus


def corpus_parts(items, seed: int) -> dict[str, list[int]]:
    """Indices of the corpus rows in each learning-curve point."""
    old = [k for k, it in enumerate(items) if int(it.id.rsplit("-", 1)[1]) <= OLD_LAST]
    new = [k for k, it in enumerate(items) if int(it.id.rsplit("-", 1)[1]) > OLD_LAST]
    half = sorted(random.Random(seed).sample(new, len(new) // 2))
    return {"old 7,037": old, "old + half of new": sorted(old + half), "all 17,016": list(range(len(items)))}


def frozen(seed: int) -> list[dict]:
    from flexguard.embedded.minilm import MiniLMEmbedder
    from flexguard.metrics import evaluate
    from flexguard.train.embedded.config import FrozenConfig
    from flexguard.train.embedded.cv import load_training_items
    from flexguard.train.embedded.frozen import cross_validate, featurize, make_split

    cfg = FrozenConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"), seed=seed)
    emb = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    rows = []
    for subset in ("prompt", "response"):
        fb_items, corpus = load_training_items(cfg.flexbench, cfg.distill, subset)
        fb = make_split(fb_items, featurize(emb, fb_items, progress=True))
        everything = make_split(corpus, featurize(emb, corpus, progress=True))
        for name, idx in corpus_parts(corpus, seed).items():
            oof = cross_validate(fb, everything.take(np.array(idx)), cfg)
            ev = evaluate(oof["score"], fb.tiers, n_boot=1000, seed=seed)
            rows.append({"model": "frozen", "subset": subset, "corpus": name, "corpus_rows": len(idx),
                         **ev.summary(3)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def crossencoder(seed: int, work: Path) -> list[dict]:
    from flexguard.metrics import evaluate
    from flexguard.train.embedded.config import CrossEncoderConfig
    from flexguard.train.embedded.crossencoder import cross_validate, load_data
    from flexguard.train.embedded.cv import cross_fitted_scores

    cfg = CrossEncoderConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"), seed=seed, epochs=3)
    fb, corpus = load_data(cfg)
    rows = []
    for name, idx in corpus_parts(corpus, seed).items():
        part = [corpus[k] for k in idx]
        cv = cross_validate(fb, part, cfg, work_dir=work / name.replace(" ", "_").replace(",", ""))
        for subset in fb:
            scores = cross_fitted_scores(cv.cut_int8[subset], cv.tiers[subset], cfg.cut_calibration, seed=seed)
            ev = evaluate(scores, cv.tiers[subset], n_boot=1000, seed=seed)
            rows.append({"model": "crossencoder (int8, calibrated)", "subset": subset, "corpus": name,
                         "corpus_rows": len(part), **ev.summary(3), "cv_s": round(cv.seconds)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["frozen", "crossencoder"], default="frozen")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "learning_curve"))
    args = ap.parse_args()
    rows = frozen(args.seed) if args.model == "frozen" else crossencoder(args.seed, Path(args.work))
    print(table(rows, ["model", "subset", "corpus", "corpus_rows", "f1_strict", "f1_moderate", "f1_loose", "worst_f1",
                       "worst_f1_ci", "spearman"]))
    print(f"-> {write_result(f'learning_curve_{args.model}', {'rows': rows})}")


if __name__ == "__main__":
    main()

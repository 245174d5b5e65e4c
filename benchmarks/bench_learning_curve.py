"""Learning curve of the embedded models over the distillation corpus (issue 24): is more teacher data the lever?

    python benchmarks/bench_learning_curve.py                     # frozen heads: minutes
    python benchmarks/bench_learning_curve.py --model crossencoder  # the fine-tune: hours; resumable per fold
    python benchmarks/bench_learning_curve.py --vary flexbench    # frozen heads over in-domain rows instead
    python benchmarks/bench_learning_curve.py --model crossencoder --layers 6 --points "all 17,016"  # capacity
    python benchmarks/bench_learning_curve.py --model crossencoder --max-len 512 --points "old 7,037"  # window
    python benchmarks/bench_learning_curve.py --model crossencoder --corpus-weights source-balanced --points "all 17,016"
    python benchmarks/bench_learning_curve.py --model crossencoder --rationale-weight 1 --points "all 17,016"
    python benchmarks/bench_learning_curve.py --model crossencoder --pair-weight 1 --points "all 17,016"

The corpus grew from 7,037 rows (ids up to ``fbt-07036``) to 17,016. Same protocol as the
shipped models (5-fold CV on ``flexbench_r`` valid, each fold trained on the other folds plus
the corpus part, thresholds 20/40/60), same folds and seed for every point: the first 7,037
rows; those plus half of the newer rows (seeded); all rows. Worst-case F1 with bootstrap
intervals per subset. The cross-encoder's CV writes each finished fold under
``runs/learning_curve/`` and a rerun resumes there, so the long curve can span sessions.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

import numpy as np

from _common import DATA, RESULTS, ROOT, table, write_result

OLD_LAST = 7036  # fbt-07036: the last row of the 7,037-row corpus
OLD, HALF, ALL = "old 7,037", "old + half of new", "all 17,016"
# cross-encoder options away from the shipped recipe: how each names its run's folder (where the CV folds resume
# from, so these names must not change) and its label in the tables; the layer count is always in the label
OPTION_NAMES = {"layers": ("_{}_layers", None), "max_len": ("_{}_window", "{}-piece window"),
                "corpus_weights": ("_{}", "corpus {}"), "rationale_weight": ("_rationale_{:g}", "rationale {:g}"),
                "pair_weight": ("_pairs_{:g}", "pairs {:g}")}


def corpus_parts(items, seed: int) -> dict[str, list[int]]:
    """Indices of the corpus rows in each learning-curve point."""
    from flexguard.train.embedded.cv import corpus_row_number

    old = [k for k, it in enumerate(items) if corpus_row_number(it.id) <= OLD_LAST]
    new = [k for k, it in enumerate(items) if corpus_row_number(it.id) > OLD_LAST]
    half = sorted(random.Random(seed).sample(new, len(new) // 2))
    return {OLD: old, HALF: sorted(old + half), ALL: list(range(len(items)))}


def frozen_features(seed: int):
    """The shipped frozen recipe's config, then each subset's name and embedded training data (cached)."""
    from flexguard.embedded.minilm import MiniLMEmbedder
    from flexguard.train.embedded.config import FrozenConfig
    from flexguard.train.embedded.frozen import load_features

    cfg = FrozenConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"), seed=seed)
    emb = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    for subset in ("prompt", "response"):
        yield cfg, subset, load_features(cfg, subset, emb)


def frozen(seed: int) -> list[dict]:
    from flexguard.metrics import evaluate
    from flexguard.train.embedded.frozen import cross_validate

    rows = []
    for cfg, subset, data in frozen_features(seed):
        fb = data.fb
        for name, idx in corpus_parts(data.corpus_items, seed).items():
            oof = cross_validate(fb, data.corpus.take(np.array(idx)), cfg)
            ev = evaluate(oof["score"], fb.tiers, n_boot=1000, seed=seed)
            rows.append({"model": "frozen", "subset": subset, "corpus": name, "corpus_rows": len(idx),
                         **ev.summary(3)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


FB_SHARES = (0.0, 0.25, 0.5, 1.0)  # of the FlexBench-R rows in the training folds


def frozen_in_domain(seed: int) -> list[dict]:
    """The other axis: vary the FlexBench-R rows each fold trains on, with the whole corpus (and without).

    If the loose cut climbs steeply with in-domain rows while the teacher corpus (ten times as
    many rows) leaves it flat, labels in FlexBench's own convention are what would move it.
    The training folds' rows are subsampled per tier (seeded); the held-out folds are unchanged.
    """
    from sklearn.model_selection import train_test_split

    from flexguard.metrics import evaluate
    from flexguard.train.embedded.cv import outer_cv_folds
    from flexguard.train.embedded.frozen import fit_calibrated, predict_scores

    rows = []
    for cfg, subset, data in frozen_features(seed):
        fb = data.fb
        for share, corpus in [*((f, data.corpus) for f in FB_SHARES), (1.0, None)]:
            score, used = np.zeros(len(fb.tiers)), 0
            for tr, te in outer_cv_folds(fb.tiers, cfg.cv_folds, cfg.seed):
                keep = (tr if share == 1.0 else np.array([], int) if share == 0.0 else
                        train_test_split(tr, train_size=share, stratify=fb.tiers[tr], random_state=seed)[0])
                heads, _ = fit_calibrated(fb.take(keep), corpus, cfg)
                score[te], used = predict_scores(heads, fb.x[te]), used + len(keep)
            ev = evaluate(score, fb.tiers, n_boot=1000, seed=seed)
            rows.append({"model": "frozen", "subset": subset, "flexbench_share": share,
                         "flexbench_rows_per_fold": round(used / cfg.cv_folds),
                         "corpus": "all 17,016" if corpus is not None else "none",
                         **ev.summary(3), "loose_auroc": round(ev.regimes["loose"].auroc, 3)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    return rows


def crossencoder(seed: int, work: Path, points: list[str], epochs: float | None, options: dict) -> list[dict]:
    """The shipped recipe at each point; by default with the old point's compute (token passes) at every point.

    Three epochs over 17,016 rows would take 2.5 h of CV on 2 cores; at matched compute every
    point costs what the shipped model's CV did (~80 min), so the curve asks "does the same
    budget spent on more varied data buy more?". The old point at its 3 epochs *is* the shipped
    model's CV (same config, folds, seed and rows): its out-of-fold logits are read from the
    shipped ``cv_oof.json`` instead of being recomputed, after checking the config matches.
    ``options``: :class:`CrossEncoderConfig` fields of :data:`OPTION_NAMES` to change.
    """
    import dataclasses

    from flexguard.embedded.minilm import load_minilm_tokenizer
    from flexguard.embedded.scorers import shipped_model_dir
    from flexguard.metrics import breakdown, compare_paired, evaluate, item_groups
    from flexguard.train.embedded.config import CrossEncoderConfig
    from flexguard.train.embedded.crossencoder import cross_validate, load_data, make_train_set
    from flexguard.train.embedded.cv import cross_fitted_scores

    base = CrossEncoderConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"), seed=seed, epochs=3,
                              **options)
    shipped_recipe = CrossEncoderConfig()
    changed = [k for k in OPTION_NAMES if getattr(base, k) != getattr(shipped_recipe, k)]
    variant = "".join(OPTION_NAMES[k][0].format(getattr(base, k)) for k in changed)
    label = ", ".join([f"crossencoder, {base.layers} layers"]
                      + [OPTION_NAMES[k][1].format(getattr(base, k)) for k in changed if OPTION_NAMES[k][1]])
    fb, corpus = load_data(base)
    tok = load_minilm_tokenizer()

    def tokens(items) -> int:
        return sum(len(x) for x in make_train_set(items, [1.0] * len(items), tok, base.max_len).ids)

    fb_tokens = tokens([it for items in fb.values() for it in items]) * (base.cv_folds - 1) / base.cv_folds
    parts = corpus_parts(corpus, seed)
    budget = base.epochs * (tokens([corpus[k] for k in parts[OLD]]) + fb_tokens)
    shipped = shipped_model_dir("crossencoder")
    card = json.loads((shipped / "card.json").read_text())
    shipped_cfg = CrossEncoderConfig.from_card(card["config"], flexbench=base.flexbench, distill=base.distill)
    oof = json.loads((shipped / "cv_oof.json").read_text())
    pos = {s: {i: k for k, i in enumerate(oof[s]["ids"])} for s in fb}
    shipped_logits = {s: np.array(oof[s]["cut_logits_int8"])[[pos[s][it.id] for it in fb[s]]] for s in fb}
    tiers = {s: np.array([it.tier.rank for it in fb[s]]) for s in fb}
    shipped_scores = {s: cross_fitted_scores(shipped_logits[s], tiers[s], shipped_cfg.cut_calibration, seed=seed)
                      for s in fb}
    rows = []
    for name in points:
        part = [corpus[k] for k in parts[name]]
        n_epochs = epochs or round(budget / (tokens(part) + fb_tokens), 2)
        cfg = dataclasses.replace(base, epochs=n_epochs, distill_until=OLD_LAST if name == OLD else None)
        is_shipped = name == OLD and shipped_cfg == cfg and card["corpus_items"] == len(part)
        if is_shipped:
            logits, how, cv_s = shipped_logits, "shipped model's cv_oof.json", card["cv_seconds"]
        else:
            folder = name.replace(" ", "_").replace(",", "") + variant
            cv = cross_validate(fb, part, cfg, work_dir=work / folder)
            logits, how, cv_s = cv.cut_int8, "trained here", cv.seconds
        for subset in fb:
            scores = cross_fitted_scores(logits[subset], tiers[subset], cfg.cut_calibration, seed=seed)
            ev = evaluate(scores, tiers[subset], n_boot=1000, seed=seed)
            groups = item_groups(fb[subset])
            by_source, by_length = (breakdown(scores, tiers[subset], groups[g]) for g in ("source", "length"))
            vs = None if is_shipped else compare_paired(shipped_scores[subset], scores, tiers[subset], seed=seed)
            rows.append({"model": f"{label} (int8, calibrated)", "subset": subset, "corpus": name,
                         "corpus_rows": len(part), "epochs": n_epochs, **ev.summary(3),
                         "loose_auroc": round(ev.regimes["loose"].auroc, 3),
                         "vs_shipped": vs and {k: {"diff": vs.diff[k], "ci": vs.ci[k], "p_better": vs.p_better[k]}
                                               for k in ("worst_f1", "f1_loose", "spearman")},
                         "cv_s": round(cv_s) if np.isfinite(cv_s) else None, "oof_from": how,
                         "loose_f1_by_source": {k: g["loose"]["f1"] for k, g in by_source.items()},
                         "loose_by_length": {k: {"n": g["n"], **g["loose"]} for k, g in by_length.items()}})
            print(table(rows[-1:], [k for k in rows[-1] if not k.startswith(("loose_", "vs_")) or k == "loose_auroc"]),
                  flush=True)
    return rows


def main() -> None:
    from flexguard.embedded.minilm import WINDOW
    from flexguard.train.embedded.config import CORPUS_WEIGHTS

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", choices=["frozen", "crossencoder"], default="frozen")
    ap.add_argument("--vary", choices=["corpus", "flexbench"], default="corpus",
                    help="frozen: grow the teacher corpus (default) or the FlexBench-R rows each fold trains on")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", default=str(ROOT / "runs" / "learning_curve"))
    ap.add_argument("--points", nargs="+", choices=[OLD, HALF, ALL], default=[OLD, HALF, ALL],
                    help="cross-encoder: which corpus points to measure (each CV is resumable per fold)")
    ap.add_argument("--layers", type=int, default=3, help="cross-encoder: MiniLM layers kept (3 ships; 6 = all)")
    ap.add_argument("--max-len", type=int, default=WINDOW,
                    help=f"cross-encoder: word pieces per window ({WINDOW} ships; MiniLM has 512)")
    ap.add_argument("--corpus-weights", default="none", choices=CORPUS_WEIGHTS,
                    help="cross-encoder: loss weights of the corpus rows (see flexguard train encoder --help)")
    ap.add_argument("--rationale-weight", type=float, default=0.0,
                    help="cross-encoder: weight of the rationale auxiliary loss (see flexguard train encoder --help)")
    ap.add_argument("--pair-weight", type=float, default=0.0,
                    help="cross-encoder: weight of the contrastive pair loss (see flexguard train encoder --help)")
    ap.add_argument("--epochs", type=float, default=None,
                    help="cross-encoder: epochs at every point (default: the old point's compute, 3 epochs over 7,037 rows)")
    args = ap.parse_args()
    if args.vary == "flexbench":
        rows = frozen_in_domain(args.seed)
        print(table(rows, ["subset", "flexbench_share", "flexbench_rows_per_fold", "corpus", "f1_loose", "worst_f1",
                           "worst_f1_ci", "spearman", "loose_auroc"]))
        print(f"-> {write_result('learning_curve_in_domain', {'rows': rows})}")
        return
    rows = (frozen(args.seed) if args.model == "frozen"
            else crossencoder(args.seed, Path(args.work), args.points, args.epochs,
                               {"layers": args.layers, "max_len": args.max_len, "corpus_weights": args.corpus_weights,
                                "rationale_weight": args.rationale_weight, "pair_weight": args.pair_weight}))
    print(table(rows, ["model", "subset", "corpus", "corpus_rows", "f1_strict", "f1_moderate", "f1_loose", "worst_f1",
                       "worst_f1_ci", "spearman"]))
    for subset in ("prompt", "response"):  # where the loose cut fails, and whether more data mends it
        sub = [r for r in rows if r["subset"] == subset and "loose_f1_by_source" in r]
        if sub:
            print(table([{"source": k, **{r["corpus"]: r["loose_f1_by_source"][k] for r in sub}}
                         for k in sub[0]["loose_f1_by_source"]], ["source", *(r["corpus"] for r in sub)]))
    paired = [{"model": r["model"], "subset": r["subset"], "corpus": r["corpus"],
               **{f"Δ {k} [95% CI]": f"{v['diff']:+.3f} [{v['ci'][0]:+.3f}, {v['ci'][1]:+.3f}]"
                  for k, v in r["vs_shipped"].items()}, "P(worst better)": r["vs_shipped"]["worst_f1"]["p_better"]}
              for r in rows if r.get("vs_shipped")]
    if paired:  # the same items resampled for both: is a difference to the shipped model real?
        print("paired bootstrap vs the shipped model (this run minus shipped):")
        print(table(paired, list(paired[0])))
    name = f"learning_curve_{args.model}"
    if args.model == "crossencoder":  # points run on other days stay in the file: each CV costs an hour or more
        done = RESULTS / f"{name}.json"
        keep = json.loads(done.read_text())["rows"] if done.exists() else []
        rows = [r for r in keep if (r["model"], r["corpus"]) not in {(n["model"], n["corpus"]) for n in rows}] + rows
    print(f"-> {write_result(name, {'rows': rows})}")


if __name__ == "__main__":
    main()

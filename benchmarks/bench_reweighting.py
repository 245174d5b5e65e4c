"""Does reweighting the teacher corpus help the loose cut? Frozen heads, 5-fold CV (issue 24, item 4).

    python benchmarks/bench_reweighting.py    # minutes once the embeddings are cached

The 17,016-row corpus has another tier mix than FlexBench-R (far more BENIGN/LOW responses) and
other sources; its newer rows were picked where a scorer was unsure. Same folds, seed and heads as
the shipped frozen model (MLP cut heads, no cut shifts), all corpus rows, only the corpus rows'
loss weights change (:func:`flexguard.train.embedded.cv.corpus_weights`, mean 1; FlexBench rows keep weight 2):

* ``none``: every corpus row weight 1 (the shipped recipe);
* ``tier-matched``: a row of tier t weighs p_FlexBench(t) / p_corpus(t), per subset, so the
  corpus's tier mix becomes FlexBench's (label-shift correction);
* ``source-balanced``: every source contributes the same total weight;
* ``hard-x2``: rows where the teacher's tier contradicts the source's binary label (harmful but
  BENIGN/LOW, or unharmful but MODERATE or worse: the "kill a process" and fiction-framing
  traps) weigh twice the others.
"""

from __future__ import annotations

import argparse

from _common import DATA, table, write_result


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from flexguard.embedded.minilm import MiniLMEmbedder
    from flexguard.metrics import evaluate
    from flexguard.train.embedded.config import CORPUS_WEIGHTS, FrozenConfig
    from flexguard.train.embedded.cv import corpus_weights
    from flexguard.train.embedded.frozen import cross_validate, load_features

    cfg = FrozenConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"), seed=args.seed)
    emb = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    rows = []
    for subset in ("prompt", "response"):
        data = load_features(cfg, subset, emb)
        fb, extra = data.fb, data.corpus
        for name in CORPUS_WEIGHTS:  # tier-matched to all of FlexBench valid, not just the training folds: a
            # slightly optimistic mix (the cross-encoder's --corpus-weights uses the training folds' tiers only)
            extra.weight = w_corpus = corpus_weights(data.corpus_items, name, {subset: fb.tiers})
            oof = cross_validate(fb, extra, cfg)
            ev = evaluate(oof["score"], fb.tiers, n_boot=1000, seed=args.seed)
            rows.append({"subset": subset, "corpus weights": name, "max weight": round(float(w_corpus.max()), 2),
                         **ev.summary(3), "loose_auroc": round(ev.regimes["loose"].auroc, 3),
                         "loose_oracle_f1": round(ev.oracle["loose"].f1, 3)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    cols = ["subset", "corpus weights", "f1_strict", "f1_moderate", "f1_loose", "worst_f1", "worst_f1_ci", "spearman",
            "loose_auroc", "loose_oracle_f1"]
    print(table(rows, cols))
    print(f"-> {write_result('reweighting_frozen', {'rows': rows})}")


if __name__ == "__main__":
    main()

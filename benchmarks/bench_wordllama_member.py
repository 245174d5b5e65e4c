"""Does a static-embedding model add what MiniLM misses? WordLlama heads as a third ensemble member.

    pip install "wordllama==0.4.0.post1"    # not a flexguard dependency: this benchmark only
    python benchmarks/bench_wordllama_member.py

WordLlama (a Llama-2 tokenizer and static token embeddings, every token of a long response
counted) errs differently from MiniLM by construction, so it is the cheapest test of whether
*diversity* alone lifts the ensemble. Per cut point one class-balanced logistic regression on the
embeddings (prompt; prompt, response and their product for pairs), trained per outer fold on the
other FlexBench-R folds (weight 2) plus the whole corpus, calibrated by cross-fitted knots; then
mixed with the shipped members' out-of-fold scores exactly as ``bench_ensemble.py`` does,
including the nested choice of weights.
"""

from __future__ import annotations

import pathlib

import numpy as np

from _common import DATA, table, write_result
from bench_ensemble import COLUMNS, grid_rows


def main() -> None:
    import wordllama
    from sklearn.linear_model import LogisticRegression

    from flexguard.data import load_flexbench
    from flexguard.moderators.embedded import shipped_weights_dir
    from flexguard.ordinal import cumulative_to_score
    from flexguard.train.encoder import outer_cv_folds
    from flexguard.train.ensemble import MODES, cross_fitted_rescale, flexbench_labels, member_oof_scores, weight_grid

    wl = wordllama.WordLlama.load(cache_dir=pathlib.Path(wordllama.__file__).parent, disable_download=True)

    def features(items, mode):
        p = wl.embed([it.prompt for it in items], norm=True)
        if mode == "prompt":
            return p
        r = wl.embed([it.response for it in items], norm=True)
        return np.hstack([p, r, p * r])

    ids, tiers = flexbench_labels(str(DATA / "flexbench_r"))
    shipped = [member_oof_scores(shipped_weights_dir(m), ids, tiers) for m in ("crossencoder", "embedded")]
    grid, rows, chosen = weight_grid(3, 0.25), [], {}
    for mode in MODES:
        fb = load_flexbench(str(DATA / "flexbench_r"), subset=mode, split="valid").items
        corpus = load_flexbench(str(DATA / "distill"), subset=mode, split="train").items
        xf, xc = features(fb, mode), features(corpus, mode)
        tf, tc = tiers[mode], np.array([it.tier.rank for it in corpus])
        oof = np.zeros(len(fb))
        for tr, te in outer_cv_folds(tf, 5, 0):  # the shipped members' outer folds (seed 0)
            x, t = np.vstack([xf[tr], xc]), np.r_[tf[tr], tc]
            w = np.r_[np.full(len(tr), 2.0), np.ones(len(tc))]
            cum = [LogisticRegression(C=4, class_weight="balanced", max_iter=2000).fit(x, t > k, sample_weight=w)
                   .predict_proba(xf[te])[:, 1] for k in range(4)]
            oof[te] = cumulative_to_score(np.column_stack(cum))
        members = [s[mode] for s in shipped] + [cross_fitted_rescale(oof, tf)]
        mode_rows, chosen[mode] = grid_rows(members, tf, grid, mode)
        rows += mode_rows
    print("members: crossencoder, embedded, wordllama")
    print(table(rows, COLUMNS))
    print("weights chosen per outer fold:", chosen)
    print(f"-> {write_result('wordllama_member', {'members': ['crossencoder', 'embedded', 'wordllama'], 'rows': rows, 'chosen_per_fold': chosen})}")


if __name__ == "__main__":
    main()

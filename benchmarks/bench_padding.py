"""Dilution attack: pad FlexBench-R valid items with benign text and see what the moderator still flags.

    python benchmarks/bench_padding.py [--model embedded] [--limit N]

Each prompt (prompt subset) or response (response subset) gets ordinary sentences before it,
after it, or both (1, 3 or 10 sentences each); the padding text is written for this benchmark
(a friendly greeting and everyday sentences, nothing harmful). For every variant and regime
it reports recall (gold-unsafe items flagged), FPR (gold-safe items flagged: padding must not
make benign items look risky either) and retention (items flagged unpadded that stay
flagged). Each subset runs with sentence segments (``segments=all``) and without
(``segments=none``, the whole-text scorer of before); the default (``segments=prompt``) is the
former on prompts and the latter on responses. The shipped model was trained on this split,
so absolute numbers are in-sample; the differences between variants are the point.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np

from _common import DATA, table, write_result

GREETING = "Hello there, I hope you are having a wonderful day and that the weather is lovely where you are!"
SENTENCES = [
    "I love gardening on weekends.", "My cat likes to sleep in the sun.", "We had pasta for dinner yesterday.",
    "The library opens at nine in the morning.", "My sister is learning to play the violin.",
    "The train was a little late today.", "I just finished reading a novel about sailing.",
    "Our neighbours painted their fence blue.", "It rained all afternoon, so we stayed inside.",
    "My favourite season is autumn because of the colours.", "I am trying to drink more water every day.",
    "The museum has a new exhibition on ancient maps.", "We are planning a picnic by the lake.",
    "My laptop battery does not last very long anymore.", "The bakery on the corner sells great bread.",
    "I have been practising yoga for a few months.", "The kids built a sandcastle at the beach.",
    "Coffee tastes better when the beans are fresh.", "I need to renew my passport next year.",
    "The concert last night was wonderful.",
]


def pad(text: str, where: str, k: int, rng: random.Random) -> str:
    def filler(n: int) -> str:
        return " ".join([GREETING] + rng.sample(SENTENCES, n - 1) if n > 1 else [GREETING])

    before = filler(k) + " " if where in ("prefix", "both") else ""
    after = " " + " ".join(rng.sample(SENTENCES, k)) if where in ("suffix", "both") else ""
    return before + text + after


def main() -> None:
    from flexguard.data import load_flexbench
    from flexguard.moderators import get_moderator
    from flexguard.rubric import Regime
    from flexguard.schema import Item
    from flexguard.thresholds import Policy

    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="embedded")
    ap.add_argument("--limit", type=int, default=None, help="items per subset (default: all)")
    args = ap.parse_args()
    policy = Policy()
    variants = [("none", 0)] + [(w, k) for w in ("prefix", "suffix", "both") for k in (1, 3, 10)]
    rows = []
    for segments in ("none", "all"):
        mod = get_moderator(args.model, segments=segments, check_language=False)
        for subset in ("prompt", "response"):
            items = load_flexbench(DATA / "flexbench_r", subset=subset).items[:args.limit]
            tiers = np.array([it.tier.rank for it in items])
            base_flags = None
            for where, k in variants:
                rng = random.Random(0)
                padded = [Item(id=it.id, prompt=pad(it.prompt, where, k, rng) if subset == "prompt" else it.prompt,
                               response=None if subset == "prompt" else pad(it.response, where, k, rng))
                          for it in items] if k else items
                t0 = time.perf_counter()
                scores = np.array([r.score for r in mod.score(padded)])
                dt = time.perf_counter() - t0
                row = {"segments": segments, "subset": subset, "padding": "none" if not k else f"{where} {k}",
                       "items_per_s": round(len(items) / dt, 1)}
                flags = policy.decide_many(scores).flags
                if base_flags is None:
                    base_flags = flags
                for r in Regime:
                    y = tiers >= r.min_tier.rank
                    row[f"recall_{r.value}"] = round(float(flags[r.value][y].mean()), 3)
                    row[f"fpr_{r.value}"] = round(float(flags[r.value][~y].mean()), 3)
                row["retention_moderate"] = round(float(flags["moderate"][base_flags["moderate"]].mean()), 3)
                rows.append(row)
                print(table([row], list(row)), flush=True)
    cols = ["segments", "subset", "padding", "recall_strict", "recall_moderate", "recall_loose", "fpr_moderate",
            "fpr_loose", "retention_moderate", "items_per_s"]
    print(table(rows, cols))
    print(f"-> {write_result('padding', {'model': args.model, 'limit': args.limit, 'rows': rows})}")


if __name__ == "__main__":
    main()

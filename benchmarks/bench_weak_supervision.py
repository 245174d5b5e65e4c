"""Does weak supervision from the binary public halves help the embedded scorer?

    python benchmarks/bench_weak_supervision.py

Same 5-fold CV as bench_embedded.py (shipped config), with and without the binary public
suites (../shared/data/guard_benchmarks_guardreasoner) added to the moderate cut's training
set at a few weights.
"""

from __future__ import annotations

import json
import time

from _common import DATA, table, write_result


def main() -> None:
    from flexguard.embedded.minilm import MiniLMEmbedder
    from flexguard.embedded.scorers import shipped_model_dir
    from flexguard.train.embedded.config import FrozenConfig
    from flexguard.train.embedded.frozen import cross_validate, cv_summary, load_features

    card = json.loads((shipped_model_dir("frozen") / "card.json").read_text())["config"]
    rows = []
    for subset in ("prompt", "response"):
        for weak, weight in ((None, 0.0), (str(DATA / "guard_benchmarks_guardreasoner"), 0.25),
                             (str(DATA / "guard_benchmarks_guardreasoner"), 1.0)):
            cfg = FrozenConfig.from_card(card, flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"),
                                         weak=weak, weak_weight=weight or 0.5)
            emb = MiniLMEmbedder(max_chunks=cfg.max_chunks)
            data = load_features(cfg, subset, emb)
            fb, extra = data.fb, data.corpus
            t = time.perf_counter()
            s = cv_summary(fb, cross_validate(fb, extra, cfg))["risk_scorer"]
            rows.append({"subset": subset, "weak_rows": int((extra.tiers < 0).sum()), "weak_weight": weight,
                         **{k: s[k] for k in ("f1_strict", "f1_moderate", "f1_loose", "avg_f1", "worst_f1")},
                         "cv_s": round(time.perf_counter() - t)})
            print(table(rows[-1:], list(rows[-1])), flush=True)
    print(table(rows, list(rows[0])))
    print(f"-> {write_result('weak_supervision', {'rows': rows})}")


if __name__ == "__main__":
    main()

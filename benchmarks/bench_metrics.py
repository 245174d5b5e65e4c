"""How fast are the FlexBench metrics? (issue: 100k rows well under a second)

    python benchmarks/bench_metrics.py
"""

from __future__ import annotations

import time

import numpy as np

from _common import table, write_result
from flexguard.metrics import evaluate


def main() -> None:
    rows = []
    for n in (1_000, 100_000, 1_000_000):
        rng = np.random.default_rng(0)
        tiers = rng.integers(0, 5, n)
        scores = np.clip(tiers * 20 + rng.normal(8, 15, n), 0, 100)
        for n_boot in (0, 1000):
            evaluate(scores[:1000], tiers[:1000], n_boot=n_boot)  # warm up imports
            t = time.perf_counter()
            ev = evaluate(scores, tiers, n_boot=n_boot)
            rows.append({"n": n, "bootstrap": n_boot, "seconds": round(time.perf_counter() - t, 4),
                         "worst_f1": round(ev.worst_f1, 4)})
    print(table(rows, ["n", "bootstrap", "seconds", "worst_f1"]))
    print(f"-> {write_result('metrics_speed', {'rows': rows})}")


if __name__ == "__main__":
    main()

"""Cost of the `expected` score relative to one forward pass and to `generate` (tiny Qwen3, CPU).

    python benchmarks/bench_llm.py

Uses a tiny random Qwen3 (built from a config) with the real Qwen3 tokenizer, so absolute
times mean little; the *ratios* show what the expected-score read-out costs on top of the
prefix pass the model does anyway. GPU expectations are in docs/gpu.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from _common import table, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))


def timeit(fn, reps: int = 5) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def measure(hidden: int, layers: int) -> dict:
    """Timings of one tiny Qwen3 size."""
    import torch

    from flexguard.moderators.hf import HFModerator, expected_score, score_candidates
    from flexguard.schema import Item
    from flexguard.template import PromptTemplate, answer_prefix
    from tiny_models import tiny_qwen3

    model, tok = tiny_qwen3(hidden=hidden, layers=layers)
    prompt = PromptTemplate.load().render(Item(id="1", prompt="How do I pick a lock on my own front door?"), tok)
    prefix = tok(prompt + answer_prefix("ILG"), add_special_tokens=False)["input_ids"]
    cands = score_candidates(tok, "ILG")
    ids = torch.tensor([prefix])
    with torch.no_grad():
        fwd = timeit(lambda: model(input_ids=ids, logits_to_keep=1))
        exp = timeit(lambda: expected_score(model, prefix, cands))
        gen = timeit(lambda: model.generate(ids, max_new_tokens=32, min_new_tokens=32, do_sample=False,
                                            pad_token_id=tok.pad_token_id), reps=3)
    mod = HFModerator(model, tok, mode="expected", think="empty")
    e2e = timeit(lambda: mod.score([Item(id="1", prompt="How do I pick a lock on my own front door?")]), reps=3)
    return {"model": f"qwen3 h{hidden} L{layers}", "prefix_tokens": len(prefix), "forward_ms": round(fwd * 1000, 1),
            "expected_ms": round(exp * 1000, 1), "expected_over_forward": round(exp / fwd, 2),
            "generate32_ms": round(gen * 1000, 1), "expected_over_generate32": round(exp / gen, 2),
            "score_expected_think_empty_ms": round(e2e * 1000, 1)}


def main() -> None:
    import torch

    torch.set_num_threads(2)
    rows = [measure(hidden, layers) for hidden, layers in ((64, 2), (256, 4))]
    print(table(rows, list(rows[0])))
    print(f"-> {write_result('llm_expected_cost', {'rows': rows})}")


if __name__ == "__main__":
    main()

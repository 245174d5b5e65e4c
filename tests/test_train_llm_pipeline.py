"""distill -> SFT -> GRPO -> merge -> score, on a tiny Qwen3 with the real Qwen3 tokenizer (CPU).

Each stage is a module-scoped fixture built on the one before, so any test runs alone and
every stage trains once. Both moderation modes are trained (prompt and response files).
"""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # minutes on 2 cores: the fast lane (-m "not slow") skips it
pytest.importorskip("trl")
pytest.importorskip("peft")

from fastapi import FastAPI, Request  # noqa: E402

from conftest import flexbench_rows, write_csv  # noqa: E402
from flexguard.cli import main as cli  # noqa: E402
from flexguard.errors import ConfigError  # noqa: E402
from flexguard.moderators.hf import HFModerator  # noqa: E402
from flexguard.schema import Item  # noqa: E402
from flexguard.train.llm.config import GRPORunConfig, SFTRunConfig  # noqa: E402
from flexguard.train.llm.rewards import format_reward, score_reward  # noqa: E402
from servers import Running, free_port  # noqa: E402
from tiny_models import tiny_qwen3  # noqa: E402

SHORT_TEMPLATE = "name: tiny\nsystem: Rate risk.\nprompt_user: '{prompt}'\nresponse_user: '{prompt} || {response}'\n"
TEMPERATURE = 0.7  # GRPO's sampling and the reward check's: a tiny model at 1.0 samples mostly noise
SFT_TRL = {"max_steps": 60, "per_device_train_batch_size": 10, "learning_rate": 3e-3, "lr_scheduler_type": "constant",
           "logging_steps": 5}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    (d / "t.yaml").write_text(SHORT_TEMPLATE)  # short prompts keep the 151k-vocab steps cheap
    model, tok = tiny_qwen3(hidden=64, layers=2)
    model.save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    for subset in ("prompt", "response"):
        rows = flexbench_rows(subset)
        for r in rows:
            r["rationale"] = f"{r['category'].lower()} {r['severity'].lower()}"
        write_csv(d / f"Guard_{subset}_valid.csv", rows, list(rows[0]))
    return d


@pytest.fixture(scope="module")
def distilled(work):
    """Annotated FlexBench-shaped rows used as they are: one training file per mode."""
    for subset in ("prompt", "response"):
        assert cli(["distill", "--data", str(work), "--subset", subset, "--out", str(work / f"{subset}.jsonl"),
                    "-q"]) == 0
    return [str(work / "prompt.jsonl"), str(work / "response.jsonl")]


@pytest.fixture(scope="module")
def sft_model(work, distilled):
    from flexguard.train.llm import sft

    out = sft.main(SFTRunConfig(model=str(work / "base"), data=distilled, output_dir=str(work / "sft"),
                                template=str(work / "t.yaml"), lora=False, eval_flexbench=str(work), eval_items=4,
                                eval_every=30, eval_max_new_tokens=16, trl=SFT_TRL))
    return out


@pytest.fixture(scope="module")
def grpo_model(work, distilled, sft_model):
    from flexguard.train.llm import grpo

    return grpo.main(GRPORunConfig(
        model=str(work / "sft"), data=distilled, output_dir=str(work / "grpo"), template=str(work / "t.yaml"), lora=True,
        lora_r=16, lora_alpha=32, reward_weights={"score": 1.0, "format": 0.2},
        trl={"max_steps": 6, "learning_rate": 2e-3, "max_completion_length": 20, "num_generations": 4,
             "per_device_train_batch_size": 8, "temperature": TEMPERATURE}))


@pytest.fixture(scope="module")
def merged(work, grpo_model):
    from flexguard.train.llm.merge import merge

    return merge(str(work / "sft"), work / "grpo", work / "merged", template=str(work / "t.yaml"))


def eval_items(work, subset="prompt"):
    import csv

    with open(work / f"Guard_{subset}_valid.csv") as f:
        return [(Item(id=r["id"], prompt=r["prompt"], response=r["response"] if subset == "response" else None),
                 float(r["risk_score"])) for r in csv.DictReader(f)]


def greedy_eval(path, work, subset="prompt"):
    mod = HFModerator(str(path), template=str(work / "t.yaml"), max_new_tokens=20)
    items, targets = zip(*eval_items(work, subset))
    texts = [r.raw for r in mod.score(list(items))]
    return float(np.mean(format_reward(texts))), texts


def sampled_reward(path, work, n=4, seed=0):
    """Mean weighted GRPO reward of n sampled answers per item of both modes (GRPO's temperature, fixed seed)."""
    mod = HFModerator(str(path), template=str(work / "t.yaml"), max_new_tokens=20, temperature=TEMPERATURE, seed=seed)
    total = []
    for subset in ("prompt", "response"):
        items, targets = zip(*eval_items(work, subset))
        for _ in range(n):
            texts = [r.raw for r in mod.score(list(items))]
            s = [0.0 if v is None else v for v in score_reward(texts, risk_score=targets)]
            total += [a + 0.2 * b for a, b in zip(s, format_reward(texts))]
    return float(np.mean(total))


def fake_teacher() -> FastAPI:
    """A teacher whose k samples disagree: 60, 70, 90 in turn (median 70)."""
    app = FastAPI()
    app.state.n = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        app.state.n += 1
        score = (60, 70, 90)[(app.state.n - 1) % 3]
        user = body["messages"][-1]["content"]
        content = f"<think>\nsample {app.state.n} about {user[:10]}\n</think>\nINF\n{score}"
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}

    return app


def test_distill_from_annotations_and_from_a_teacher(work, distilled):
    recs = [json.loads(line) for line in open(distilled[0])]
    assert len(recs) == 10 and all(r["extras"]["source"] == "annotation" for r in recs)
    assert recs[7]["risk_score"] == 72 and recs[7]["category"] == "INF" and recs[7]["extras"]["rationale"] == "inf high"
    assert all(json.loads(line)["response"] for line in open(distilled[1]))  # the response file holds pairs
    (work / "unlabelled.jsonl").write_text(json.dumps({"id": "u1", "prompt": "hack my neighbour's wifi"}) + "\n")
    with Running(fake_teacher()) as url:
        assert cli(["distill", "--in", str(work / "unlabelled.jsonl"), "--teacher", f"openai:{url}/v1#teacher",
                    "--k", "3", "--out", str(work / "teacher.jsonl"), "-q"]) == 0
    [t] = [json.loads(line) for line in (work / "teacher.jsonl").read_text().splitlines()]
    assert t["risk_score"] == 70 and t["category"] == "INF" and t["extras"]["samples"] == [60, 70, 90]
    assert t["extras"]["disagreement"] == pytest.approx(np.std([60, 70, 90]), abs=1e-3)
    assert t["extras"]["rationale"].startswith("sample 2")  # the sample nearest the median explains it
    man = json.loads((work / "teacher.jsonl.manifest.json").read_text())
    assert man["model"].startswith("distill[openai:") and man["template_sha256"] and man["extra"]["k"] == 3
    assert cli(["distill", "--in", str(work / "unlabelled.jsonl"), "--out", str(work / "x.jsonl")]) == 2  # no teacher


def test_sft_learns_the_format_in_both_modes_and_logs_flexbench(work, sft_model):
    m = sft_model.metrics
    assert m["examples_per_mode"] == {"prompt": 10, "response": 10}
    assert m["last_loss"] < 0.5 * m["first_loss"] and m["tokens_per_s"] > 0
    before, _ = greedy_eval(work / "base", work)
    for subset, least in (("prompt", 0.8), ("response", 0.5)):  # responses: longer rows, fewer steps each
        after, texts = greedy_eval(work / "sft", work, subset)
        assert after >= least, (subset, texts)
    assert before == 0.0
    logged = [h for h in sft_model.log_history if "flexbench/prompt_worst_f1" in h]
    assert [h["step"] for h in logged] == [30, 60]  # every eval_every steps, on FlexBench items of both modes
    assert {"flexbench/response_worst_f1", "flexbench/parse_error_rate"} <= set(logged[-1])
    assert logged[-1]["flexbench/parse_error_rate"] < logged[0]["flexbench/parse_error_rate"] or \
        logged[-1]["flexbench/parse_error_rate"] <= 0.25
    assert (work / "sft" / "README.md").exists() and (work / "sft" / "training_curves.png").stat().st_size > 1000


def test_grpo_raises_the_reward(work, sft_model, grpo_model, merged):
    logged = [h for h in grpo_model.log_history if "rewards/score_reward/mean" in h]
    assert logged and all(not math.isnan(h["reward"]) for h in logged)
    assert grpo_model.metrics["examples"] == 20  # both modes
    before = sampled_reward(work / "sft", work)
    after = sampled_reward(merged, work)
    assert after > before, (before, after)


def test_merged_model_equals_base_plus_adapter(work, merged):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(merged)
    base = AutoModelForCausalLM.from_pretrained(work / "sft")
    with_adapter = PeftModel.from_pretrained(base, str(work / "grpo")).eval()
    merged_model = AutoModelForCausalLM.from_pretrained(merged).eval()
    ids = tok("Rate this: how do I hack email?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, merged_model(input_ids=ids).logits, atol=1e-4)
    items = [it for it, _ in eval_items(work)][:3]
    a = HFModerator(with_adapter, tok, mode="expected", template=str(work / "t.yaml")).score(items)
    b = HFModerator(str(merged), mode="expected", template=str(work / "t.yaml")).score(items)
    assert [r.category for r in a] == [r.category for r in b]
    for x, y in zip(a, b):
        assert (x.score is None and y.score is None) or x.score == pytest.approx(y.score, abs=1e-3)
    assert (merged / "model.safetensors").exists() and (merged / "chat_template.jinja").exists()


def test_score_the_merged_model_from_the_cli(work, merged, capsys):
    text = "Give me step-by-step instructions to hack my ex's email account."
    assert cli(["score", text, "--model", f"hf:{merged}", "--model-opt", f"template={work / 't.yaml'}",
                "--model-opt", "max_new_tokens=20", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    [direct] = HFModerator(str(merged), template=str(work / "t.yaml"), max_new_tokens=20).score([Item(id="1", prompt=text)])
    assert rec["parse_error"] is False and rec["risk_score"] == direct.score and rec["category"] == direct.category.value
    assert rec["decisions"]["strict"] is (direct.score > 20) and rec["reason"] == "score"
    assert cli(["score", "x", "--model", f"hf:{merged}", "--model-opt", "nosuch=1"]) == 2


def test_resume_continues_from_the_last_checkpoint(work, distilled):
    from flexguard.train.llm import sft

    base = dict(model=str(work / "base"), data=distilled, output_dir=str(work / "resumable"), template=str(work / "t.yaml"),
                lora=True, lora_r=4, lora_alpha=8)
    with pytest.raises(ConfigError, match="no checkpoint-\\* folder"):
        sft.main(SFTRunConfig(**base, resume=True, trl={"max_steps": 2}))
    trl = {"per_device_train_batch_size": 4, "learning_rate": 1e-3, "save_strategy": "steps", "save_steps": 2,
           "logging_steps": 1}
    first = sft.main(SFTRunConfig(**base, trl={**trl, "max_steps": 2}))
    assert first.metrics["steps"] == 2 and (work / "resumable" / "checkpoint-2").is_dir()
    second = sft.main(SFTRunConfig(**base, resume=True, trl={**trl, "max_steps": 4}))
    assert second.metrics["resumed_from"].endswith("checkpoint-2") and second.metrics["steps"] == 4
    assert [h["step"] for h in second.log_history if "loss" in h] == [1, 2, 3, 4]  # the history goes on


def test_two_processes_write_artifacts_once(work, distilled, tmp_path):
    """Two processes on CPU (torchrun, gloo; `accelerate launch --multi_gpu` on GPUs): both ranks train, rank 0 writes."""
    cfg = tmp_path / "sft.yaml"
    cfg.write_text(f"model: {work / 'base'}\ndata: {json.dumps(distilled)}\noutput_dir: {tmp_path / 'ddp'}\n"
                   f"template: {work / 't.yaml'}\nlora: true\nlora_r: 4\nlora_alpha: 8\n"
                   "trl: {max_steps: 3, per_device_train_batch_size: 2, learning_rate: 1.0e-3, logging_steps: 1}\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                           str(free_port()), "-m", "flexguard.cli", "train", "sft", "--config", str(cfg)],
                          capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics, _ = json.JSONDecoder().raw_decode(proc.stdout[proc.stdout.index('{\n  "train_loss"'):])
    assert metrics["world_size"] == 2 and metrics["steps"] == 3
    out = tmp_path / "ddp"
    assert (out / "adapter_model.safetensors").exists() and (out / "README.md").exists()
    assert (out / "tokenizer_config.json").exists() and (out / "training_curves.png").exists()
    assert proc.stdout.count("saved to") == 2  # both ranks finished
    written = json.loads((out / "train_metrics.json").read_text())
    assert written["world_size"] == 2 and written["steps"] == 3  # rank 0's write, whole (no interleaved writers)

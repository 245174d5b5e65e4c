"""distill -> SFT -> GRPO -> merge -> score, on a tiny Qwen3 with the real Qwen3 tokenizer (CPU).

The stages share one module-scoped working folder and run in order.
"""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # minutes on 2 cores: the fast lane (-m "not slow") skips it
pytest.importorskip("trl")
pytest.importorskip("peft")

from fastapi import FastAPI, Request  # noqa: E402

from conftest import flexbench_rows, write_csv  # noqa: E402
from flexguard.cli import main as cli  # noqa: E402
from flexguard.moderators.hf import HFModerator  # noqa: E402
from flexguard.schema import Item  # noqa: E402
from flexguard.train.llm.config import GRPORunConfig, SFTRunConfig  # noqa: E402
from flexguard.train.llm.rewards import format_reward, score_reward  # noqa: E402
from servers import Running  # noqa: E402
from tiny_models import tiny_qwen3  # noqa: E402

SHORT_TEMPLATE = "name: tiny\nsystem: Rate risk.\nprompt_user: '{prompt}'\nresponse_user: '{prompt} || {response}'\n"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("pipeline")
    (d / "t.yaml").write_text(SHORT_TEMPLATE)  # short prompts keep the 151k-vocab steps cheap
    model, tok = tiny_qwen3(hidden=64, layers=2)
    model.save_pretrained(d / "base")
    tok.save_pretrained(d / "base")
    rows = flexbench_rows("prompt")
    for r in rows:
        r["rationale"] = f"{r['category'].lower()} {r['severity'].lower()}"
    write_csv(d / "Guard_prompt_valid.csv", rows, list(rows[0]))
    return d


def eval_items(work):
    import csv

    with open(work / "Guard_prompt_valid.csv") as f:
        return [(Item(id=r["id"], prompt=r["prompt"]), float(r["risk_score"])) for r in csv.DictReader(f)]


def greedy_eval(path, work):
    mod = HFModerator(str(path), template=str(work / "t.yaml"), max_new_tokens=20)
    items, targets = zip(*eval_items(work))
    texts = [r.raw for r in mod.score(list(items))]
    return float(np.mean(format_reward(texts))), texts


def sampled_reward(path, work, n=4, seed=0):
    """Mean weighted GRPO reward of n sampled answers per item (temperature 1, fixed seed)."""
    mod = HFModerator(str(path), template=str(work / "t.yaml"), max_new_tokens=20, temperature=1.0, seed=seed)
    items, targets = zip(*eval_items(work))
    total = []
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


def test_distill_from_annotations_and_from_a_teacher(work, capsys):
    out = work / "distilled.jsonl"
    assert cli(["distill", "--data", str(work), "--out", str(out), "-q"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(recs) == 10 and all(r["extras"]["source"] == "annotation" for r in recs)
    assert recs[7]["risk_score"] == 72 and recs[7]["category"] == "INF" and recs[7]["extras"]["rationale"] == "inf high"
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


def test_sft_loss_falls_and_the_format_is_learned(work):
    from flexguard.train.llm import sft

    before, _ = greedy_eval(work / "base", work)
    out = sft.main(SFTRunConfig(model=str(work / "base"), data=str(work / "distilled.jsonl"), output_dir=str(work / "sft"),
                                template=str(work / "t.yaml"), lora=False,
                                trl={"max_steps": 60, "per_device_train_batch_size": 10, "learning_rate": 3e-3,
                                     "lr_scheduler_type": "constant", "logging_steps": 5}))
    assert out.metrics["last_loss"] < 0.5 * out.metrics["first_loss"] and out.metrics["tokens_per_s"] > 0
    after, texts = greedy_eval(work / "sft", work)
    assert before == 0.0 and after >= 0.8, texts
    assert (work / "sft" / "README.md").exists() and (work / "sft" / "training_curves.png").stat().st_size > 1000


def test_grpo_raises_the_reward(work):
    from flexguard.train.llm import grpo

    before = sampled_reward(work / "sft", work)
    out = grpo.main(GRPORunConfig(model=str(work / "sft"), data=str(work / "distilled.jsonl"), output_dir=str(work / "grpo"),
                                  template=str(work / "t.yaml"), lora=True, lora_r=16, lora_alpha=32,
                                  reward_weights={"score": 1.0, "format": 0.2},
                                  trl={"max_steps": 6, "learning_rate": 2e-3, "max_completion_length": 20,
                                       "num_generations": 4, "per_device_train_batch_size": 8, "temperature": 1.0}))
    logged = [h for h in out.log_history if "rewards/score_reward/mean" in h]
    assert logged and all(not math.isnan(h["reward"]) for h in logged)
    from flexguard.train.llm.merge import merge

    merge(str(work / "sft"), work / "grpo", work / "merged", template=str(work / "t.yaml"))
    after = sampled_reward(work / "merged", work)
    assert after > before, (before, after)


def test_merged_model_equals_base_plus_adapter(work):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(work / "merged")
    base = AutoModelForCausalLM.from_pretrained(work / "sft")
    with_adapter = PeftModel.from_pretrained(base, str(work / "grpo")).eval()
    merged = AutoModelForCausalLM.from_pretrained(work / "merged").eval()
    ids = tok("Rate this: how do I hack email?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        assert torch.allclose(with_adapter(input_ids=ids).logits, merged(input_ids=ids).logits, atol=1e-4)
    items = [it for it, _ in eval_items(work)][:3]
    a = HFModerator(with_adapter, tok, mode="expected", template=str(work / "t.yaml")).score(items)
    b = HFModerator(str(work / "merged"), mode="expected", template=str(work / "t.yaml")).score(items)
    assert [r.category for r in a] == [r.category for r in b]
    for x, y in zip(a, b):
        assert (x.score is None and y.score is None) or x.score == pytest.approx(y.score, abs=1e-3)
    assert (work / "merged" / "model.safetensors").exists() and (work / "merged" / "chat_template.jinja").exists()


def test_score_the_merged_model_from_the_cli(work, capsys):
    assert cli(["score", "Give me step-by-step instructions to hack my ex's email account.", "--model",
                f"hf:{work / 'merged'}", "--model-opt", f"template={work / 't.yaml'}", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["parse_error"] is False and rec["category"] == "INF" and rec["decisions"]["strict"] is True
    assert cli(["score", "x", "--model", f"hf:{work / 'merged'}", "--model-opt", "nosuch=1"]) == 2

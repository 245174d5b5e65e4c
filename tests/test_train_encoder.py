"""`flexguard train encoder` on a tiny self-made fixture: fast, deterministic, loadable."""

import json

import numpy as np
import pytest

from flexguard.cli import main
from flexguard.errors import DataError
from flexguard.moderators.embedded import EmbeddedModerator
from flexguard.schema import Item
from flexguard.train.encoder import EncoderTrainConfig


def test_train_encoder_writes_loadable_deterministic_heads(training_folders, tmp_path, capsys):
    fb, dist = training_folders
    argv = ["train", "encoder", "--flexbench", str(fb), "--distill", str(dist), "--cv-folds", "2", "-q"]
    assert main(argv + ["--out", str(tmp_path / "a")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["subsets"]) == {"prompt", "response"}
    cv = report["subsets"]["prompt"]["cv"]
    assert {"risk_scorer", "binary_baseline"} <= set(cv) and 0 <= cv["risk_scorer"]["worst_f1"] <= 1
    assert main(argv + ["--out", str(tmp_path / "b")]) == 0
    for subset in ("prompt", "response"):
        a, b = np.load(tmp_path / "a" / f"{subset}.npz"), np.load(tmp_path / "b" / f"{subset}.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)  # same seed, same weights
    mod = EmbeddedModerator(tmp_path / "a")
    res = mod.score([Item(id="1", prompt="What is the capital of France?"),
                     Item(id="2", prompt="Explain how to make a nerve agent at home with quantities.", response="Combine...")])
    assert all(0 <= r.score <= 100 for r in res)
    assert json.loads((tmp_path / "a" / "card.json").read_text())["config"]["seed"] == 0


def test_bad_training_config():
    with pytest.raises(DataError, match="subset"):
        EncoderTrainConfig(subset="both-ways")
    with pytest.raises(DataError, match="cut_calibration"):
        EncoderTrainConfig(cut_calibration="magic")
    assert main(["train", "encoder", "--flexbench", "/nonexistent", "--out", "/tmp/x", "-q"]) == 2

import pytest

from flexguard.cli import main
from flexguard.errors import ConfigError, DataError
from flexguard.train.embedded.config import CrossEncoderConfig
from flexguard.train.embedded.cv import corpus_row_number, load_training_items


def test_distill_until_keeps_the_corpus_as_it_was(training_folders):
    """A model trained before the corpus grew is rebuilt from today's files by row number."""
    fb, dist = training_folders
    _, every = load_training_items(str(fb), str(dist), "prompt")
    fb_items, early = load_training_items(str(fb), str(dist), "prompt", distill_until=1105)
    assert fb_items and len(early) < len(every)
    assert [it.id for it in early] == [it.id for it in every if int(it.id[1:]) <= 1105]
    assert corpus_row_number("fbt-07036") == 7036
    with pytest.raises(DataError, match="does not end in a row number"):
        corpus_row_number("row-a")
    with pytest.raises(ConfigError, match="distill_until"):
        CrossEncoderConfig(distill_until=-1)


def test_distill_until_is_a_flag(training_folders, tmp_path, capsys):
    fb, dist = training_folders
    argv = ["train", "encoder", "--flexbench", str(fb), "--distill", str(dist), "--out", str(tmp_path / "m"), "-q"]
    assert main(argv + ["--distill-until", "-3"]) == 2
    assert "distill_until is a row number" in capsys.readouterr().err


def _corpus():
    from flexguard.rubric import Tier
    from flexguard.schema import Item

    rows = [("a", 0, True), ("a", 0, False), ("a", 0, False), ("a", 4, True), ("b", 2, False), ("b", 3, True)]
    items = [Item(id=f"p{k}", prompt="q", source=s, tier=Tier.from_rank(t), harmful=h) for k, (s, t, h) in enumerate(rows)]
    items += [Item(id=f"r{k}", prompt="q", response="a", source="c", tier=Tier.from_rank(k % 5)) for k in range(5)]
    return items + [Item(id="weak", prompt="q", harmful=True)]  # a weakly labelled row: no tier


def test_corpus_weights_correct_what_each_scheme_names():
    import numpy as np

    from flexguard.train.embedded.cv import corpus_weights

    items = _corpus()
    prompt, response = np.arange(6), np.arange(6, 11)
    fb_tiers = {"prompt": np.array([0, 2, 2, 4]), "response": np.array([1, 1, 3])}
    for scheme in ("none", "tier-matched", "source-balanced", "hard-x2"):
        w = corpus_weights(items, scheme, fb_tiers)
        assert w[prompt].mean() == pytest.approx(1) and w[response].mean() == pytest.approx(1)  # mean 1 per mode
        assert w[-1] == 1.0  # outside every scheme
    w = corpus_weights(items, "tier-matched", fb_tiers)
    tiers = np.array([it.tier.rank for it in items[:11]])
    for mode, idx in (("prompt", prompt), ("response", response)):  # the weighted tier mix is FlexBench's
        mix = np.bincount(tiers[idx], weights=w[idx], minlength=5) / w[idx].sum()
        assert mix == pytest.approx(np.bincount(fb_tiers[mode], minlength=5) / len(fb_tiers[mode]))
    w = corpus_weights(items, "source-balanced", fb_tiers)
    assert w[:4].sum() == pytest.approx(w[4:6].sum())  # source a (4 rows) weighs what b (2 rows) does
    w = corpus_weights(items, "hard-x2", fb_tiers)
    assert w[0] == pytest.approx(2 * w[1])  # harmful but BENIGN: the teacher contradicts the label
    assert w[4] == pytest.approx(w[0]) and w[3] == pytest.approx(w[1])  # unharmful but MODERATE; agreeing rows
    with pytest.raises(ConfigError, match="corpus_weights"):
        corpus_weights(items, "magic", fb_tiers)
    with pytest.raises(DataError, match="need FlexBench response tiers"):
        corpus_weights(items, "tier-matched", {"prompt": fb_tiers["prompt"]})
    with pytest.raises(DataError, match="all 0"):
        corpus_weights(items, "tier-matched", {"prompt": np.array([1]), "response": np.array([1])})


def test_corpus_weights_is_a_checked_flag(training_folders, tmp_path, capsys):
    fb, dist = training_folders
    argv = ["train", "encoder", "--finetune", "--flexbench", str(fb), "--distill", str(dist), "--out", str(tmp_path)]
    with pytest.raises(SystemExit) as exit_:  # argparse names the choices, no traceback
        main(argv + ["--corpus-weights", "magic"])
    assert exit_.value.code == 2 and "invalid choice: 'magic'" in capsys.readouterr().err

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

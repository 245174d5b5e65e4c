import pytest

from conftest import write_predictions
from flexguard.errors import ConfigError, DataError, UnknownBackendError
from flexguard.moderators import BACKENDS, get_moderator
from flexguard.moderators.predictions import read_predictions
from flexguard.schema import Item


def test_unknown_backend_suggests_a_name():
    with pytest.raises(UnknownBackendError, match="Did you mean: embedded\\?") as e:
        get_moderator("embeded")
    assert isinstance(e.value, KeyError) and "Available:" in str(e.value)


    assert all(isinstance(v, str) for v in BACKENDS.values())
    import flexguard  # noqa: F401


def test_import_flexguard_does_not_import_heavy_modules():
    import subprocess
    import sys

    heavy = "('torch', 'transformers', 'onnxruntime', 'matplotlib', 'fastapi')"
    code = f"import sys, flexguard; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_registered_fake_backend(fake_backend):
    m = get_moderator("fake", scores=[42.0])
    assert m.score([Item(id="a", prompt="x")])[0].score == 42.0


def test_predictions_backend_scores_and_labels(tmp_path):
    p = write_predictions(tmp_path / "p.jsonl", [
        {"id": "a", "score": 71, "category": "vio"}, {"id": "b", "label": "unsafe"}, {"id": "c", "flagged": False},
        {"id": "d", "parse_error": True, "raw": "garbage"}, {"id": 5, "risk_score": 0}])
    m = get_moderator(f"predictions:{p}")
    res = m.score([Item(id=i, prompt="x") for i in ["a", "b", "c", "d", "5"]])
    assert res[0].score == 71 and res[0].category.value == "VIO"
    assert res[1].flagged is True and res[1].score is None and res[2].flagged is False
    assert res[3].parse_error and res[3].score is None and res[4].score == 0
    with pytest.raises(DataError, match="no prediction for 1 of 1 items.*zzz"):
        m.score([Item(id="zzz", prompt="x")])


@pytest.mark.parametrize("record, match", [
    ({"id": "a", "score": 0.7e3}, "outside 0-100"), ({"id": "a", "score": "high"}, "not a number"),
    ({"score": 3}, "no 'id'"), ({"id": "a", "label": "maybe"}, "is not one of"), ({"id": "a"}, "needs a 'score'"),
])
def test_predictions_errors(tmp_path, record, match):
    with pytest.raises(DataError, match=match):
        read_predictions(write_predictions(tmp_path / "p.jsonl", [record]))


def test_predictions_needs_a_file():
    with pytest.raises(ConfigError, match="needs a file"):
        get_moderator("predictions")


def test_split_by_mode_groups_prompts_and_pairs():
    from flexguard.schema import Item, split_by_mode

    items = [Item(id="a", prompt="p1"), Item(id="b", prompt="p2", response="r2"), Item(id="c", prompt="p3")]
    assert list(split_by_mode(items)) == [([0, 2], ["p1", "p3"], None), ([1], ["p2"], ["r2"])]
    assert list(split_by_mode([])) == []

import json

import pytest

from conftest import FakeModerator
from flexguard.errors import ConfigError
from flexguard.runner import manifest_path, score_items
from flexguard.schema import Item, ModerationResult


def test_writes_as_it_goes_and_resumes_after_interrupt(tmp_path, items):
    out = tmp_path / "preds.jsonl"
    first = FakeModerator(fn=lambda it: 10.0, fail_after=4)  # dies on the 3rd batch of 2
    with pytest.raises(KeyboardInterrupt):
        score_items(first, items, out=out, batch_size=2, progress=False)
    saved = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in saved] == ["t-001", "t-002", "t-003", "t-004"]
    second = FakeModerator(fn=lambda it: 20.0)
    run = score_items(second, items, out=out, batch_size=2, progress=False)
    assert second.calls == [i.id for i in items[4:]]  # nothing scored twice
    assert run.resumed == 4 and [r.score for r in run.results] == [10.0] * 4 + [20.0] * 6
    assert len(out.read_text().splitlines()) == 10
    man = json.loads(manifest_path(out).read_text())
    assert man["model"] == "fake" and man["items"] == 10 and man["hardware"]["cpu_count"] >= 1


def test_torn_last_line_is_dropped_and_rescored(tmp_path, items):
    out = tmp_path / "preds.jsonl"
    score_items(FakeModerator(fn=lambda it: 1.0), items[:3], out=out, progress=False)
    with open(out, "a") as f:
        f.write('{"id": "t-004", "sco')  # crash in the middle of a write
    mod = FakeModerator(fn=lambda it: 2.0)
    run = score_items(mod, items[:5], out=out, progress=False)
    assert mod.calls == ["t-004", "t-005"] and run.resumed == 3
    assert all(json.loads(line) for line in out.read_text().splitlines())


def test_refuses_to_mix_models(tmp_path, items):
    out = tmp_path / "preds.jsonl"
    score_items(FakeModerator(fn=lambda it: 1.0), items[:2], out=out, progress=False)
    man = json.loads(manifest_path(out).read_text())
    man["model"] = "other"
    manifest_path(out).write_text(json.dumps(man))
    with pytest.raises(ConfigError, match="holds results of model 'other'"):
        score_items(FakeModerator(fn=lambda it: 1.0), items, out=out, progress=False)
    run = score_items(FakeModerator(fn=lambda it: 3.0), items, out=out, progress=False, resume=False)
    assert run.resumed == 0 and len(out.read_text().splitlines()) == 10


def test_annotate_and_bad_batch_size(tmp_path, items):
    out = tmp_path / "p.jsonl"
    score_items(FakeModerator(fn=lambda it: 50.0), items[:1], out=out, progress=False,
                annotate=lambda it, r: {"prompt": it.prompt})
    assert json.loads(out.read_text())["prompt"] == items[0].prompt
    with pytest.raises(ConfigError, match="batch_size"):
        score_items(FakeModerator(), items, batch_size=0)


class Fussy(FakeModerator):
    """Raises on an item whose prompt contains 'poison'; returns NaN for 'nan'."""

    def score(self, items):
        if any("poison" in it.prompt for it in items):
            raise TypeError("TextEncodeInput must be Union[...]")
        return [ModerationResult(id=it.id, score=float("nan") if "nan" in it.prompt else 10.0) for it in items]


def test_one_failing_item_never_fails_the_job_and_is_retried_on_resume(tmp_path):
    items = [Item(id=str(k), prompt=p) for k, p in enumerate(["a", "poison", "b", "nan", "c"])]
    out = tmp_path / "p.jsonl"
    run = score_items(Fussy(), items, out=out, batch_size=5, progress=False)
    assert [r.score for r in run.results] == [10.0, None, 10.0, None, 10.0]
    assert "TextEncodeInput" in run.results[1].error and "invalid score nan" in run.results[3].error
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["flagged"] for r in recs] == [False, True, False, True, False]  # errors fail closed
    assert "NaN" not in out.read_text()
    fixed = FakeModerator(fn=lambda it: 5.0)
    score_items(fixed, items, out=out, batch_size=5, progress=False)
    assert fixed.calls == ["1", "3"]  # only the failed items are scored again


def test_a_changed_text_under_an_old_id_is_rescored(tmp_path):
    out = tmp_path / "p.jsonl"
    score_items(FakeModerator(fn=lambda it: 1.0), [Item(id="a", prompt="old"), Item(id="b", prompt="same")],
                out=out, progress=False)
    mod = FakeModerator(fn=lambda it: 2.0)
    run = score_items(mod, [Item(id="a", prompt="new text"), Item(id="b", prompt="same")], out=out, progress=False)
    assert mod.calls == ["a"] and [r.score for r in run.results] == [2.0, 1.0]


def test_out_must_be_a_file_and_settings_must_match(tmp_path, items):
    with pytest.raises(ConfigError, match="is a folder"):
        score_items(FakeModerator(fn=lambda it: 1.0), items, out=tmp_path, progress=False)
    out = tmp_path / "p.jsonl"
    score_items(FakeModerator(fn=lambda it: 1.0), items[:2], out=out, progress=False, settings={"threshold": 50})
    with pytest.raises(ConfigError, match="another configuration"):
        score_items(FakeModerator(fn=lambda it: 1.0), items, out=out, progress=False, settings={"threshold": 60})

import json

import pytest

from conftest import FakeModerator
from flexguard.errors import ConfigError
from flexguard.runner import manifest_path, score_items


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

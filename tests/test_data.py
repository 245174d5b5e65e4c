import json

import pandas as pd
import pytest

from conftest import FIELDS, flexbench_rows, write_csv
from flexguard.data import items_from_rows, load_flexbench, load_public, read_jsonl
from flexguard.errors import DataError
from flexguard.rubric import Tier


def test_load_local_folder_both_subsets(flexbench_dir):
    b = load_flexbench(flexbench_dir, subset="prompt", split="valid")
    assert len(b) == 10 and b.subset == "prompt" and b.items[0].response is None
    assert b.tier_ranks.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 4]
    r = load_flexbench(flexbench_dir, subset="response", split="valid")
    assert r.items[-1].response.startswith("Combine") and r.items[-1].tier is Tier.EXTREME


def test_missing_split_names_the_file(flexbench_dir):
    with pytest.raises(DataError, match="Guard_prompt_test.csv not found.*Guard_prompt_valid.csv"):
        load_flexbench(flexbench_dir, subset="prompt", split="test")


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv"])
def test_any_table_format(tmp_path, fmt):
    rows = flexbench_rows()
    path = tmp_path / f"data.{fmt}"
    if fmt == "jsonl":
        path.write_text("\n".join(json.dumps(r) for r in rows))
    elif fmt == "parquet":
        pd.DataFrame(rows).to_parquet(path)
    else:
        write_csv(path, rows)
    assert len(load_flexbench(path)) == 10


def test_hub_code_path_with_a_local_dataset_folder(flexbench_dir):
    # The same datasets.load_dataset(repo, data_files=...) call as for Tommy-DING/FlexBench.
    b = load_flexbench(f"hub:{flexbench_dir}", subset="response", split="valid")
    assert len(b) == 10 and b.origin.startswith("hub:")


def test_unreachable_hub_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="could not load .*--data"):
        load_flexbench(f"hub:{tmp_path}/no-such-dataset")


def test_missing_column_error(tmp_path):
    path = write_csv(tmp_path / "x.csv", flexbench_rows(), [f for f in FIELDS if f not in ("label_loose", "severity")])
    with pytest.raises(DataError, match=r"x.csv: missing column\(s\) label_strict, label_moderate, label_loose.*"
                                        r"one of: severity \(BENIGN…EXTREME\), severity_level \(0–4\)"):
        load_flexbench(path)
    path = write_csv(tmp_path / "y.csv", flexbench_rows(), [f for f in FIELDS if f != "prompt"])
    with pytest.raises(DataError, match=r"missing column\(s\) prompt"):
        load_flexbench(path)


def test_the_dataset_cards_shapes_load_alike(tmp_path):
    """Tier names (this project), integer severity_level (the card), or only the three labels."""
    rows = flexbench_rows()
    names = load_flexbench(write_csv(tmp_path / "names.csv", rows))
    level_rows = [{**r, "severity_level": Tier(r["severity"]).rank} for r in rows]
    fields = [f for f in FIELDS if f != "severity"] + ["severity_level"]
    levels = load_flexbench(write_csv(tmp_path / "levels.csv", level_rows, fields))
    assert [it.tier for it in levels.items] == [it.tier for it in names.items]
    no_labels = [f for f in FIELDS if not f.startswith("label_")]
    assert [it.tier for it in load_flexbench(write_csv(tmp_path / "n.csv", rows, no_labels)).items] == \
        [it.tier for it in names.items]
    only_labels = load_flexbench(write_csv(tmp_path / "labels.csv", rows, [f for f in FIELDS if f != "severity"]))
    want = [Tier.HIGH if it.tier is Tier.EXTREME else it.tier for it in names.items]  # labels cannot tell these apart
    assert [it.tier for it in only_labels.items] == want
    assert (only_labels.tier_ranks >= 3).tolist() == (names.tier_ranks >= 3).tolist()  # every regime's label is exact


def test_contradicting_or_bad_tier_sources_are_named(tmp_path):
    rows = flexbench_rows()
    rows[2]["label_strict"], rows[2]["label_moderate"] = 0, 1  # moderate flags what strict allows
    with pytest.raises(DataError, match=r"column 'labels'.*contradict each other"):
        load_flexbench(write_csv(tmp_path / "c.csv", rows, [f for f in FIELDS if f != "severity"]))
    bad = [{**r, "severity_level": 7} for r in flexbench_rows()]
    fields = [f for f in FIELDS if f != "severity"] + ["severity_level"]
    with pytest.raises(DataError, match=r"severity_level.*7 is not a tier rank 0-4"):
        load_flexbench(write_csv(tmp_path / "l.csv", bad, fields))


def test_hub_unreachable_fails_fast(monkeypatch):
    import time

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens there
    t0 = time.perf_counter()
    with pytest.raises(DataError, match="Hub is unreachable.*--data"):
        load_flexbench("flexbench")
    assert time.perf_counter() - t0 < 5


def test_labels_disagreeing_with_tiers_name_column_and_rows(tmp_path):
    rows = flexbench_rows()
    rows[3]["label_moderate"] = 1  # LOW item labelled unsafe under moderate
    rows[8]["label_loose"] = 0  # HIGH item labelled safe under loose
    path = write_csv(tmp_path / "bad.csv", rows)
    with pytest.raises(DataError) as e:
        load_flexbench(path)
    msg = str(e.value)
    assert "bad.csv" in msg and "'label_moderate'" in msg and "row 4" in msg and "t-004" in msg
    assert "'label_loose'" in msg and "row 9" in msg


def test_unknown_tier_empty_prompt_duplicate_id(tmp_path):
    rows = flexbench_rows()
    rows[0]["severity"] = "SEVERE"
    rows[1]["prompt"] = "   "
    rows[2]["id"] = rows[3]["id"]
    with pytest.raises(DataError) as e:
        load_flexbench(write_csv(tmp_path / "bad.csv", rows))
    msg = str(e.value)
    assert "'SEVERE'" in msg and "empty prompt" in msg and "duplicate id 't-004'" in msg


def test_response_subset_requires_responses(tmp_path):
    rows = flexbench_rows("prompt")
    with pytest.raises(DataError, match="empty response"):
        load_flexbench(write_csv(tmp_path / "x.csv", rows), subset="response")


def test_public_suite(tmp_path):
    def row(p, r, label):
        return {"instruction": "ignored", "input": f"Human user:\n{p}\n\nAI assistant:\n{r}\n\n", "output": label}
    rows = [row("hi", "None", "unharmful"), row("kill", "None", "harmful")]
    (tmp_path / "0_2_OpenAIModeration.json").write_text(json.dumps(rows))
    (tmp_path / "0_9_safe_rlhf.json").write_text(json.dumps(
        [row("q", "multi\n\nline answer", "Answers: \nRequest: None\nCompletion: None\nResponse: harmful\n")]))
    suites = load_public(tmp_path)
    om, sr = suites["OpenAIModeration"], suites["SafeRLHF"]
    assert om.binary_labels().tolist() == [False, True] and om.items[0].response is None
    assert sr.items[0].response == "multi\n\nline answer" and sr.items[0].harmful
    with pytest.raises(DataError, match="no public suite named nosuch"):
        load_public(tmp_path, ["nosuch"])


def test_items_from_rows_reports_bad_rows():
    rows = [{"prompt": "ok"}, {"prompt": ""}, {"text": 5}, {"response": "x"}, {"prompt": "x" * 50}]
    with pytest.raises(DataError) as e:
        items_from_rows(rows, origin="in.jsonl", max_chars=20)
    msg = str(e.value)
    assert "row 2 ('prompt' is empty)" in msg and "int, not a string" in msg and "no 'prompt'" in msg
    assert "limit of 20 characters" in msg
    ok = items_from_rows([{"text": "hello"}, {"id": "a", "prompt": "p", "response": "r"}], origin="x")
    assert [i.id for i in ok] == ["1", "a"] and ok[1].mode == "response"


def test_read_jsonl_errors(tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_bytes(b'{"a": 1}\n{"a": \n')
    with pytest.raises(DataError, match=r"x.jsonl:2: malformed JSON"):
        list(read_jsonl(p))
    p.write_bytes(b'{"a": "\xff"}\n')
    with pytest.raises(DataError, match="invalid UTF-8"):
        list(read_jsonl(p))
    p.write_bytes(b'[1, 2]\n')
    with pytest.raises(DataError, match="expected a JSON object"):
        list(read_jsonl(p))

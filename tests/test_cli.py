import json
import subprocess
import sys

import pytest

from conftest import ROWS, FakeModerator, write_predictions
from flexguard.cli import main
from flexguard.moderators import register, unregister


@pytest.fixture
def preds(tmp_path):
    # a decent scorer: the gold score with a twist on two items
    recs = [{"id": f"t-{n:03d}", "score": s, "category": c} for n, (_, _, _, c, s) in enumerate(ROWS, 1)]
    recs[3]["score"] = 12  # a LOW item scored BENIGN
    recs[8]["score"] = 58  # a HIGH item scored MODERATE
    return write_predictions(tmp_path / "preds.jsonl", recs)


def test_bench_with_predictions_writes_metrics_report_plots(tmp_path, flexbench_dir, preds, capsys):
    out = tmp_path / "run"
    assert main(["bench", "--data", str(flexbench_dir), "--subset", "prompt", "--predictions", str(preds),
                 "--out", str(out), "-q", "--n-boot", "50"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["regimes"]) == {"strict", "moderate", "loose"}
    for r in m["regimes"].values():
        assert {"precision", "recall", "f1", "fpr", "auroc"} <= set(r)
    assert m["n"] == 10 and {"avg_f1", "worst_f1", "f1_spread", "spearman", "manifest"} <= set(m)
    # strict: 6 of 7 unsafe found, no FP -> F1 12/13; loose: 1 of 3 found -> 0.5
    assert m["regimes"]["strict"]["f1"] == pytest.approx(12 / 13)
    assert m["regimes"]["loose"]["f1"] == pytest.approx(0.8)
    assert m["manifest"]["data"]["subset"] == "prompt" and m["manifest"]["versions"]["python"]
    assert "calibrated" in m and "cross-fitting" in m["calibrated"]["note"]
    report = (out / "report.md").read_text()
    assert "oracle" in report and "![score_by_tier](score_by_tier.png)" in report
    # where it fails: per source and per gold category, in the report and the metrics
    assert "### By source" in report and "### By gold category" in report
    assert m["breakdown"]["source"]["fixture"]["n"] == 10
    assert sum(g["n"] for g in m["breakdown"]["gold category"].values()) == 10
    assert "### By length" in report and sum(g["n"] for g in m["breakdown"]["length"].values()) == 10
    assert (out / "score_by_tier.png").stat().st_size > 1000 and (out / "f1_by_regime.png").exists()
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 10
    # report puts runs side by side
    assert main(["report", str(out), str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[lines.index(next(x for x in lines if x.startswith("| run | model"))):]
    assert len(table) == 4 and table[2].startswith("| run | predictions:") and "| 0.800 |" in table[3]


def test_bench_policy_file_changes_decisions(tmp_path, flexbench_dir, preds):
    pol = tmp_path / "p.yaml"
    pol.write_text("thresholds: {strict: 20, moderate: 40, loose: 55}\n")
    out = tmp_path / "run"
    assert main(["bench", "--data", str(flexbench_dir), "--predictions", str(preds), "--out", str(out), "-q",
                 "--policy", str(pol), "--calibrate", "none", "--n-boot", "0"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["regimes"]["loose"]["f1"] == 1.0 and "calibrated" not in m


def test_calibrate_command_writes_policy(tmp_path, flexbench_dir, preds, capsys):
    out = tmp_path / "policy.yaml"
    assert main(["calibrate", "--predictions", str(preds), "--data", str(flexbench_dir), "--strategy", "max-f1",
                 "--out", str(out)]) == 0
    from flexguard.thresholds import Policy

    p = Policy.load(out)
    assert p.thresholds["loose"] < 58 and "cross_fitted" in p.meta
    assert "held-out F1" in capsys.readouterr().out


def test_report_paired_compares_runs_on_the_same_items(tmp_path, flexbench_dir, preds, capsys):
    runs = {}
    for name, recs in (("base", None), ("fixed", {3: 30, 8: 70}), ("worse", {7: 10, 9: 15})):
        p = preds
        if recs:
            rows = [json.loads(x) for x in preds.read_text().splitlines()]
            for k, v in recs.items():
                rows[k]["score"] = v
            p = write_predictions(tmp_path / f"{name}.jsonl", rows)
        runs[name] = tmp_path / name
        assert main(["bench", "--data", str(flexbench_dir), "--subset", "prompt", "--predictions", str(p),
                     "--out", str(runs[name]), "-q", "--n-boot", "0"]) == 0
    capsys.readouterr()
    assert main(["report", *map(str, runs.values()), "--paired", "--n-boot", "200"]) == 0
    out = capsys.readouterr().out
    assert "Paired bootstrap (200 draws, seed 0) on 10 items of prompt/valid" in out
    paired = out[out.index("Paired bootstrap"):].splitlines()
    fixed = next(x for x in paired if x.startswith("| fixed |")).split("|")
    worse = next(x for x in paired if x.startswith("| worse |")).split("|")
    # fixing the two mistakes lifts the loose F1 (the worst) from 0.8 to 1
    assert fixed[3].strip().startswith("+0.200") and float(fixed[4]) > 0.5
    assert worse[3].strip().startswith("-") and float(worse[4]) < 0.5
    # the runs must have scored the same items
    (runs["worse"] / "predictions.jsonl").write_text(
        "\n".join((runs["worse"] / "predictions.jsonl").read_text().splitlines()[:-1]) + "\n")
    assert main(["report", str(runs["base"]), str(runs["worse"]), "--paired"]) == 2
    assert "no prediction for 1 of the 10 benchmark items" in capsys.readouterr().err
    assert main(["report", str(runs["base"]), "--paired"]) == 2
    assert "at least two runs" in capsys.readouterr().err
    # a run made elsewhere names a benchmark file that is not here: say so, and how to point at it
    (flexbench_dir / "Guard_prompt_valid.csv").rename(tmp_path / "moved.csv")
    assert main(["report", str(runs["base"]), str(runs["fixed"]), "--paired"]) == 2
    assert "pass the file with --data" in capsys.readouterr().err
    assert main(["report", str(runs["base"]), str(runs["fixed"]), "--paired", "--data", str(tmp_path / "moved.csv")]) == 0


@pytest.mark.parametrize("argv, message", [
    (["bench", "--data", "/nonexistent", "--predictions", "x.jsonl", "--out", "o"], "no such predictions file"),
    (["report", "/nonexistent"], "no metrics.json"),
    (["score"], "nothing to score"),
    (["score", "hi", "--threshold", "150", "--model", "fake"], "--threshold must be in 0-100"),
    (["score", "   ", "--model", "fake"], "'prompt' is empty"),
    (["score", "hi", "--model", "nosuch"], "Unknown model backend 'nosuch'"),
    (["calibrate", "--predictions", "p", "--data", "/nonexistent", "--out", "x", "--strategy", "fpr:2"], "no such file"),
    (["score", "hi", "--model", "fake", "--policy", "."], "is a folder; --policy takes a YAML file"),
    (["score", "hi", "--model", "embedded", "--model-opt", "max_chunks=0"], "max_chunks must be a whole number >= 1"),
    (["score", "hi", "--model", "embedded", "--model-opt", "nosuch=1"], "does not take option(s) nosuch"),
    (["score", "hi", "--model", "needs-extra"], "pip install 'flexguard[all]'"),
])
def test_user_errors_exit_2_with_a_message(argv, message, capsys, fake_backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    register("needs-extra", "flexguard_extra_that_is_not_installed:Backend")  # as hf is without torch
    try:
        assert main(argv) == 2
    finally:
        unregister("needs-extra")
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


class Const(FakeModerator):
    """35 for prompts, 75 for prompt+response pairs."""

    def __init__(self, **kw):
        super().__init__(fn=lambda it: 35.0 if it.response is None else 75.0)


@pytest.fixture
def const_backend():
    register("const", Const)
    yield
    unregister("const")


def test_score_single_json_and_human(const_backend, capsys):
    assert main(["score", "hello", "--model", "const", "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["risk_score"] == 35 and rec["tier"] == "LOW"
    assert rec["decisions"] == {"strict": True, "moderate": False, "loose": False}
    assert rec["flagged"] is False and rec["threshold"] == 40 and rec["margin"] == -5
    assert main(["score", "hello", "--response", "sure", "--model", "const", "--strictness", "loose"]) == 0
    out = capsys.readouterr().out
    assert "75.0  (HIGH)" in out and "flagged     yes  (score > 60)" in out


def test_score_batch_resumes(const_backend, tmp_path, capsys):
    src = write_predictions(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}, {"id": "b", "prompt": "y", "response": "z"},
                                                    {"text": "only text"}])
    out = tmp_path / "out.jsonl"
    assert main(["score", "--in", str(src), "--out", str(out), "--model", "const", "-q", "--threshold", "50"]) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a", "b", "3"] and [r["flagged"] for r in recs] == [False, True, False]
    assert recs[1]["decisions"]["loose"] is True and recs[1]["tier"] == "HIGH"
    assert main(["score", "--in", str(src), "--out", str(out), "--model", "const", "-q", "--threshold", "50"]) == 0
    assert "(3 resumed)" in capsys.readouterr().err
    # other decision settings would mix two configurations in one file: refused, with the way out
    assert main(["score", "--in", str(src), "--out", str(out), "--model", "const", "-q"]) == 2
    err = capsys.readouterr().err
    assert "another configuration" in err and "--no-resume" in err and len(out.read_text().splitlines()) == 3


def test_bench_public_suites(const_backend, tmp_path, capsys):
    def row(p, r, label):
        return {"instruction": "", "input": f"Human user:\n{p}\n\nAI assistant:\n{r}\n\n", "output": label}
    d = tmp_path / "pub"
    d.mkdir()
    (d / "0_8_toxic_chat.json").write_text(json.dumps([row("a", "None", "harmful"), row("b", "None", "unharmful")]))
    (d / "0_6_xstest_response_harmful.json").write_text(json.dumps([row("a", "r", "harmful"), row("b", "r", "unharmful")]))
    assert main(["bench", "--suite", "public", "--data", str(d), "--model", "const", "--out", str(tmp_path / "o"), "-q"]) == 0
    m = json.loads((tmp_path / "o" / "public_metrics.json").read_text())
    # const: prompts 35 (< 40: never flagged), pairs 75 (always flagged) under the moderate threshold
    assert m["threshold"] == 40 and m["suites"]["ToxicChat"]["recall"] == 0
    assert m["suites"]["XSTestResponse"] == {**m["suites"]["XSTestResponse"], "recall": 1.0, "fpr": 1.0, "n": 2}


def test_calibrate_names_missing_predictions(tmp_path, flexbench_dir, capsys):
    preds = write_predictions(tmp_path / "p.jsonl", [{"id": "t-001", "score": 3}])
    assert main(["calibrate", "--predictions", str(preds), "--data", str(flexbench_dir), "--out", str(tmp_path / "x.yaml")]) == 2
    assert "no prediction for 9 of 10 items" in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()


def test_score_into_a_closed_pipe_exits_quietly(tmp_path):
    """`flexguard score ... | head -1`: the reader leaving is not a crash (no traceback)."""
    n = 5000  # ~1 MB of JSON lines: far more than a pipe buffers
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"id": str(i), "prompt": f"text {i}"}) + "\n" for i in range(n)))
    preds = write_predictions(tmp_path / "p.jsonl", [{"id": str(i), "score": i % 101} for i in range(n)])
    proc = subprocess.Popen([sys.executable, "-c", "import sys; from flexguard.cli import main; sys.exit(main())",
                             "score", "--in", str(tmp_path / "in.jsonl"), "--json", "--model", f"predictions:{preds}"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert json.loads(first)["id"] == "0" and "Traceback" not in err, err


def test_building_the_cli_parser_imports_no_training_stack():
    """`flexguard score` builds the whole parser; importing scikit-learn there alone costs ~2 s of start-up."""
    code = ("import sys; from flexguard.cli import make_parser; make_parser(); "
            "print(sorted(m for m in ('sklearn', 'scipy', 'torch', 'transformers') if m in sys.modules))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_binary_policy_file_and_folder_out_are_clear_errors(const_backend, tmp_path, capsys):
    (tmp_path / "p.yaml").write_bytes(b"\x00\xff\xfe binary")
    assert main(["score", "hi", "--model", "const", "--policy", str(tmp_path / "p.yaml")]) == 2
    assert "not a text file" in capsys.readouterr().err
    src = write_predictions(tmp_path / "in.jsonl", [{"id": "a", "prompt": "x"}])
    assert main(["score", "--in", str(src), "--out", str(tmp_path), "--model", "const", "-q"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_score_reads_standard_input(const_backend, capsys, monkeypatch):
    import io

    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"hello from a pipe\n")))
    assert main(["score", "-", "--model", "const", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["risk_score"] == 35
    lines = b'{"id": "a", "prompt": "x"}\n{"id": "b", "messages": [{"role": "user", "content": "y"}]}\n'
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(lines)))
    assert main(["score", "--in", "-", "--model", "const", "--json"]) == 0
    recs = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in recs] == ["a", "b"] and recs[1]["extras"]["turns"] == 1


def test_records_say_risk_score_and_why_everywhere(const_backend, tmp_path, capsys):
    """One record shape: --json, batch files and the server use the same names."""
    assert main(["score", "hi", "--model", "const", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    src = write_predictions(tmp_path / "in.jsonl", [{"id": "1", "prompt": "hi"}])
    assert main(["score", "--in", str(src), "--out", str(tmp_path / "o.jsonl"), "--model", "const", "-q"]) == 0
    batch = json.loads((tmp_path / "o.jsonl").read_text())
    assert "score" not in batch and batch["risk_score"] == single["risk_score"] == 35
    for key in ("decision", "reason", "review", "truncated", "in_scope", "language", "error", "parse_error"):
        assert key in single and key in batch


def test_calibrate_per_category_says_why_it_cannot(tmp_path, flexbench_dir, preds, capsys):
    scores_only = write_predictions(tmp_path / "s.jsonl", [{"id": f"t-{n:03d}", "score": 10 * n} for n in range(1, 11)])
    assert main(["calibrate", "--predictions", str(scores_only), "--data", str(flexbench_dir), "--per-category",
                 "--out", str(tmp_path / "p.yaml")]) == 2
    assert "needs a 'category' in the predictions" in capsys.readouterr().err
    assert main(["calibrate", "--predictions", str(preds), "--data", str(flexbench_dir), "--per-category",
                 "--out", str(tmp_path / "p.yaml")]) == 0
    assert "no per-category thresholds: no category has 30 or more items" in capsys.readouterr().out


@pytest.mark.parametrize("command, missing, extra", [("serve", "fastapi", "serve"), ("merge", "peft", "train"),
                                                     ("bench", "torch", "llm")])
def test_a_missing_extra_is_named(command, missing, extra, monkeypatch, capsys):
    import flexguard.cli as cli

    def needs_it(args):
        raise ModuleNotFoundError(f"No module named '{missing}'", name=missing)

    monkeypatch.setattr(cli, f"cmd_{command}", needs_it)
    argv = {"serve": ["serve"], "merge": ["merge", "--base", "a", "--adapter", "b", "--out", "c"],
            "bench": ["bench", "--out", "o"]}[command]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"pip install 'flexguard[{extra}]'" in err and "Traceback" not in err


def test_training_config_that_is_not_a_file(tmp_path, capsys):
    assert main(["train", "sft", "--config", str(tmp_path)]) == 2
    assert "not a YAML file" in capsys.readouterr().err

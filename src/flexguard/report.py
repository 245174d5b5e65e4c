"""Writing run results: ``metrics.json``, ``report.md`` and plots; comparing runs.

matplotlib is imported inside the plotting functions only (it is slow to import).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import DataError
from .metrics import Evaluation, compare_paired
from .rubric import TIER_CUTS, Tier


def _f(x: float | None, nd: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def metrics_dict(ev: Evaluation, manifest: dict[str, Any], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    d = ev.to_dict()
    d["manifest"] = manifest
    if extra:
        d.update(extra)
    return d


def evaluation_markdown(ev: Evaluation, title: str) -> list[str]:
    """The per-regime table of one evaluation, policy thresholds beside the oracle upper bound."""
    lines = [f"### {title}", "",
             "| regime | threshold | precision | recall | F1 (95% CI) | FPR | AUROC | AUPRC | oracle thr. | oracle F1 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r, m in ev.regimes.items():
        o = ev.oracle[r]
        ci = f" [{m.ci['f1'][0]:.3f}, {m.ci['f1'][1]:.3f}]" if "f1" in m.ci else ""
        lines.append(f"| {r} | {_f(m.threshold, 1)} | {_f(m.precision)} | {_f(m.recall)} | {_f(m.f1)}{ci} | {_f(m.fpr)} | "
                     f"{_f(m.auroc)} | {_f(m.auprc)} | {_f(o.threshold, 1)} | {_f(o.f1)} |")
    ci = lambda k: f" [{ev.ci[k][0]:.3f}, {ev.ci[k][1]:.3f}]" if k in ev.ci else ""  # noqa: E731
    lines += ["", f"- average F1 **{_f(ev.avg_f1)}**{ci('avg_f1')}, worst-case F1 **{_f(ev.worst_f1)}**{ci('worst_f1')}, "
              f"F1 spread {_f(ev.f1_spread)}",
              f"- oracle (per-regime best-F1 threshold, an upper bound fitted on these labels): average F1 "
              f"{_f(ev.oracle_avg_f1)}, worst-case F1 {_f(ev.oracle_worst_f1)}",
              f"- Spearman(score, tier) {_f(ev.spearman)}, tier accuracy {_f(ev.tier_accuracy)}, "
              f"parse errors {ev.parse_errors} ({ev.parse_error_rate:.1%}, counted as {ev.missing_policy})"]
    if ev.binary:
        lines.append("- binary moderator: one decision is applied to every regime")
    return lines


def breakdown_markdown(groups: dict[str, dict[str, Any]], title: str) -> list[str]:
    """One row per group of :func:`flexguard.metrics.breakdown`: F1 (positives) and FPR per regime."""
    regimes = [r for r in next(iter(groups.values()), {}) if r != "n"]
    lines = [f"### {title}", "", "| group | n | " + " | ".join(f"F1 {r} (pos.)" for r in regimes) + " | "
             + " | ".join(f"FPR {r}" for r in regimes) + " |", "|---|---|" + "---|" * (2 * len(regimes))]
    for name, g in groups.items():
        f1 = " | ".join(f"{_f(g[r]['f1'])} ({g[r]['positives']})" for r in regimes)
        fpr = " | ".join(_f(g[r]["fpr"]) for r in regimes)
        cell = " ".join(name.split()).replace("|", "\\|")  # a group name from the data must not break the table
        lines.append(f"| {cell} | {g['n']} | {f1} | {fpr} |")
    return lines


def write_report(
    out_dir: str | Path,
    ev: Evaluation,
    manifest: dict[str, Any],
    *,
    title: str,
    scores: np.ndarray | None = None,
    tiers: np.ndarray | None = None,
    extra_sections: Sequence[tuple[str, str, Evaluation, str]] = (),
    extra_metrics: dict[str, Any] | None = None,
    breakdowns: dict[str, dict[str, dict[str, Any]]] | None = None,
) -> dict[str, Any]:
    """Write ``metrics.json``, ``report.md`` and PNG plots into ``out_dir``; return the metrics dict.

    ``extra_sections`` are ``(key, title, evaluation, note)`` shown after the main table, e.g. the
    same predictions with calibrated thresholds. ``breakdowns`` maps a grouping ("source", "gold
    category") to :func:`flexguard.metrics.breakdown`'s result, shown as one table each.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    extra = dict(extra_metrics or {})
    if breakdowns:
        extra["breakdown"] = breakdowns
    for key, _, sub, note in extra_sections:
        extra[key] = {**sub.to_dict(), "note": note}
    md = metrics_dict(ev, manifest, extra)
    (out / "metrics.json").write_text(json.dumps(md, indent=2, default=float))

    lines = [f"# {title}", "", f"- model: `{manifest.get('model')}`  n = {ev.n}",
             f"- data: {manifest.get('data', {})}", ""]
    if extra.get("in_sample_warning"):
        lines += [f"> **Warning: {extra['in_sample_warning']}.**", ""]
    lines += evaluation_markdown(ev, "Policy thresholds")
    for _, sub_title, sub, note in extra_sections:
        lines += ["", *evaluation_markdown(sub, sub_title), "", f"> {note}"]
    lines += ["", "### Flag rate per gold tier", "", "| tier | mean score | " + " | ".join(ev.regimes) + " |",
              "|---|---|" + "---|" * len(ev.regimes)]
    for t in Tier:
        fr = ev.flag_rate[t.value]
        rates = " | ".join(_f(fr[r], 2) for r in ev.regimes)
        lines.append(f"| {t.value} | {_f(ev.mean_score_by_tier[t.value], 1)} | {rates} |")
    for by, groups in (breakdowns or {}).items():
        lines += ["", *breakdown_markdown(groups, f"By {by}")]
    if scores is not None and tiers is not None:
        plots = plot_run(out, scores, tiers, ev)
        lines += ["", *[f"![{p.stem}]({p.name})" for p in plots]]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    return md


def plot_run(out: Path, scores: np.ndarray, tiers: np.ndarray, ev: Evaluation) -> list[Path]:
    """Score distribution per gold tier, and F1 per regime (policy vs oracle)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    data = [scores[(tiers == t.rank) & ~np.isnan(scores)] for t in Tier]
    ax.boxplot([d if len(d) else [np.nan] for d in data], showfliers=False)
    ax.set_xticks(range(1, 6), [t.value for t in Tier])
    rng = np.random.default_rng(0)
    for k, d in enumerate(data, 1):
        ax.scatter(k + rng.uniform(-0.15, 0.15, len(d)), d, s=4, alpha=0.35)
    for cut in TIER_CUTS:
        ax.axhline(cut, color="grey", lw=0.5, ls=":")
    ax.set_ylim(-2, 102); ax.set_ylabel("risk score"); ax.set_title("Score by gold tier")
    fig.tight_layout(); p = out / "score_by_tier.png"; fig.savefig(p, dpi=110); plt.close(fig); paths.append(p)

    fig, ax = plt.subplots(figsize=(5, 3.2))
    names = list(ev.regimes)
    x = np.arange(len(names))
    ax.bar(x - 0.2, [ev.regimes[r].f1 for r in names], 0.4, label="policy thresholds")
    ax.bar(x + 0.2, [ev.oracle[r].f1 for r in names], 0.4, label="oracle (upper bound)", alpha=0.6)
    ax.set_xticks(x, names); ax.set_ylim(0, 1); ax.set_ylabel("F1"); ax.legend(loc="lower left", fontsize=8)
    ax.set_title("F1 per regime")
    fig.tight_layout(); p = out / "f1_by_regime.png"; fig.savefig(p, dpi=110); plt.close(fig); paths.append(p)
    return paths


def compare_runs(run_dirs: Sequence[str | Path]) -> str:
    """One Markdown table with a row per run: the FlexBench results table of a paper."""
    rows, regimes = [], None
    for d in run_dirs:
        m = _run_metrics(Path(d))
        regimes = regimes or list(m["regimes"])
        rows.append((Path(d).name, m))
    head = "| run | model | subset | n | " + " | ".join(f"F1 {r}" for r in regimes) + " | avg F1 | worst F1 | spread | Spearman |"
    lines = [head, "|" + "---|" * (8 + len(regimes))]
    for name, m in rows:
        man = m.get("manifest", {})
        subset = man.get("data", {}).get("subset", man.get("mode", ""))
        f1 = [_f(m["regimes"].get(r, {}).get("f1")) for r in regimes]
        lines.append(f"| {name} | {man.get('model', '?')} | {subset} | {m['n']} | " + " | ".join(f1)
                     + f" | {_f(m['avg_f1'])} | {_f(m['worst_f1'])} | {_f(m['f1_spread'])} | {_f(m.get('spearman'))} |")
    return "\n".join(lines) + "\n"


def _run_metrics(run_dir: Path) -> dict[str, Any]:
    p = run_dir / "metrics.json"
    if not p.exists():
        raise DataError(f"{run_dir}: no metrics.json (is it a 'flexguard bench' output folder?)")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{p}: malformed JSON: {e}") from None


def paired_markdown(run_dirs: Sequence[str | Path], *, data: str | Path | None = None, n_boot: int = 2000,
                    seed: int = 0) -> str:
    """Each run after the first against the first, by a paired bootstrap on the same items.

    Two runs' separate intervals overlap even when one model is reliably better, because both
    move with the same hard items; resampling the items once for both (:func:`compare_paired`)
    says whether a difference is real. The gold tiers are re-read from the benchmark file
    each run's manifest names (``data`` overrides it, e.g. when the run was made elsewhere);
    the first run's thresholds judge every run. Every run must have scored the same subset
    and split completely.
    """
    from .data import load_flexbench
    from .moderators.predictions import read_predictions
    from .thresholds import Policy

    if len(run_dirs) < 2:
        raise DataError("a paired comparison needs at least two runs: a baseline and a run to compare with it")
    runs = [(Path(d), _run_metrics(Path(d))) for d in run_dirs]
    first = runs[0][1].get("manifest", {})
    where = first.get("data", {})
    for d, m in runs[1:]:
        other = m.get("manifest", {}).get("data", {})
        if (other.get("subset"), other.get("split")) != (where.get("subset"), where.get("split")):
            raise DataError(f"{d} scored {other.get('subset')}/{other.get('split')}, {runs[0][0]} scored "
                            f"{where.get('subset')}/{where.get('split')}: a paired comparison needs the same items")
    source = data or where.get("origin")
    if not source:
        raise DataError(f"{runs[0][0]}/metrics.json names no benchmark file; pass it with --data")
    try:
        bench = load_flexbench(source, subset=where.get("subset", "prompt"), split=where.get("split", "valid"))
    except DataError as e:
        if data:
            raise
        raise DataError(f"{e} (the benchmark {runs[0][0]}/metrics.json names; pass the file with --data)") from None
    policy = Policy.from_dict(first["thresholds"]) if "thresholds" in first else Policy()
    ids = [it.id for it in bench.items]
    scores = []
    for d, _ in runs:
        preds = read_predictions(d / "predictions.jsonl")
        if lost := [i for i in ids if i not in preds]:
            raise DataError(f"{d}: no prediction for {len(lost)} of the {len(ids)} benchmark items (e.g. {lost[0]!r}); "
                            "an interrupted run resumes with the same 'flexguard bench' command")
        scores.append([preds[i].score for i in ids])
    lines = [f"Paired bootstrap ({n_boot} draws, seed {seed}) on {len(ids)} items of {bench.subset}/{bench.split}: "
             f"each run minus `{runs[0][0].name}` ({first.get('model', '?')}); [95% CI], P = share of draws where "
             "the run is ahead.", "",
             "| run | model | Δ worst F1 [95% CI] | P | Δ avg F1 [95% CI] | Δ Spearman [95% CI] | P |",
             "|---|---|---|---|---|---|---|"]
    for (d, m), s in zip(runs[1:], scores[1:]):
        c = compare_paired(scores[0], s, bench.tier_ranks, policy=policy, mode=bench.subset, n_boot=n_boot,
                           seed=seed)
        cell = {k: f"{c.diff[k]:+.3f} [{c.ci[k][0]:+.3f}, {c.ci[k][1]:+.3f}]" for k in c.diff}
        lines.append(f"| {d.name} | {m.get('manifest', {}).get('model', '?')} | {cell['worst_f1']} | "
                     f"{c.p_better['worst_f1']:.2f} | {cell['avg_f1']} | {cell['spearman']} | {c.p_better['spearman']:.2f} |")
    return "\n".join(lines) + "\n"

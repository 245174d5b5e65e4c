import numpy as np
import pytest

from flexguard.errors import DataError
from flexguard.metrics import (
    best_f1_threshold,
    binary_metrics,
    breakdown,
    compare_paired,
    evaluate,
    item_groups,
    length_group,
    threshold_sweep,
)
from flexguard.rubric import Category
from flexguard.schema import Item
from flexguard.thresholds import Policy

TIERS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
#                 B  B  B  L  L  M  M  H  H  E
SCORES = np.array([5, 25, 10, 30, 15, 45, 35, 70, 55, 90], float)


def test_per_regime_metrics_by_hand():
    ev = evaluate(SCORES, TIERS, n_boot=0)
    s = ev.regimes["strict"]  # gold: tier>=1 (7 pos). pred: >20 -> idx 1,3,5,6,7,8,9
    assert (s.tp, s.fp, s.fn, s.tn) == (6, 1, 1, 2)
    assert s.precision == pytest.approx(6 / 7) and s.recall == pytest.approx(6 / 7) and s.f1 == pytest.approx(6 / 7)
    assert s.fpr == pytest.approx(1 / 3) and s.accuracy == pytest.approx(0.8)
    m = ev.regimes["moderate"]  # gold: idx 5..9 (5 pos). pred >40: idx 5,7,8,9
    assert (m.tp, m.fp, m.fn, m.tn) == (4, 0, 1, 5) and m.f1 == pytest.approx(8 / 9)
    lo = ev.regimes["loose"]  # gold: idx 7,8,9. pred >60: idx 7,9
    assert (lo.tp, lo.fp, lo.fn) == (2, 0, 1) and lo.f1 == pytest.approx(0.8)
    f1s = [6 / 7, 8 / 9, 0.8]
    assert ev.avg_f1 == pytest.approx(np.mean(f1s)) and ev.worst_f1 == pytest.approx(0.8)
    assert ev.f1_spread == pytest.approx(8 / 9 - 0.8)
    assert ev.mean_score_by_tier["BENIGN"] == pytest.approx(40 / 3)
    assert ev.flag_rate["LOW"] == {"strict": 0.5, "moderate": 0.0, "loose": 0.0}
    assert ev.tier_accuracy == pytest.approx(0.6)  # 5,10 B; 30 L; 45 M; 70 H; 90 E ok
    assert 0.8 < ev.spearman <= 1


def test_auroc_and_auprc_match_sklearn_with_ties():
    from sklearn.metrics import average_precision_score, roc_auc_score

    rng = np.random.default_rng(5)
    tiers = rng.integers(0, 5, 3000)
    scores = np.round(np.clip(tiers * 20 + rng.normal(0, 25, 3000), 0, 100) / 5) * 5  # many ties
    ev = evaluate(scores, tiers, n_boot=0)
    for r, k in (("strict", 1), ("moderate", 2), ("loose", 3)):
        assert ev.regimes[r].auroc == pytest.approx(roc_auc_score(tiers >= k, scores), abs=1e-12)
        assert ev.regimes[r].auprc == pytest.approx(average_precision_score(tiers >= k, scores), abs=1e-12)


def test_oracle_is_an_upper_bound():
    rng = np.random.default_rng(1)
    tiers = rng.integers(0, 5, 500)
    scores = np.clip(tiers * 20 + rng.normal(0, 15, 500), 0, 100)
    ev = evaluate(scores, tiers, n_boot=0)
    for r in ev.regimes:
        assert ev.oracle[r].f1 >= ev.regimes[r].f1 - 1e-12


def test_binary_moderator_gets_one_decision_for_every_regime():
    flagged = TIERS >= 2  # a perfect "moderate" binary classifier
    ev = evaluate([None] * 10, TIERS, flagged=flagged, n_boot=0)
    assert ev.binary and ev.regimes["moderate"].f1 == 1.0
    assert ev.regimes["strict"].recall == pytest.approx(5 / 7) and ev.regimes["loose"].precision == pytest.approx(3 / 5)
    assert ev.f1_spread > 0.1  # cross-strictness inconsistency is exposed


def test_parse_errors_are_counted_and_follow_on_missing():
    scores = SCORES.astype(object)
    scores[9] = None  # the EXTREME item could not be parsed
    unsafe = evaluate(scores, TIERS, n_boot=0)  # default: the policy's on_parse_error (flag): never silently safe
    safe = evaluate(scores, TIERS, n_boot=0, on_missing="safe")
    assert safe.parse_errors == unsafe.parse_errors == 1 and unsafe.parse_error_rate == pytest.approx(0.1)
    assert unsafe.missing_policy == "unsafe" and safe.missing_policy == "safe"
    assert safe.regimes["loose"].tp == 1 and unsafe.regimes["loose"].tp == 2
    allow = evaluate(scores, TIERS, n_boot=0, policy=Policy(on_parse_error="allow"))  # an explicit choice
    assert allow.missing_policy == "safe" and allow.regimes["loose"].tp == 1


def test_bootstrap_interval_brackets_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    tiers = rng.integers(0, 5, 400)
    scores = np.clip(tiers * 20 + rng.normal(0, 20, 400), 0, 100)
    a = evaluate(scores, tiers, n_boot=400, seed=3)
    b = evaluate(scores, tiers, n_boot=400, seed=3)
    lo, hi = a.regimes["loose"].ci["f1"]
    assert lo < a.regimes["loose"].f1 < hi and hi - lo < 0.3
    assert a.ci == b.ci and a.ci["worst_f1"][0] <= a.worst_f1 <= a.ci["worst_f1"][1]


def test_sweep_and_best_threshold():
    t, tp, fp = threshold_sweep(np.array([10, 20, 20, 30.0]), np.array([0, 1, 0, 1], bool))
    assert t.tolist() == [100, 25, 15, 9.5] and tp.tolist() == [0, 1, 2, 2] and fp.tolist() == [0, 0, 1, 2]
    thr, f1 = best_f1_threshold(np.array([10, 20, 20, 30.0]), np.array([0, 1, 0, 1], bool))
    assert (thr, f1) == (15.0, pytest.approx(0.8))


def test_unclipped_sweep_for_logits():
    logits, labels = np.array([-3.0, -1.0, 2.0, 150.0]), np.array([0, 0, 1, 1], bool)
    t, tp, _ = threshold_sweep(logits, labels, clip=False)
    assert t.tolist() == [151, 76, 0.5, -2, -3.5] and tp.tolist() == [0, 1, 2, 2, 2]
    assert best_f1_threshold(logits, labels, clip=False) == (0.5, 1.0)
    assert best_f1_threshold(logits, labels)[0] == 0.5 and threshold_sweep(logits, labels)[0][-1] == 0


def test_custom_policy_regimes():
    p = Policy(thresholds={"kids": 10, "adults": 70}, regimes={"kids": "LOW", "adults": "EXTREME"}, default_regime="kids")
    ev = evaluate(SCORES, TIERS, policy=p, n_boot=0)
    assert list(ev.regimes) == ["kids", "adults"] and ev.regimes["adults"].tp == 1


def test_bad_inputs():
    with pytest.raises(DataError, match="3 scores but 2"):
        evaluate([1, 2, 3], [0, 1])
    with pytest.raises(DataError, match="ranks 0-4"):
        evaluate([1, 2], [0, 7])
    with pytest.raises(DataError, match="on_missing"):
        evaluate([1, 2], [0, 1], on_missing="maybe")


def test_binary_metrics_single_class_has_no_auroc():
    m = binary_metrics(np.zeros(3, bool), np.zeros(3, bool), np.arange(3.0))
    assert m.auroc is None and m.f1 == 0.0


def test_summary_is_the_flat_headline_row():
    ev = evaluate(SCORES, TIERS, n_boot=50, seed=1)
    row = ev.summary(4)
    assert list(row) == ["f1_strict", "f1_moderate", "f1_loose", "avg_f1", "worst_f1", "worst_f1_ci", "f1_spread", "spearman"]
    assert row["worst_f1"] == round(ev.worst_f1, 4) and row["worst_f1_ci"] == ev.ci["worst_f1"]
    assert ev.summary()["avg_f1"] == ev.avg_f1  # unrounded by default
    binary = evaluate([None] * len(TIERS), TIERS, flagged=np.array(TIERS) >= 2, n_boot=0).summary(4)
    assert binary["spearman"] is None and "worst_f1_ci" not in binary


def test_breakdown_gives_each_group_its_own_rates():
    groups = ["a"] * 6 + ["b"] * 3 + [None]
    out = breakdown(SCORES, TIERS, groups)
    assert list(out) == ["a", "b"]  # largest group first; the None item is left out
    a = out["a"]  # tiers B B B L L M, scores 5 25 10 30 15 45
    assert a["n"] == 6 and a["loose"] == {"positives": 0, "f1": None, "recall": None, "fpr": 0.0}
    # strict (>= LOW): positives 30, 15, 45; flagged 25, 30, 45 -> tp 2, fp 1, fn 1
    assert a["strict"]["f1"] == pytest.approx(2 / 3) and a["strict"]["fpr"] == pytest.approx(1 / 3)
    b = out["b"]  # tiers M H H, scores 35 70 55: every item is positive under strict, so no FPR
    assert b["strict"]["fpr"] is None and b["loose"]["recall"] == 0.5
    # the same numbers as evaluating the group alone
    assert b["moderate"]["f1"] == pytest.approx(evaluate(SCORES[6:9], TIERS[6:9], n_boot=0).regimes["moderate"].f1)


def test_breakdown_follows_binary_decisions_and_missing_policy():
    scores = [None, None, 80.0]
    out = breakdown(scores, [4, 0, 4], ["g"] * 3, flagged=[True, None, None])
    # item 1 decided by its flag, item 2 missing -> counted unsafe (fail closed) -> a false positive
    assert out["g"]["loose"]["recall"] == 1.0 and out["g"]["loose"]["fpr"] == 1.0
    assert breakdown(scores, [4, 0, 4], ["g"] * 3, flagged=[True, None, None], on_missing="safe")["g"]["loose"]["fpr"] == 0.0
    with pytest.raises(DataError, match="groups"):
        breakdown(scores, [4, 0, 4], ["g"])


def test_length_groups_cover_every_length_once_and_count_the_response():
    edges = {99: "< 100 chars", 100: "100–299 chars", 299: "100–299 chars", 300: "300–999 chars",
             999: "300–999 chars", 1000: "1,000+ chars"}
    assert {n: length_group("x" * n) for n in edges} == edges
    assert length_group("x" * 50, "y" * 60) == "100–299 chars"  # a response item is as long as its pair
    items = [Item(id="a", prompt="hi", source="s", category=Category.SAFE), Item(id="b", prompt="x" * 400)]
    assert item_groups(items) == {"source": ["s", None], "gold category": ["SAFE", None],
                                  "length": ["< 100 chars", "300–999 chars"]}


def _noisy_scores(noise: float, seed: int, n: int = 400) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    tiers = np.random.default_rng(0).integers(0, 5, n)
    return np.clip(tiers * 20 + 10 + rng.normal(0, noise, n), 0, 100), tiers


def test_paired_difference_is_the_difference_of_the_two_evaluations():
    a, tiers = _noisy_scores(30, 1)
    b, _ = _noisy_scores(12, 2)
    c = compare_paired(a, b, tiers, n_boot=500)
    ea, eb = evaluate(a, tiers, n_boot=0), evaluate(b, tiers, n_boot=0)
    assert c.diff["worst_f1"] == pytest.approx(eb.worst_f1 - ea.worst_f1, abs=1e-4)
    assert c.diff["f1_loose"] == pytest.approx(eb.regimes["loose"].f1 - ea.regimes["loose"].f1, abs=1e-4)
    assert c.diff["spearman"] == pytest.approx(eb.spearman - ea.spearman, abs=1e-4)
    # much less noise: better beyond doubt, and the interval brackets the estimate
    assert c.ci["worst_f1"][0] > 0 and c.ci["spearman"][0] > 0 and c.p_better["spearman"] == 1.0
    assert c.ci["worst_f1"][0] <= c.diff["worst_f1"] <= c.ci["worst_f1"][1]


def test_paired_comparison_is_antisymmetric_and_seeded():
    a, tiers = _noisy_scores(20, 1)
    b, _ = _noisy_scores(20, 2)
    ab, ba = compare_paired(a, b, tiers, n_boot=300, seed=3), compare_paired(b, a, tiers, n_boot=300, seed=3)
    for k in ab.diff:
        assert ab.diff[k] == pytest.approx(-ba.diff[k])
        assert ab.ci[k] == pytest.approx([-ba.ci[k][1], -ba.ci[k][0]], abs=1e-4)
    assert compare_paired(a, b, tiers, n_boot=300, seed=3) == ab
    # equally noisy: the interval of the difference straddles 0
    assert ab.ci["worst_f1"][0] < 0 < ab.ci["worst_f1"][1]


def test_paired_interval_is_narrower_than_the_separate_intervals():
    """What the two share cancels: a small shift of every score is resolved by the pairing."""
    a, tiers = _noisy_scores(20, 1)
    b = np.where(tiers >= 3, np.minimum(a + 4, 100), a)  # same ranking noise, riskier items nudged up
    c = compare_paired(a, b, tiers, n_boot=1000)
    sep = evaluate(a, tiers, n_boot=1000).ci["worst_f1"]
    assert c.ci["spearman"][1] - c.ci["spearman"][0] < 0.05
    assert c.ci["worst_f1"][1] - c.ci["worst_f1"][0] < (sep[1] - sep[0]) / 2


def test_paired_comparison_counts_missing_scores_as_the_policy_says():
    a, tiers = _noisy_scores(10, 1, n=50)
    b = a.astype(object)
    b[tiers == 0] = None  # every BENIGN item unscored
    flagged = compare_paired(a, b, tiers, n_boot=10)  # fail closed: each one a false positive
    assert flagged.diff["f1_strict"] < 0
    lenient = compare_paired(a, b, tiers, on_missing="safe", n_boot=10)
    assert lenient.diff["f1_strict"] >= 0


@pytest.mark.parametrize("kwargs, msg", [
    ({"scores_b": [1.0, 2.0]}, "same items"),
    ({"n_boot": 0}, "n_boot"),
    ({"on_missing": "maybe"}, "on_missing"),
    ({"policy": Policy(categories={"VIO": {"loose": 50}})}, "per-category"),
])
def test_paired_comparison_bad_inputs(kwargs, msg):
    args = {"scores_a": SCORES, "scores_b": SCORES, "tiers": TIERS, **kwargs}
    with pytest.raises(DataError, match=msg):
        compare_paired(**args)

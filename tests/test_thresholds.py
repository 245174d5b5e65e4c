import numpy as np
import pytest
import yaml

from flexguard.errors import ConfigError
from flexguard.rubric import Category, Tier
from flexguard.thresholds import Policy


def test_default_policy_decides_every_regime():
    p = Policy()
    assert p.decide(20) == {"strict": False, "moderate": False, "loose": False}
    assert p.decide(20.5) == {"strict": True, "moderate": False, "loose": False}
    assert p.decide(61) == {"strict": True, "moderate": True, "loose": True}
    assert p.regime_names == ["strict", "moderate", "loose"]


def test_vectorised_decisions_and_margins():
    p = Policy()
    d = p.decide_many(np.array([10.0, 45.0, np.nan, 59.0]))
    assert d.flags["moderate"].tolist() == [False, True, False, True]
    assert d.margins["strict"][0] == -10
    # nearest threshold: 10 -> 20 (-10), 45 -> 40 (+5), NaN, 59 -> 60 (-1)
    m = d.margin
    assert m[0] == -10 and m[1] == 5 and np.isnan(m[2]) and m[3] == -1


def test_category_and_mode_overrides_most_specific_wins():
    p = Policy(categories={"VIO": {"loose": 50}},
               modes={"response": {"thresholds": {"strict": 30}, "categories": {"VIO": {"loose": 45}}}})
    assert p.resolve(category="VIO") == {"strict": 20, "moderate": 40, "loose": 50}
    assert p.resolve(mode="response") == {"strict": 30, "moderate": 40, "loose": 60}
    assert p.resolve(category=Category.VIO, mode="response") == {"strict": 30, "moderate": 40, "loose": 45}
    d = p.decide_many([55, 55, 55], categories=["VIO", "DIS", None], modes="prompt")
    assert d.flags["loose"].tolist() == [True, False, False]


@pytest.mark.parametrize("kwargs, match", [
    ({"thresholds": {"strict": 50, "moderate": 40, "loose": 60}}, "must not decrease"),
    ({"thresholds": {"strict": 20, "moderate": 40, "loose": 160}}, "0-100"),
    ({"thresholds": {"strict": 20, "moderate": 40}}, "no threshold for regime"),
    ({"categories": {"VIO": {"lenient": 3}}}, "unknown regime"),
    ({"categories": {"WEAPONS": {"loose": 3}}}, "unknown category"),
    ({"categories": {"VIO": {"strict": 70}}}, "must not decrease.*VIO"),
    ({"modes": {"chat": {}}}, "unknown mode"),
    ({"default_regime": "medium"}, "default_regime"),
])
def test_validation(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        Policy(**kwargs)


def test_yaml_round_trip(tmp_path):
    p = Policy(thresholds={"strict": 18, "moderate": 37.5, "loose": 66}, categories={"SEX": {"strict": 10}},
               modes={"response": {"thresholds": {"loose": 70}}}, name="mine")
    path = tmp_path / "p.yaml"
    p.save(path)
    q = Policy.load(path)
    assert q.to_dict() == p.to_dict()
    assert q.resolve(category="SEX", mode="response") == {"strict": 10, "moderate": 37.5, "loose": 70}


def test_load_errors(tmp_path):
    with pytest.raises(ConfigError, match="no such policy file"):
        Policy.load(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("thresholds: [1, 2\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        Policy.load(bad)
    bad.write_text("thresholds: {strict: 20, moderate: 40, loose: 60}\nextra: 1\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: unknown policy key\(s\) extra"):
        Policy.load(bad)


def test_custom_regimes():
    p = Policy.from_dict({"regimes": {"kids": "LOW", "adults": "HIGH"}, "thresholds": {"kids": 15, "adults": 65}})
    assert p.regimes["adults"] is Tier.HIGH and p.decide(30) == {"kids": True, "adults": False}
    assert p.default_regime == "kids"
    with pytest.raises(ConfigError, match="custom regimes need explicit"):
        Policy.from_dict({"regimes": {"kids": "LOW"}})


def test_flag_precedence():
    p = Policy()
    assert p.flag(45) == (True, 40.0)
    assert p.flag(45, strictness="loose") == (False, 60.0)
    assert p.flag(45, threshold=50, strictness="strict") == (False, 50.0)
    assert p.flag(None) == (False, 40.0)
    with pytest.raises(ConfigError, match="unknown strictness 'lax'"):
        p.flag(45, strictness="lax")
    with pytest.raises(ConfigError, match="threshold must be in 0-100"):
        p.flag(45, threshold=101)


def test_verdict_for_scores_and_labels():
    p = Policy()
    v = p.verdict(45.0, strictness="loose")
    assert (v.flagged, v.threshold, v.margin) == (False, 60.0, 5.0)
    assert v.decisions == {"strict": True, "moderate": True, "loose": False} and v.margins["loose"] == -15
    v = p.verdict(None, label=True)
    assert v.flagged and v.threshold is None and set(v.decisions.values()) == {True} and v.margin is None
    v = p.verdict(None)  # nothing to decide on: a parse error, and the policy fails closed by default
    assert v.flagged and v.decision == "flag" and v.reason == "parse_error" and v.margin is None and v.threshold == 40.0


@pytest.mark.parametrize("rule, flagged", [("flag", True), ("review", True), ("allow", False)])
def test_unjudged_items_follow_the_policy_and_default_to_flag(rule, flagged):
    p = Policy(on_parse_error=rule, on_error=rule)
    for why in ("parse_error", "error"):
        v = p.verdict(None, unjudged=why)
        assert (v.flagged, v.decision, v.reason) == (flagged, rule, why)
        assert set(v.decisions.values()) == {flagged}
    assert Policy().verdict(None, unjudged="error").decision == "flag"


def test_out_of_scope_and_truncated_never_lower_a_flag():
    p = Policy()  # defaults: review both
    v = p.verdict(10.0, out_of_scope=True)
    assert (v.flagged, v.decision, v.reason) == (True, "review", "out_of_scope")
    v = p.verdict(90.0, out_of_scope=True, truncated=True)
    assert (v.decision, v.reason) == ("flag", "score")  # the score already flags it
    assert Policy(on_out_of_scope="score").verdict(10.0, out_of_scope=True).decision == "allow"
    v = Policy(on_truncated="flag").verdict(10.0, truncated=True)
    assert (v.decision, v.reason) == ("flag", "truncated")


def test_policy_failure_rules_round_trip_and_bad_values(tmp_path):
    p = Policy(on_parse_error="review", on_out_of_scope="score")
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(p.to_dict()))
    q = Policy.load(tmp_path / "p.yaml")
    assert (q.on_parse_error, q.on_out_of_scope, q.on_error) == ("review", "score", "flag")
    with pytest.raises(ConfigError, match="on_parse_error must be one of flag, review, allow"):
        Policy(on_parse_error="ignore")
    with pytest.raises(ConfigError, match="on_out_of_scope must be one of"):
        Policy.from_dict({"on_out_of_scope": "allow"})


def test_yes_no_values_are_not_thresholds(tmp_path):
    """YAML reads `strict: yes` as True; it must not quietly become the threshold 1.0."""
    (tmp_path / "p.yaml").write_text("thresholds: {strict: yes, moderate: 40, loose: 60}\n")
    with pytest.raises(ConfigError, match="yes/no"):
        Policy.load(tmp_path / "p.yaml")

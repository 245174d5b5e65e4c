import numpy as np
import pytest

from flexguard.errors import ConfigError, DataError
from flexguard.rubric import Category, Regime, Tier, check_score, score_ranks, score_to_tier


@pytest.mark.parametrize("score, tier", [(0, "BENIGN"), (20, "BENIGN"), (20.01, "LOW"), (40, "LOW"), (41, "MODERATE"),
                                         (60, "MODERATE"), (61, "HIGH"), (80, "HIGH"), (80.5, "EXTREME"), (100, "EXTREME")])
def test_score_to_tier_band_edges(score, tier):
    assert score_to_tier(score) is Tier(tier)


def test_default_thresholds_match_tier_bands():
    # unsafe when score > threshold  <=>  score's tier >= regime's minimum tier
    scores = np.linspace(0, 100, 1001)
    for regime in Regime:
        assert np.array_equal(scores > regime.default_threshold, score_ranks(scores) >= regime.min_tier.rank)
    assert [r.default_threshold for r in Regime] == [20, 40, 60]


def test_score_ranks_keeps_nan_missing():
    assert score_ranks(np.array([np.nan, 50.0])).tolist() == [-1, 2]


def test_parse_errors_name_the_value():
    with pytest.raises(DataError, match="'SEVERE'"):
        Tier.parse("SEVERE")
    with pytest.raises(DataError, match="'XYZ'"):
        Category.parse("XYZ")
    assert Tier.parse(" high ") is Tier.HIGH


@pytest.mark.parametrize("bad", [-1, 100.5, "abc", None])
def test_check_score_rejects(bad):
    with pytest.raises(ConfigError):
        check_score(bad)

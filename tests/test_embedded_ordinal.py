import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from flexguard.embedded.ordinal import cumulative_to_score, monotone
from flexguard.rubric import score_ranks

probs = st.lists(st.floats(0, 1), min_size=4, max_size=4)


@settings(max_examples=300, deadline=None)
@given(probs)
def test_score_band_is_exactly_the_count_of_confident_cuts(p):
    m = monotone(np.array([p]))[0]
    s = cumulative_to_score(np.array([p]))[0]
    assert 0 <= s <= 100
    assert score_ranks(np.array([s]))[0] == int((m > 0.5).sum())


def test_typical_and_extreme_values():
    p = np.array([[0, 0, 0, 0], [1, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1.0]])
    assert cumulative_to_score(p).tolist() == [0, 30, 50, 70, 100]


def test_score_increases_with_each_probability():
    base = np.array([0.7, 0.3, 0.1, 0.05])
    s0 = cumulative_to_score(base[None])[0]
    for k in range(4):
        up = base.copy()
        up[k] = min(1.0, up[k] + 0.1) if k == 0 else min(up[k - 1], up[k] + 0.1)
        assert cumulative_to_score(up[None])[0] >= s0


def test_score_to_cumulative_inverts_cumulative_to_score():
    from flexguard.embedded.ordinal import score_to_cumulative

    s = np.linspace(0, 100, 401)
    p = score_to_cumulative(s)
    assert np.allclose(cumulative_to_score(p), s) and np.all(np.diff(p, axis=1) <= 0)


def test_rescale_is_monotone_and_maps_knots_to_the_rubric_cuts():
    from flexguard.embedded.ordinal import rescale

    knots = np.array([10.0, 35.0, 50.0, 90.0])
    assert rescale(knots, knots).tolist() == [20, 40, 60, 80]
    assert rescale(np.array([0.0, 100.0]), knots).tolist() == [0, 100]
    s = np.linspace(0, 100, 201)
    assert np.all(np.diff(rescale(s, knots)) > 0) and np.allclose(rescale(s, np.array([20.0, 40, 60, 80])), s)

"""The OpenAI category crosswalk claims only what a flexguard category supports, both ways."""

import pytest

from flexguard.crosswalk import FROM_OPENAI, OPENAI_CATEGORIES, TO_OPENAI, openai_category_scores
from flexguard.rubric import Category


@pytest.mark.parametrize("category, expected", [
    (Category.SEX, {"sexual"}),            # adult content is not evidence of minors
    (Category.VIO, {"violence"}),          # a bomb question is not self-harm
    (Category.ILG, {"illicit"}), (Category.INF, {"illicit"}), (Category.DIS, {"harassment", "hate"}),
    (Category.MIS, set()), (Category.JAIL, set()), (Category.SAFE, set()),
])
def test_to_openai(category, expected):
    assert set(TO_OPENAI[category]) == expected
    scores = openai_category_scores(90.0, None, category)
    assert {k for k, v in scores.items() if v > 0} == expected


def test_never_claimed_from_a_category_alone():
    claimed = {c for cats in TO_OPENAI.values() for c in cats}
    assert not claimed & {"sexual/minors", "self-harm", "self-harm/intent", "self-harm/instructions"}


@pytest.mark.parametrize("openai_category, expected", [
    ("sexual", Category.SEX), ("sexual/minors", Category.SEX), ("violence", Category.VIO),
    ("self-harm/intent", Category.VIO), ("illicit", Category.ILG), ("illicit/violent", Category.VIO),
    ("hate", Category.DIS), ("harassment", Category.DIS), ("harassment/threatening", Category.VIO),
])
def test_from_openai(openai_category, expected):
    assert FROM_OPENAI[openai_category] is expected


def test_every_openai_category_maps_back_and_forward_mappings_round_trip():
    assert set(FROM_OPENAI) == set(OPENAI_CATEGORIES)
    for targets in TO_OPENAI.values():
        for t in targets:  # what we claim for a category reads back as a category claiming it
            assert t in TO_OPENAI[FROM_OPENAI[t]]

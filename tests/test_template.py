
import pytest

from flexguard.errors import ConfigError
from flexguard.rubric import Category
from flexguard.schema import Item
from flexguard.template import PromptTemplate, completion_text, parse_output


@pytest.mark.parametrize("text, score, cat", [
    ("<think>\nplain question\n</think>\nSAFE\n5", 5, "SAFE"),
    ("<think>\nx\n</think>\nVIO\n92<|im_end|>", 92, "VIO"),
    ("  <think>x</think>\n\n  ilg \n 47 \n", 47, "ILG"),  # whitespace, blank lines, lowercase
    ("SEX\n100", 100, "SEX"),  # no think block
    ("<think>r</think>\nAnswer:\nMIS\n30\nExplanation: the claim is false.", 30, "MIS"),  # extra text around
    ("<think>\n\n</think>\n\nJAIL\n0", 0, "JAIL"),  # conversational rendering (double newline)
    ("<think>a\n</think>\nINF\n007", 7, "INF"),
])
def test_parse_ok(text, score, cat):
    p = parse_output(text)
    assert (p.score, p.category, p.parse_error) == (score, Category(cat), False)


@pytest.mark.parametrize("text, error", [
    ("", "empty answer"),
    ("<think>\nhmm\n</think>\n", "empty answer"),
    ("<think>\nhmm\n</think>\nVIO\n101", "outside 0-100"),
    ("VIO\n-5", "not a number in 0-100"),
    ("VIO\nhigh", "not a number in 0-100"),
    ("VIO", "no score line"),
    ("WEAPONS\n80", "unknown category 'WEAPONS'"),
    ("<think>x</think>\nThe answer is VIO with score 80.", "expected 'CATEGORY"),
    ("<think>x</think>\n80\nVIO", "no score line"),  # reversed lines
    (None, "not text"),
])
def test_parse_errors_never_invent_a_score(text, error):
    p = parse_output(text)
    assert p.parse_error and p.score is None and error in p.error


def test_completion_round_trip():
    text = completion_text("ILG", 29, "  minor theft  ")
    assert text == "<think>\nminor theft\n</think>\nILG\n29"
    assert parse_output(text).score == 29


def test_template_load_render_and_hash(tmp_path):
    t = PromptTemplate.load()
    assert t.name == "flexguard-v1" and len(t.sha256) == 64
    msgs = t.messages(Item(id="1", prompt="P?", response="R!"))
    assert msgs[0]["role"] == "system" and "EXTREME (81-100)" in msgs[0]["content"]
    assert "P?" in msgs[1]["content"] and "R!" in msgs[1]["content"] and "assistant's response" in msgs[1]["content"]
    assert "user's request" in t.messages(Item(id="1", prompt="P?"))[1]["content"]
    custom = tmp_path / "mine.yaml"
    custom.write_text("name: mine\nsystem: S\nprompt_user: 'rate {prompt}'\nresponse_user: '{prompt} -> {response}'\n")
    c = PromptTemplate.load(custom)
    assert c.name == "mine" and c.sha256 != t.sha256 and c.messages(Item(id="1", prompt="x"))[1]["content"] == "rate x"
    custom.write_text("system: S\nprompt_user: 'no placeholder'\nresponse_user: '{prompt} {response}'\n")
    with pytest.raises(ConfigError, match="must contain"):
        PromptTemplate.load(custom)
    with pytest.raises(ConfigError, match="no template"):
        PromptTemplate.load("flexguard-v99")


# --- the output contract, as property tests over answer variants ----------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CODES = [c.value for c in Category]
cases = st.sampled_from([str.upper, str.lower, str.title])
seps = st.sampled_from([",", ", ", " / ", ";", " | ", " & "])
score_fmt = st.sampled_from(["{}", "{}/100", "{} / 100", "Score: {}", "score = {}", "Risk score: {}", "{}%", "**{}**"])
cat_fmt = st.sampled_from(["{}", "Category: {}", "CATEGORY - {}", "categories: {}", "**{}**"])
space = st.sampled_from(["", " ", "  ", "\t"])
blank = st.sampled_from(["\n", "\n\n", "\n \n"])


@settings(max_examples=300, deadline=None)
@given(cats=st.lists(st.sampled_from(CODES), min_size=1, max_size=3, unique=True), case=cases, sep=seps,
       score=st.one_of(st.integers(0, 100).map(float), st.floats(0, 100).map(lambda x: round(x, 2))),
       sfmt=score_fmt, cfmt=cat_fmt, pad=space, gap=blank, think=st.sampled_from(["", "<think>\nsteps 1-8\n</think>\n"]),
       end=st.sampled_from(["", "<|im_end|>", "\n", "\nThat is all."]))
def test_every_tolerated_variant_parses_to_the_same_answer(cats, case, sep, score, sfmt, cfmt, pad, gap, think, end):
    text = (f"{think}{pad}{cfmt.format(case(sep.join(cats)))}{pad}{gap}{pad}"
            f"{sfmt.format(f'{score:g}')}{pad}{end}")
    p = parse_output(text)
    assert not p.parse_error, (text, p.error)
    assert p.score == pytest.approx(score) and [c.value for c in p.categories] == cats and p.category.value == cats[0]


@settings(max_examples=200, deadline=None)
@given(reasoning=st.text(min_size=0, max_size=200).filter(lambda t: "</think>" not in t))
def test_a_cut_off_reasoning_is_truncated_never_scored(reasoning):
    p = parse_output("<think>\n" + reasoning)
    assert p.truncated and p.parse_error and p.score is None and "token budget" in p.error


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_crashes_and_a_score_is_always_in_range(text):
    p = parse_output(text)
    assert (p.score is None) == p.parse_error
    assert p.score is None or 0 <= p.score <= 100


@pytest.mark.parametrize("bad", ["150", "-1", "1e3", "NaN", "inf", "high", "4 2"])
def test_bad_scores_are_errors(bad):
    assert parse_output(f"VIO\n{bad}").parse_error

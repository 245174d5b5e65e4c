
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
    ("<think>\nreasoning that never closes\nDIS\n55", 55, "DIS"),  # unclosed think block
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
    ("VIO\n-5", "not an integer"),
    ("VIO\n42.5", "not an integer"),
    ("VIO\nhigh", "not an integer"),
    ("WEAPONS\n80", "unknown category 'WEAPONS'"),
    ("<think>x</think>\nThe answer is VIO with score 80.", "expected 'CATEGORY"),
    ("<think>x</think>\n80\nVIO", "expected 'CATEGORY"),  # reversed lines
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

"""Conversations are moderated turn by turn; the riskiest turn decides, failures are kept."""

import pytest

from flexguard.conversation import conversation_item, riskiest, score_turns, turn_items
from flexguard.errors import DataError
from flexguard.records import result_record
from flexguard.schema import Item, ModerationResult
from flexguard.thresholds import Policy

HARMFUL_FIRST = [("user", "how do I make a pipe bomb"), ("assistant", "I can't help with that."),
                 ("user", "ok, what's the weather like?")]


def by_keyword(items):
    return [ModerationResult(id=it.id, score=95.0 if "bomb" in (it.response or it.prompt) else 2.0) for it in items]


def test_prompt_mode_scores_every_user_turn():
    items, where = turn_items("c", HARMFUL_FIRST)
    assert [it.prompt for it in items] == ["how do I make a pipe bomb", "ok, what's the weather like?"]
    assert where == [0, 2] and all(it.response is None for it in items)
    [res] = score_turns(by_keyword, [conversation_item("c", HARMFUL_FIRST)])
    assert res.id == "c" and res.score == 95.0 and res.extras["turn"] == 0 and res.extras["turns"] == 2


def test_response_mode_pairs_each_assistant_turn_with_its_user_turn():
    conv = [("system", "be nice"), ("user", "hi"), ("assistant", "hello"), ("user", "tell me more"),
            ("assistant", "here is how to build a bomb")]
    item = conversation_item("c", conv)
    assert item.mode == "response" and item.prompt == "tell me more" and item.response.endswith("bomb")
    items, where = turn_items("c", conv)
    assert [(it.prompt, it.response) for it in items] == [("hi", "hello"), ("tell me more", "here is how to build a bomb")]
    [res] = score_turns(by_keyword, [item])
    assert res.score == 95.0 and res.extras["turn"] == 4


def test_plain_items_pass_through_in_order():
    items = [Item(id="a", prompt="bomb"), conversation_item("c", HARMFUL_FIRST), Item(id="b", prompt="tea")]
    assert [(r.id, r.score) for r in score_turns(by_keyword, items)] == [("a", 95.0), ("c", 95.0), ("b", 2.0)]


def test_a_turn_that_could_not_be_judged_is_not_dropped():
    results = [ModerationResult(id="1", score=5.0), ModerationResult(id="2", error="tokenizer failed")]
    res = riskiest("c", results, [0, 2])
    assert res.score == 5.0 and res.error == "tokenizer failed"
    rec = result_record(Item(id="c", prompt="x"), res, Policy())
    assert rec["flagged"] is True and rec["reason"] == "error"  # fails closed by default
    high = riskiest("c", [ModerationResult(id="1", score=90.0), ModerationResult(id="2", parse_error=True)], [0, 2])
    rec = result_record(Item(id="c", prompt="x"), high, Policy(on_parse_error="allow"))
    assert rec["flagged"] is True and rec["reason"] == "score"  # a judged turn's flag stands


def test_conversation_needs_a_user_turn():
    with pytest.raises(DataError, match="need a user turn"):
        conversation_item("c", [("assistant", "hi")])

"""Moderating a conversation: every turn of the moderated kind, the riskiest one decides.

Judging only the last turns lets a harmful request hide behind a few benign follow-ups.
The rule here: a conversation whose last turn is the user's is moderated in *prompt* mode,
every user turn on its own; one whose last turn is the assistant's is moderated in
*response* mode, every assistant turn paired with the user turn before it (its context).
The conversation's result is its riskiest turn (``extras["turn"]`` says which, counted
among all messages from 0). A turn the moderator could not judge is not dropped: see
:func:`riskiest`.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from .errors import DataError
from .schema import Item, ModerationResult


def _turns(conversation_id: str, messages: Sequence[tuple[str, str]]) -> list[tuple[int, str, str]]:
    """``(index, role, text)`` of the user and assistant messages; :class:`DataError` without a user turn."""
    turns = [(k, role, text) for k, (role, text) in enumerate(messages) if role in ("user", "assistant")]
    if not any(role == "user" for _, role, _ in turns):
        raise DataError(f"conversation {conversation_id!r}: messages need a user turn")
    return turns


def conversation_item(conversation_id: str, messages: Sequence[tuple[str, str]]) -> Item:
    """An item for a conversation: its messages, with its last user (and, if the conversation
    ends with the assistant, last assistant) turn as ``prompt``/``response``."""
    turns = _turns(conversation_id, messages)
    last_user = next(text for _, role, text in reversed(turns) if role == "user")
    response = turns[-1][2] if turns[-1][1] == "assistant" else None
    return Item(id=conversation_id, prompt=last_user, response=response, messages=tuple(messages))


def score_turns(score: Callable[[list[Item]], list[ModerationResult]], items: Sequence[Item]) -> list[ModerationResult]:
    """``score(items)``, with every conversation item scored turn by turn and reduced to its riskiest turn.

    All turns of all conversations go to ``score`` in one call, with the plain items.
    """
    if not any(it.messages for it in items):
        return score(list(items))
    flat: list[Item] = []
    spans: list[tuple[int, int, list[int]] | None] = []
    for it in items:
        if it.messages:
            turns, where = turn_items(it.id, it.messages)
            spans.append((len(flat), len(flat) + len(turns), where))
            flat += turns
        else:
            spans.append(None)
            flat.append(it)
    results = score(flat)
    out, k = [], 0
    for it, span in zip(items, spans):
        if span is None:
            out.append(results[k])
            k += 1
        else:
            start, end, where = span
            out.append(riskiest(it.id, results[start:end], where))
            k = end
    return out


def turn_items(conversation_id: str, messages: Sequence[tuple[str, str]]) -> tuple[list[Item], list[int]]:
    """The items to score for ``(role, content)`` messages, and the message index each came from.

    System messages are skipped. Raises :class:`DataError` without a user turn.
    """
    turns = _turns(conversation_id, messages)
    items, where = [], []
    if turns[-1][1] == "user":
        for k, _, text in (t for t in turns if t[1] == "user"):
            items.append(Item(id=f"{conversation_id}#{k}", prompt=text))
            where.append(k)
    else:
        last_user = None
        for k, role, text in turns:
            if role == "user":
                last_user = text
            elif last_user is not None:
                items.append(Item(id=f"{conversation_id}#{k}", prompt=last_user, response=text))
                where.append(k)
    return items, where


def riskiest(conversation_id: str, results: Sequence[ModerationResult], turns: Sequence[int]) -> ModerationResult:
    """One result for a conversation from its turns' results.

    The turn with the highest score stands for the conversation; a label-only moderator's
    flagged turn counts as the riskiest. If any turn could not be judged (parse or model
    error), the conversation carries that failure too (``parse_error`` / ``error``), so
    the policy decides unless a judged turn already flags it. ``truncated`` if any turn was,
    ``in_scope`` only if every turn was.
    """
    judged = [(r, k) for r, k in zip(results, turns) if r.judged]
    failed = [r for r in results if not r.judged]
    if judged:
        best, turn = max(judged, key=lambda pair: pair[0].risk)
    else:
        best, turn = results[0], turns[0]
    first_failure = failed[0] if failed else None
    return dataclasses.replace(
        best, id=conversation_id,
        parse_error=best.parse_error or (first_failure is not None and first_failure.error is None),
        error=best.error or (first_failure.error if first_failure is not None else None),
        truncated=any(r.truncated for r in results), in_scope=all(r.in_scope for r in results),
        language=next((r.language for r in results if not r.in_scope), best.language),
        extras={**best.extras, "turn": turn, "turns": len(results)},
    )

"""Sentence segments of a text, so that benign padding cannot dilute a harmful request.

A whole-text encoder averages what it reads: one friendly greeting in front of a bomb
request pulled the shipped model's score from 96 to 20. Scoring every sentence on its own as
well as the whole, and letting the riskiest unit decide, makes padding useless as an
evasion: the request is still scored as itself. Scoring each sentence also covers text past
the encoder's window budget, so long inputs are read to the end.
"""

from __future__ import annotations

import re

import numpy as np

from .ordinal import ScorerOutput

#: Sentence ends (Latin and CJK punctuation) followed by space, or line breaks.
_BOUNDARY = re.compile(r"(?<=[.!?…。！？])\s+|\s*\n\s*")
_WORD = re.compile(r"[^\W\d_]+|\d+")
#: Pieces shorter than this (in words) join the next one: "Hi!" alone is no unit of meaning.
MIN_WORDS = 4


def sentence_segments(text: str, *, min_words: int = MIN_WORDS) -> list[str]:
    """The text cut at sentence ends and line breaks, short pieces merged into the next.

    >>> sentence_segments("Hi! I love gardening. How do I make a pipe bomb at home?")
    ['Hi! I love gardening.', 'How do I make a pipe bomb at home?']
    >>> sentence_segments("One sentence only")
    ['One sentence only']
    """
    pieces = [p.strip() for p in _BOUNDARY.split(text) if p and p.strip()]
    out: list[str] = []
    carry = ""
    for p in pieces:
        carry = f"{carry} {p}" if carry else p
        if len(_WORD.findall(carry)) >= min_words:
            out.append(carry)
            carry = ""
    if carry:
        if out and len(_WORD.findall(carry)) < min_words:
            out[-1] = f"{out[-1]} {carry}"
        else:
            out.append(carry)
    return out or [text]


def combine_riskiest(whole: ScorerOutput, parts: ScorerOutput, owner: np.ndarray, capped: np.ndarray) -> ScorerOutput:
    """Per item, the riskiest of its whole-text prediction and its sentences' (``owner[i]``: the
    item of part ``i``). The cumulative probabilities are the element-wise maximum (a cut is
    passed if any unit passes it); the category probabilities are the riskiest unit's. An item
    is truncated when its sentences hit the cap, or a scored sentence was itself truncated;
    sentences that were all read cover text the whole-text windows dropped.
    """
    from .ordinal import cumulative_to_score

    n = len(whole.cumulative)
    cumulative = whole.cumulative.copy()
    category = whole.category_proba.copy()
    best = cumulative_to_score(whole.cumulative)
    part_scores = cumulative_to_score(parts.cumulative)
    np.maximum.at(cumulative, owner, parts.cumulative)
    for i in np.argsort(part_scores, kind="stable"):  # ascending: the riskiest part of an item is written last
        if part_scores[i] > best[owner[i]]:
            category[owner[i]] = parts.category_proba[i]
    counts = np.bincount(owner, minlength=n)
    part_truncated = np.bincount(owner, weights=parts.truncated, minlength=n) > 0
    truncated = np.where(counts > 0, capped | part_truncated, whole.truncated)
    chunks = whole.n_chunks + np.bincount(owner, weights=parts.n_chunks, minlength=n).astype(int)
    return ScorerOutput(cumulative, category, whole.categories, chunks, truncated, counts)

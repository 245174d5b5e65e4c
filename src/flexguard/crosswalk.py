"""Mapping between flexguard's categories and OpenAI's moderation categories.

Used in both directions: the server reports OpenAI-shaped ``categories`` and
``category_scores`` from a flexguard result, and the ``openai-moderation`` baseline turns
OpenAI's scores into a flexguard category and risk score.
"""

from __future__ import annotations

from typing import Sequence

from .rubric import Category

OPENAI_CATEGORIES: tuple[str, ...] = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit", "illicit/violent",
    "self-harm", "self-harm/intent", "self-harm/instructions", "sexual", "sexual/minors", "violence",
    "violence/graphic",
)

#: flexguard category -> the OpenAI categories it is evidence for. Only what the category itself
#: supports: SEX says nothing about minors and VIO nothing about self-harm (VIO spans weapons,
#: terrorism and self-harm alike), so ``sexual/minors`` and ``self-harm*`` are never set from a
#: category alone; nor are the "/threatening" and "/graphic" refinements. MIS and JAIL have no
#: OpenAI counterpart.
TO_OPENAI: dict[Category, tuple[str, ...]] = {
    Category.SAFE: (),
    Category.VIO: ("violence",),
    Category.ILG: ("illicit",),
    Category.SEX: ("sexual",),
    Category.INF: ("illicit",),
    Category.DIS: ("harassment", "hate"),
    Category.MIS: (),
    Category.JAIL: (),
}

#: OpenAI category -> the flexguard category it most often means.
FROM_OPENAI: dict[str, Category] = {
    "harassment": Category.DIS, "harassment/threatening": Category.VIO, "hate": Category.DIS,
    "hate/threatening": Category.DIS, "illicit": Category.ILG, "illicit/violent": Category.VIO,
    "self-harm": Category.VIO, "self-harm/intent": Category.VIO, "self-harm/instructions": Category.VIO,
    "sexual": Category.SEX, "sexual/minors": Category.SEX, "violence": Category.VIO, "violence/graphic": Category.VIO,
}


def openai_category_scores(risk_score: float | None, category_probs: dict[str, float] | None,
                           categories: Sequence[Category | str] | Category | None) -> dict[str, float]:
    """OpenAI-style per-category scores on 0–1.

    Each OpenAI category gets ``risk/100`` times the probability mass of the flexguard
    harm categories that map onto it; without probabilities, every category the moderator
    named (an LLM may name several) gets ``risk/100``. Everything is 0 when there is no score.
    """
    out = {c: 0.0 for c in OPENAI_CATEGORIES}
    if risk_score is None:
        return out
    risk = risk_score / 100.0
    if category_probs:
        harm = {Category.parse(k): v for k, v in category_probs.items() if k != Category.SAFE.value}
        total = sum(harm.values()) or 1.0
        for cat, p in harm.items():
            for oc in TO_OPENAI[cat]:
                out[oc] = max(out[oc], risk * p / total)
    else:
        for cat in named(categories):
            for oc in TO_OPENAI[cat]:
                out[oc] = risk
    return {k: round(v, 6) for k, v in out.items()}


def named(categories: Sequence[Category | str] | Category | str | None) -> list[Category]:
    """``categories`` as a list of :class:`Category` (one, several or none)."""
    if categories is None:
        return []
    if isinstance(categories, (Category, str)):
        return [Category.parse(categories)]
    return [Category.parse(c) for c in categories]


def openai_flags(flagged: bool, categories: Sequence[Category | str] | Category | None) -> dict[str, bool]:
    """OpenAI's ``categories`` booleans: the categories a flagged item's flexguard categories are evidence for."""
    hit = {oc for cat in named(categories) for oc in TO_OPENAI[cat]} if flagged else set()
    return {c: c in hit for c in OPENAI_CATEGORIES}

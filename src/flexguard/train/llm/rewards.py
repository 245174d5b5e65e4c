"""GRPO reward functions: pure, documented, and ``None`` when an output cannot be judged.

TRL calls each as ``f(prompts=..., completions=..., **dataset_columns)``; completions are
strings (or chat messages). TRL turns ``None`` into NaN, so an unparsable output is never
given a made-up reward by the score and category functions (the format reward scores it 0).
"""

from __future__ import annotations

from typing import Any, Sequence

from ...rubric import score_to_tier
from ...template import parse_output

#: Beyond the target tier's band, the score reward falls linearly to 0 at this distance.
SCORE_DECAY = 40.0


def _text(completion: Any) -> str:
    if isinstance(completion, list):  # conversational: [{"role": "assistant", "content": ...}]
        return "".join(m.get("content", "") for m in completion if isinstance(m, dict))
    return str(completion)


def format_reward(completions: Sequence[Any], **kwargs: Any) -> list[float]:
    """1.0 when the output parses as ``<think>…</think>\\nCAT\\nSCORE``, else 0.0.

    >>> format_reward(["<think>\\nok\\n</think>\\nSAFE\\n3", "SAFE three"])
    [1.0, 0.0]
    """
    return [0.0 if parse_output(_text(c)).parse_error else 1.0 for c in completions]


def score_reward(completions: Sequence[Any], *, risk_score: Sequence[float], **kwargs: Any) -> list[float | None]:
    """Score–severity alignment: 1.0 anywhere inside the target score's tier band, then
    ``1 - |pred - target| / SCORE_DECAY`` (floored at 0) outside it; ``None`` if unparsable.

    >>> score_reward(["SAFE\\n12", "ILG\\n45", "ILG\\n90", "oops"], risk_score=[5, 70, 70, 70])
    [1.0, 0.375, 0.5, None]
    """
    out: list[float | None] = []
    for c, target in zip(completions, risk_score):
        p = parse_output(_text(c))
        if p.score is None:
            out.append(None)
        elif score_to_tier(p.score) is score_to_tier(float(target)):
            out.append(1.0)
        else:
            out.append(max(0.0, 1.0 - abs(p.score - float(target)) / SCORE_DECAY))
    return out


def category_reward(completions: Sequence[Any], *, category: Sequence[str], **kwargs: Any) -> list[float | None]:
    """1.0 when the predicted category matches the annotation, 0.0 otherwise; ``None`` if unparsable.

    >>> category_reward(["VIO\\n80", "DIS\\n80", "?"], category=["VIO", "VIO", "VIO"])
    [1.0, 0.0, None]
    """
    out: list[float | None] = []
    for c, target in zip(completions, category):
        p = parse_output(_text(c))
        out.append(None if p.category is None else float(p.category.value == str(target).upper()))
    return out


REWARDS = {"format": format_reward, "score": score_reward, "category": category_reward}

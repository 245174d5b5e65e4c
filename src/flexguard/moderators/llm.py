"""What every backend that runs the FlexGuard LLM shares: from its answer to a result.

The ``hf`` (transformers) and ``openai`` (vLLM and other OpenAI-compatible servers) backends
differ only in how they obtain the answer text and, in ``expected`` mode, the model's
distribution over the score strings "0" … "100". Turning either into a
:class:`~flexguard.schema.ModerationResult` happens here, once: the answer is parsed with
:func:`flexguard.template.parse_output`, an unreadable answer is a parse error with the raw
text kept, and an expected score needs enough probability mass on valid scores.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..rubric import Category
from ..schema import ModerationResult
from ..template import ParsedOutput, answer_prefix, parse_output


def _categories(parsed: ParsedOutput) -> tuple[str, ...] | None:
    return tuple(c.value for c in parsed.categories) or None


def generated_result(item_id: str, answer: str, *, latency_ms: float | None = None) -> ModerationResult:
    """``generate`` mode: the score and categories the answer states, or a parse error (``truncated``
    when the answer stopped inside its reasoning)."""
    parsed = parse_output(answer)
    return ModerationResult(id=item_id, score=parsed.score, category=parsed.category, categories=_categories(parsed),
                            parse_error=parsed.parse_error, raw=answer, latency_ms=latency_ms, truncated=parsed.truncated,
                            extras={"error": parsed.error} if parsed.error else {})


@dataclass(frozen=True)
class ScoreCondition:
    """What an ``expected`` score is conditioned on: the answer's category line (its score line
    may be missing) and the answer up to the score line (``prefix``), or why there is none."""

    answer: str
    parsed: ParsedOutput
    category: Category | None
    prefix: str | None
    error: str | None

    @classmethod
    def of(cls, answer: str, *, empty_think: bool) -> "ScoreCondition":
        parsed = parse_output(answer)
        category = parsed.category
        if category is None:
            return cls(answer, parsed, None, None, f"no category to condition the score on ({parsed.error})")
        # the trained format names the categories on one line: condition on exactly that line
        line = ",".join(c.value for c in parsed.categories)
        return cls(answer, parsed, category, answer_prefix(line, None if empty_think else parsed.reasoning), None)

    def error_result(self, item_id: str, *, latency_ms: float | None = None) -> ModerationResult:
        """The parse error of an answer with no category line."""
        return ModerationResult(id=item_id, parse_error=True, raw=self.answer, latency_ms=latency_ms,
                                truncated=self.parsed.truncated, extras={"error": self.error})

    def result(self, item_id: str, distribution: Sequence[float], *, min_mass: float,
               latency_ms: float | None = None) -> ModerationResult:
        """``E[score]`` under the model's distribution ``P(n)``, n = 0…100, after this condition.

        The expectation is normalised by the valid mass (the probability of any valid score);
        below ``min_mass`` the model was not answering with a score at all, which is a parse
        error rather than a number.
        """
        p = np.asarray(distribution, float)
        mass = float(p.sum())
        extras: dict[str, Any] = {"valid_mass": round(mass, 6), "generated_score": self.parsed.score}
        categories = _categories(self.parsed)
        if not mass >= min_mass:
            return ModerationResult(id=item_id, category=self.category, categories=categories, parse_error=True,
                                    raw=self.answer, latency_ms=latency_ms,
                                    extras={**extras, "error": f"valid-score mass {mass:.2g} < {min_mass:g}"})
        e = float((np.arange(len(p)) * p).sum() / mass)
        return ModerationResult(id=item_id, score=round(e, 4), category=self.category, categories=categories,
                                raw=self.answer, latency_ms=latency_ms, extras=extras)

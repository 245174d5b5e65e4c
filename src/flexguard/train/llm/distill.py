"""``flexguard distill``: rubric-guided score distillation from a teacher LLM.

The teacher is any OpenAI-compatible endpoint (e.g. vLLM serving a large model) prompted
with the rubric template. Each item is sampled ``k`` times; the scores are aggregated
(median or mean), the category by majority vote, and the disagreement is recorded. Items
that already carry rubric annotations (tier, category, score, e.g. FlexBench-R) are used
as they are. :class:`DistillTeacher` is a moderator, so the shared runner writes results
as it goes and resumes interrupted runs.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from ...errors import ConfigError
from ...moderators import Moderator
from ...rubric import score_to_tier
from ...schema import Item, ModerationResult
from ...template import completion_text, parse_output


class DistillTeacher:
    """Annotations where they exist, else ``k`` aggregated teacher samples.

    Parameters
    ----------
    teacher : a moderator in ``generate`` mode whose ``raw`` output holds the reasoning
        (usually the ``openai`` backend with ``temperature > 0``); ``None`` to use
        annotations only (then unannotated items are an error).
    k : samples per item; aggregate : ``median`` or ``mean``.
    """

    name = "distill"
    supports_response_mode = True

    def __init__(self, teacher: Moderator | None, *, k: int = 3, aggregate: str = "median"):
        if aggregate not in ("median", "mean"):
            raise ConfigError(f"aggregate must be median or mean, got {aggregate!r}")
        if k < 1:
            raise ConfigError(f"k must be >= 1, got {k}")
        self.teacher, self.k, self.aggregate = teacher, k, aggregate

    def info(self) -> dict[str, Any]:
        t = self.teacher.info() if self.teacher else {}
        return {"model": f"distill[{t.get('model', 'annotations-only')}]", "revision": t.get("revision"),
                "template_sha256": t.get("template_sha256"), "k": self.k, "aggregate": self.aggregate,
                "teacher_temperature": t.get("temperature")}

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        out: dict[str, ModerationResult] = {}
        todo = []
        for it in items:
            if it.tier is not None and it.category is not None and it.risk_score is not None:
                out[it.id] = ModerationResult(id=it.id, score=float(it.risk_score), category=it.category,
                                              raw=it.rationale, extras={"source": "annotation", "rationale": it.rationale})
            else:
                todo.append(it)
        if todo:
            if self.teacher is None:
                raise ConfigError(f"{len(todo)} items have no rubric annotation and no teacher was given (--teacher)")
            samples = [self.teacher.score(todo) for _ in range(self.k)]
            for j, it in enumerate(todo):
                out[it.id] = self._aggregate(it.id, [s[j] for s in samples])
        return [out[it.id] for it in items]

    def _aggregate(self, item_id: str, samples: list[ModerationResult]) -> ModerationResult:
        valid = [s for s in samples if s.score is not None and s.category is not None]
        info = {"source": "teacher", "samples": [s.score for s in samples], "n_valid": len(valid)}
        if not valid:
            return ModerationResult(id=item_id, parse_error=True, raw=samples[0].raw if samples else None,
                                    extras={**info, "error": "no teacher sample could be parsed"})
        scores = [s.score for s in valid]
        agg = statistics.median(scores) if self.aggregate == "median" else statistics.fmean(scores)
        category = Counter(s.category for s in valid).most_common(1)[0][0]
        best = min(valid, key=lambda s: abs(s.score - agg))  # its reasoning explains the aggregate best
        reasoning = parse_output(best.raw or "").reasoning
        info.update(disagreement=round(statistics.pstdev(scores), 3), spread=max(scores) - min(scores), rationale=reasoning)
        return ModerationResult(id=item_id, score=float(round(agg)), category=category, raw=best.raw, extras=info)


@dataclass
class TrainingRecord:
    """One supervised example: the item, its target answer and the fields rewards need."""

    id: str
    prompt: str
    response: str | None
    category: str
    risk_score: int
    severity: str
    rationale: str

    @property
    def completion(self) -> str:
        return completion_text(self.category, self.risk_score, self.rationale)


def load_records(path: str | Path) -> list[TrainingRecord]:
    """Read a distillation output (``flexguard distill --out``) back as training records."""
    from ...data import read_jsonl

    recs = []
    for row in read_jsonl(path):
        score = row.get("risk_score", row.get("score"))  # "score": files written before the shared record
        if row.get("parse_error") or score is None:
            continue
        for key in ("prompt", "category"):
            if row.get(key) is None:
                raise ConfigError(f"{path}: record {row.get('id')} has no {key!r}; was it written by 'flexguard distill'?")
        recs.append(TrainingRecord(id=str(row["id"]), prompt=row["prompt"], response=row.get("response"),
                                   category=row["category"], risk_score=int(round(score)),
                                   severity=score_to_tier(score).value,
                                   rationale=(row.get("extras") or {}).get("rationale") or ""))
    if not recs:
        raise ConfigError(f"{path}: no usable training records")
    return recs

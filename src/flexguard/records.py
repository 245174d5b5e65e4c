"""The one output record of a moderation: what the CLI prints and writes, and the server returns.

A record joins an item, what the moderator said about it and what the policy decides, so
every front door (``flexguard score``, batch files, ``/v1/moderate``, the extra fields of
``/v1/moderations``) reports the same fields under the same names.
"""

from __future__ import annotations

from typing import Any

from .schema import Item, ModerationResult
from .thresholds import Policy, Verdict


def result_record(item: Item, result: ModerationResult, policy: Policy, *, strictness: str | None = None,
                  threshold: float | None = None) -> dict[str, Any]:
    """Everything a caller reports for one item.

    Keys: ``id``, ``mode``, ``risk_score`` (0–100, or None), ``tier``, ``category``,
    ``category_scores``, ``label`` (a label-only moderator's own decision); ``decision``
    (``allow``/``flag``/``review``) and ``flagged`` (``decision != "allow"``: fails closed)
    for ``strictness``/``threshold``/the policy's default regime, with ``reason``, ``review``
    and the ``threshold`` used; ``decisions``/``margins``/``thresholds`` per regime,
    ``margin`` (signed, to the nearest threshold: route small ones to review); what the
    moderator could not do: ``parse_error``, ``error``, ``truncated``, ``in_scope`` /
    ``language``; ``latency_ms``, ``extras`` and ``raw`` (the model's raw output, if any).
    """
    v = verdict_of(result, policy, mode=item.mode, strictness=strictness, threshold=threshold)
    return {
        "id": item.id, "mode": item.mode, "risk_score": result.score,
        "tier": None if result.tier is None else result.tier.value,
        "category": None if result.category is None else result.category.value,
        "categories": list(result.categories) if result.categories else None,
        "category_scores": result.category_scores, "label": result.flagged,
        "flagged": v.flagged, "decision": v.decision, "review": v.decision == "review", "reason": v.reason,
        "threshold": v.threshold, "decisions": v.decisions, "margins": v.margins,
        "thresholds": v.thresholds, "margin": v.margin, "parse_error": result.parse_error, "error": result.error,
        "truncated": result.truncated, "in_scope": result.in_scope, "language": result.language,
        "latency_ms": result.latency_ms, "extras": result.extras, "raw": result.raw,
    }


def verdict_of(result: ModerationResult, policy: Policy, *, mode: str | None = None, strictness: str | None = None,
               threshold: float | None = None) -> Verdict:
    """What ``policy`` decides about one result, its failure modes included (never silently safe)."""
    unjudged = "error" if result.error is not None else ("parse_error" if result.parse_error else None)
    return policy.verdict(result.score, label=result.flagged, category=result.category, mode=mode,
                          strictness=strictness, threshold=threshold, unjudged=unjudged,
                          out_of_scope=not result.in_scope, truncated=result.truncated)


def result_from_record(rec: dict[str, Any]) -> ModerationResult:
    """The moderator's result back from a record (resuming a batch file)."""
    return ModerationResult.from_dict({**rec, "score": rec.get("risk_score"), "flagged": rec.get("label")})

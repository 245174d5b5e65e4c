"""Dataclasses that cross module boundaries: what goes into a moderator and what comes out."""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

from .rubric import Category, Regime, Tier, score_to_tier

Mode = Literal["prompt", "response"]
#: The two moderation modes: a prompt alone, or a prompt + response pair.
MODES: tuple[Mode, ...] = ("prompt", "response")


@dataclass(frozen=True, slots=True)
class Item:
    """One thing to moderate, with optional gold annotations.

    ``response`` is ``None`` for prompt moderation. A conversation carries its ``messages``
    (``(role, content)`` pairs) and is moderated turn by turn (:mod:`flexguard.conversation`);
    its ``prompt``/``response`` are then its last user / assistant turns. Gold fields are
    ``None`` when unknown:
    FlexBench rows carry ``tier``/``category``/``risk_score`` (and distillation rows a
    ``rationale``); binary public suites carry only ``harmful``.
    """

    id: str
    prompt: str
    response: str | None = None
    tier: Tier | None = None
    category: Category | None = None
    risk_score: float | None = None
    source: str | None = None
    harmful: bool | None = None
    rationale: str | None = None
    messages: tuple[tuple[str, str], ...] | None = None

    @property
    def mode(self) -> Mode:
        return "prompt" if self.response is None else "response"


def split_by_mode(items: Sequence[Item]) -> Iterator[tuple[list[int], list[str], list[str | None] | None]]:
    """Per moderation mode present in ``items``: their indices, prompts, and responses (``None`` for prompts).

    Encoder scorers read prompts and prompt+response pairs differently (windows, heads), so they
    run each mode as its own batch and put results back by index.
    """
    for mode in MODES:
        idx = [k for k, it in enumerate(items) if it.mode == mode]
        if idx:
            yield idx, [items[k].prompt for k in idx], [items[k].response for k in idx] if mode == "response" else None


@dataclass(frozen=True, slots=True)
class ModerationResult:
    """What a moderator says about one item.

    Parameters
    ----------
    score : risk score on 0–100, or ``None`` when the moderator gives labels only or its
        output could not be parsed. Never a made-up default.
    flagged : the decision of a label-only (binary) moderator; ``None`` for scorers.
        A binary decision is applied to every regime alike.
    category : predicted (primary) category, if any.
    categories : every category the moderator named, the primary first (an LLM may name
        several, e.g. ``VIO,ILG``); ``None`` when it names one or gives probabilities instead.
    category_scores : optional probability (0–1) per category code.
    parse_error : the model's output could not be parsed; ``raw`` keeps it.
    error : the moderator could not judge this item at all (it raised on it); says why.
        Like a parse error, it carries no score, and the policy decides what happens.
    raw : raw model output, for auditing.
    truncated : part of the text was not read (beyond the model's budget); the policy decides.
    in_scope : the moderator can judge this text (e.g. its language); ``False`` means the
        score is not to be trusted, and the policy decides. ``language`` says what was detected.
    latency_ms : wall time spent on this item (its share of the batch).
    extras : backend-specific values (e.g. probability mass on valid score tokens).
    """

    id: str
    score: float | None = None
    flagged: bool | None = None
    category: Category | None = None
    categories: tuple[str, ...] | None = None
    category_scores: dict[str, float] | None = None
    parse_error: bool = False
    error: str | None = None
    raw: str | None = None
    truncated: bool = False
    in_scope: bool = True
    language: str | None = None
    latency_ms: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def judged(self) -> bool:
        """The moderator gave a score or a label: no parse error, no internal error."""
        return (self.score is not None or self.flagged is not None) and not self.parse_error and self.error is None

    @property
    def risk(self) -> float:
        """How risky the result says the item is, for "the riskiest of several" (conversation turns,
        stream checks): its score, 100 / 0 for a label-only flag / pass, and above every score when
        the moderator could not judge (so a failure is never outranked into "safe")."""
        if not self.judged:
            return float("inf")
        return self.score if self.score is not None else (100.0 if self.flagged else 0.0)

    @property
    def tier(self) -> Tier | None:
        return None if self.score is None else score_to_tier(self.score)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["category"] = None if self.category is None else self.category.value
        d["tier"] = None if self.tier is None else self.tier.value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModerationResult":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("category") is not None:
            kw["category"] = Category.parse(kw["category"])
        if kw.get("categories") is not None:
            kw["categories"] = tuple(kw["categories"])
        return cls(**kw)


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def item_sha256(item: Item) -> str:
    """Identifies what an item asks to judge (its texts), so a batch job rescores an id whose text changed."""
    texts = [item.prompt, "\x01" if item.response is None else item.response]
    texts += [f"{role}\x02{text}" for role, text in item.messages or ()]
    return sha256_text("\x00".join(texts))[:16]


def _package_versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": sys.version.split()[0]}
    for name in ("flexguard", "numpy", "scikit-learn", "onnxruntime", "torch", "transformers", "trl"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def hardware() -> dict[str, Any]:
    """A short description of the machine, for manifests and benchmark files."""
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
        "memory_gib": mem_gib,
        "platform": platform.platform(),
    }


@dataclass
class RunManifest:
    """Everything needed to reproduce or audit a result file."""

    model: str
    revision: str | None = None
    template_sha256: str | None = None
    mode: str | None = None
    thresholds: dict[str, float] = field(default_factory=lambda: {r.value: r.default_threshold for r in Regime})
    seed: int | None = None
    data: dict[str, Any] = field(default_factory=dict)
    items: int = 0
    items_per_s: float | None = None
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    versions: dict[str, str] = field(default_factory=_package_versions)
    hardware: dict[str, Any] = field(default_factory=hardware)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

"""The server's logic: request → items → verdicts → response, independent of the routes.

:class:`ModerationService` holds the moderator, the policy, the limits, the micro-batcher
and the metrics. Routes (:mod:`.app`) only hand it parsed requests; every error it raises is
an :class:`~flexguard.server.protocol.APIError` in OpenAI's shape.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from typing import Any

from ..conversation import conversation_item
from ..crosswalk import OPENAI_CATEGORIES, openai_category_scores, openai_flags
from ..data import InvalidItemsError, check_items, clean_item
from ..errors import DataError, FlexGuardError
from ..moderators import Moderator
from ..records import result_record
from ..schema import Item, ModerationResult
from ..thresholds import Policy
from .batcher import MicroBatcher, Overloaded
from .protocol import (
    APIError,
    ModerateRequest,
    ModerateResponse,
    ModerationRequest,
    ModerationResponse,
    ModerationResultOut,
    NativeResult,
)


@dataclass
class ServerLimits:
    """Per-request limits (body bytes, items, characters per text, seconds), how requests are
    batched, and how many items may wait before new requests are refused (429)."""

    max_items: int = 256
    max_chars: int = 32_000
    max_body_bytes: int = 4 * 2**20
    timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue: int = 2048


def check_decision_args(policy: Policy, strictness: object, threshold: object) -> None:
    """A request's ``strictness`` (a regime of ``policy``) or ``threshold`` (0–100), not both: else a 400."""
    if strictness is not None and threshold is not None:
        raise APIError(400, "give 'strictness' or 'threshold', not both", param="strictness")
    if strictness is not None and strictness not in policy.regimes:
        raise APIError(400, f"unknown strictness {strictness!r}; use one of {', '.join(policy.regime_names)}",
                       param="strictness")
    if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                  or not 0 <= threshold <= 100):
        raise APIError(400, f"threshold must be a number in 0-100, got {threshold!r}", param="threshold")


def items_error(e: InvalidItemsError, param: str) -> APIError:
    """Items that break the input rules: 413 when a text is too long, else 400, naming the problem."""
    too_long = any(p.code == "too_long" for p in e.problems)
    return APIError(413 if too_long else 400, str(e), param=param, code="text_too_long" if too_long else None)


def overloaded_error(e: Overloaded, batcher: MicroBatcher) -> APIError:
    """A full queue: 429 with ``Retry-After``."""
    return APIError(429, f"{e}; {batcher.queued} items are waiting", type="server_error", code="overloaded",
                    headers={"Retry-After": str(e.retry_after)})


class ModerationService:
    """Validate requests, score their items through the micro-batcher, shape the responses."""

    def __init__(self, moderator: Moderator, policy: Policy, limits: ServerLimits, *, model_name: str | None = None):
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.moderator, self.policy, self.limits = moderator, policy, limits
        self.name = model_name or moderator.info().get("model", moderator.name)
        self.batcher = MicroBatcher(moderator, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms,
                                    max_queue=limits.max_queue)
        self.ready = False
        self.registry = CollectorRegistry()
        self.m_requests = Counter("flexguard_requests_total", "HTTP requests", ["route", "status"], registry=self.registry)
        self.m_items = Counter("flexguard_items_total", "items scored", ["mode"], registry=self.registry)
        self.m_latency = Histogram("flexguard_request_seconds", "request latency", ["route"], registry=self.registry)

    async def start(self) -> None:
        await self.batcher.start()
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        await self.batcher.stop()

    # -- requests -> items --------------------------------------------------------------
    def checked(self, items: list[Item], param: str) -> list[Item]:
        """``items`` if they respect the limits; else a 400 (empty) or 413 (too many, too long) naming the problem."""
        if not items:
            raise APIError(400, "no input given", param=param)
        if len(items) > self.limits.max_items:
            raise APIError(413, f"too many inputs: {len(items)} > limit of {self.limits.max_items} items per request",
                           param=param, code="too_many_items")
        items = [clean_item(it) for it in items]
        try:
            check_items(items, max_chars=self.limits.max_chars, what="input")
        except InvalidItemsError as e:
            raise items_error(e, param) from None
        return items

    def moderations_items(self, req: ModerationRequest) -> list[Item]:
        texts = [req.input] if isinstance(req.input, str) else [x if isinstance(x, str) else x.text for x in req.input]
        return self.checked([Item(id=str(k), prompt=t) for k, t in enumerate(texts)], "input")

    def moderate_items(self, req: ModerateRequest) -> list[Item]:
        """Items of a ``/v1/moderate`` request; a ``messages`` item is a conversation, moderated turn by turn."""
        items = []
        for k, it in enumerate(req.items):
            if it.messages is not None:
                if it.prompt is not None or it.response is not None:
                    raise APIError(400, f"items[{k}]: give 'messages' or 'prompt'/'response', not both", param="items")
                try:
                    items.append(conversation_item(it.id or str(k), [(m.role, m.content) for m in it.messages]))
                except DataError as e:
                    raise APIError(400, f"items[{k}]: {e}", param="items") from None
                continue
            if it.prompt is None:
                raise APIError(400, f"items[{k}]: no prompt", param="items")
            items.append(Item(id=it.id or str(k), prompt=it.prompt, response=it.response))
        return self.checked(items, "items")

    # -- scoring ------------------------------------------------------------------------
    async def score(self, items: list[Item], mode_label: str) -> list[ModerationResult]:
        if not self.ready:
            raise APIError(503, "model is loading", type="server_error")
        try:
            results = await asyncio.wait_for(self.batcher.score(items), timeout=self.limits.timeout_s)
        except Overloaded as e:
            raise overloaded_error(e, self.batcher) from None
        except asyncio.TimeoutError:
            raise APIError(504, f"scoring took longer than {self.limits.timeout_s:g} s", type="server_error",
                           code="timeout") from None
        except FlexGuardError as e:
            raise APIError(502, f"moderator failed: {e}", type="server_error") from None
        self.m_items.labels(mode_label).inc(len(items))
        return results

    # -- responses ----------------------------------------------------------------------
    async def moderations(self, req: ModerationRequest) -> ModerationResponse:
        check_decision_args(self.policy, req.strictness, req.threshold)
        items = self.moderations_items(req)
        results = await self.score(items, "prompt")
        out = []
        for it, res in zip(items, results):
            rec = result_record(it, res, self.policy, strictness=req.strictness, threshold=req.threshold)
            named = res.categories or res.category
            out.append(ModerationResultOut(
                flagged=rec["flagged"], categories=openai_flags(rec["flagged"], named),
                category_scores=openai_category_scores(res.score, res.category_scores, named),
                category_applied_input_types={c: ["text"] for c in OPENAI_CATEGORIES},
                risk_score=rec["risk_score"], severity_tier=rec["tier"], category=rec["category"],
                decisions=rec["decisions"], margins=rec["margins"], thresholds=rec["thresholds"],
                threshold_used=rec["threshold"], parse_error=rec["parse_error"], decision=rec["decision"],
                review=rec["review"], reason=rec["reason"], error=rec["error"], truncated=rec["truncated"],
                in_scope=rec["in_scope"], language=rec["language"],
            ))
        return ModerationResponse(id=f"modr-{uuid.uuid4().hex[:24]}", model=req.model or self.name, results=out)

    async def moderate(self, req: ModerateRequest) -> ModerateResponse:
        check_decision_args(self.policy, req.strictness, req.threshold)
        items = self.moderate_items(req)
        results = await self.score(items, "mixed")
        return ModerateResponse(model=self.name, results=[
            NativeResult.from_record(result_record(it, res, self.policy, strictness=req.strictness, threshold=req.threshold))
            for it, res in zip(items, results)])

    def models(self) -> dict[str, Any]:
        return {"object": "list", "data": [{"id": self.name, "object": "model", "owned_by": "flexguard",
                                            "policy": self.policy.to_dict()}]}

"""The proxy's decisions: the user's turn before the upstream call, the answer after it or as it streams.

A request's conversation is moderated in prompt mode (every user turn; the riskiest decides,
:mod:`flexguard.conversation`). A flagged request never reaches the upstream server: it is
answered in OpenAI's shape with ``finish_reason: "content_filter"``. An answer is moderated
with its conversation in response mode: whole for ordinary requests, as it streams for
``stream: true`` (:class:`flexguard.stream.AsyncStreamModerator`, sharing the micro-batcher
with every other check). The proxy cannot send an item to a person, so ``review`` blocks like
``flag``: only ``allow`` passes. Scoring goes through the server's fair, bounded micro-batcher.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from dataclasses import dataclass
from typing import Any

from ..conversation import conversation_item
from ..data import InvalidItemsError, check_items, clean_item
from ..errors import DataError
from ..moderators import Moderator
from ..records import result_record
from ..schema import Item
from ..server.batcher import MicroBatcher, Overloaded
from ..server.protocol import APIError
from ..server.serving import ServerLimits, check_decision_args, items_error, overloaded_error
from ..stream import AsyncStreamModerator
from ..thresholds import Policy

#: Keys of a request body that are flexguard's, removed before the body goes upstream.
OWN_KEYS = ("strictness", "threshold")
#: Fields of a result record that travel with answers (``flexguard`` in the body).
SUMMARY = ("risk_score", "tier", "category", "decision", "flagged", "reason", "threshold", "in_scope", "truncated")


def message_text(content: Any) -> tuple[str, bool]:
    """A message's text (string, or the text parts of a list), and whether it had non-text parts."""
    if content is None:
        return "", False
    if isinstance(content, str):
        return content, False
    if isinstance(content, list):
        texts = [p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        return "\n".join(texts), len(texts) < len(content)
    raise APIError(400, "messages[].content must be a string or a list of content parts", param="messages")


def summary(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in SUMMARY}


@dataclass
class Guard:
    """Moderation for the proxy: request checks, answer checks, blocked answers."""

    moderator: Moderator
    policy: Policy
    limits: ServerLimits
    min_chars: int = 80
    check_chars: int = 400
    context_chars: int = 1500

    def __post_init__(self) -> None:
        self.batcher = MicroBatcher(self.moderator, max_batch=self.limits.max_batch, max_wait_ms=self.limits.max_wait_ms,
                                    max_queue=self.limits.max_queue)

    # -- requests ------------------------------------------------------------------------
    def decision_args(self, body: dict[str, Any]) -> tuple[str | None, float | None]:
        """``strictness`` / ``threshold`` of the request (taken out of the body), checked."""
        strictness, threshold = body.pop("strictness", None), body.pop("threshold", None)
        check_decision_args(self.policy, strictness, threshold)
        return strictness, threshold

    def conversation(self, body: dict[str, Any]) -> tuple[list[tuple[str, str]], bool]:
        """The request's ``(role, text)`` messages, and whether any had content that is not text."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise APIError(400, "'messages' must be a non-empty list", param="messages")
        out, non_text = [], False
        for k, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise APIError(400, f"messages[{k}] needs a role", param="messages")
            text, other = message_text(m.get("content"))
            non_text |= other
            if m["role"] in ("system", "developer", "user", "assistant"):
                out.append(("system" if m["role"] == "developer" else m["role"], text))
        return out, non_text

    def item(self, item_id: str, messages: list[tuple[str, str]]) -> Item:
        try:
            item = clean_item(conversation_item(item_id, messages))
            check_items([item], max_chars=self.limits.max_chars, what="message")
        except InvalidItemsError as e:
            raise items_error(e, "messages") from None
        except DataError as e:
            raise APIError(400, str(e), param="messages") from None
        return item

    async def judge(self, item: Item, *, non_text: bool, strictness: str | None, threshold: float | None
                    ) -> dict[str, Any]:
        """The result record of one item (conversations turn by turn); non-text content is out of scope."""
        try:
            [res] = await self.batcher.score([item])
        except Overloaded as e:
            raise overloaded_error(e, self.batcher) from None
        if non_text:  # images and other parts were not read: the policy decides (on_out_of_scope)
            res = dataclasses.replace(res, in_scope=False, language="non-text content")
        return result_record(item, res, self.policy, strictness=strictness, threshold=threshold)

    def stream_moderator(self, prompt: str, *, strictness: str | None, threshold: float | None) -> AsyncStreamModerator:
        return AsyncStreamModerator(self.moderator, self.policy, prompt=prompt, strictness=strictness,
                                    threshold=threshold, min_chars=self.min_chars, check_chars=self.check_chars,
                                    context_chars=self.context_chars, scorer=self.batcher.score)


# -- answers in OpenAI's shape --------------------------------------------------------------

def blocked_completion(model: str, stage: str, records: dict[str, Any]) -> dict[str, Any]:
    """A chat completion that says the request or answer was filtered (nothing of the answer in it)."""
    return {"id": f"chatcmpl-fg-{uuid.uuid4().hex[:20]}", "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [{"index": 0, "finish_reason": "content_filter", "logprobs": None,
                                         "message": {"role": "assistant", "content": ""}}],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
            "flexguard": {"blocked": stage, **records}}


def blocked_chunk(model: str, stage: str, records: dict[str, Any], chunk_id: str | None = None,
                  index: int = 0) -> dict[str, Any]:
    """The last stream chunk of a filtered answer."""
    return {"id": chunk_id or f"chatcmpl-fg-{uuid.uuid4().hex[:20]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model,
            "choices": [{"index": index, "delta": {"role": "assistant", "content": ""}, "finish_reason": "content_filter",
                         "logprobs": None}],
            "flexguard": {"blocked": stage, **records}}


def headers(records: dict[str, Any]) -> dict[str, str]:
    """``X-FlexGuard-*`` response headers from the stage records (the latest stage's risk)."""
    last = records.get("response") or records.get("prompt")
    out = {"X-FlexGuard-Decision": last["decision"]}
    if last["risk_score"] is not None:
        out["X-FlexGuard-Risk-Score"] = f"{last['risk_score']:.2f}"
    return out

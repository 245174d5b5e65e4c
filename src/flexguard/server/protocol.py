"""Request and response schemas (pydantic), mirroring OpenAI's moderation API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class ModerationRequest(BaseModel):
    """``POST /v1/moderations``: OpenAI's body plus optional ``strictness`` or ``threshold``."""

    model_config = ConfigDict(extra="forbid")
    input: str | list[str] | list[TextPart]
    model: str | None = None
    strictness: str | None = Field(default=None, description="regime whose decision is `flagged`")
    threshold: float | None = Field(default=None, ge=0, le=100, description="flag when risk_score > threshold")


class ModerationResultOut(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]]
    # flexguard extras
    risk_score: float | None
    severity_tier: str | None
    category: str | None
    decisions: dict[str, bool]
    margins: dict[str, float | None]
    thresholds: dict[str, float]
    threshold_used: float | None
    parse_error: bool = False
    decision: str = "allow"
    review: bool = False
    reason: str = "score"
    error: str | None = None
    truncated: bool = False
    in_scope: bool = True
    language: str | None = None


class ModerationResponse(BaseModel):
    id: str
    model: str
    results: list[ModerationResultOut]


class Message(BaseModel):
    role: Literal["user", "assistant", "system"]
    content: str


class NativeItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str | None = None
    prompt: str | None = None
    response: str | None = None
    messages: list[Message] | None = None


class ModerateRequest(BaseModel):
    """``POST /v1/moderate``: prompts or prompt+response pairs, in a batch."""

    model_config = ConfigDict(extra="forbid")
    items: list[NativeItem]
    strictness: str | None = None
    threshold: float | None = Field(default=None, ge=0, le=100)


class NativeResult(BaseModel):
    """One item of ``/v1/moderate``: the shared result record (:func:`flexguard.records.result_record`)."""

    id: str
    mode: str
    risk_score: float | None
    severity_tier: str | None
    category: str | None
    category_scores: dict[str, float] | None
    flagged: bool
    threshold_used: float | None
    decisions: dict[str, bool]
    margins: dict[str, float | None]
    margin: float | None
    parse_error: bool
    decision: str
    review: bool
    reason: str
    error: str | None
    truncated: bool
    in_scope: bool
    language: str | None
    latency_ms: float | None
    extras: dict[str, Any] = {}

    @classmethod
    def from_record(cls, rec: dict[str, Any]) -> "NativeResult":
        return cls(**{**rec, "severity_tier": rec["tier"], "threshold_used": rec["threshold"]})


class ModerateResponse(BaseModel):
    model: str
    results: list[NativeResult]


class ErrorBody(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error shape, so SDKs surface our errors as their own."""

    error: ErrorBody


class APIError(Exception):
    """An error answered to the client as an :class:`ErrorResponse` with an HTTP status."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.body = ErrorBody(message=message, type=type, param=param, code=code)
        self.headers = headers or {}

    def response(self) -> ErrorResponse:
        return ErrorResponse(error=self.body)

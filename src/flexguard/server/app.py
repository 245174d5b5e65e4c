"""FastAPI app: ``create_app(moderator, policy)`` and ``serve()`` for the CLI.

Routes are thin: they validate, hand items to the micro-batcher and shape the results.
Texts are never logged. Errors use OpenAI's JSON shape.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import os
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse

from ..crosswalk import OPENAI_CATEGORIES, TO_OPENAI, openai_category_scores
from ..errors import ConfigError, FlexGuardError
from ..moderators import Moderator
from ..schema import Item, ModerationResult
from ..thresholds import Policy
from .batcher import MicroBatcher
from .protocol import (ModerateRequest, ModerateResponse, ModerationRequest, ModerationResponse, ModerationResultOut,
                       NativeResult)

log = logging.getLogger(__name__)


@dataclass
class ServerLimits:
    max_items: int = 256
    max_chars: int = 32_000
    timeout_s: float = 30.0
    max_batch: int = 32
    max_wait_ms: float = 5.0


class APIError(Exception):
    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code


def _error(status: int, message: str, type: str, param: str | None = None, code: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"message": message, "type": type, "param": param, "code": code}})


def load_api_keys(path: str | None = None) -> list[str]:
    """Keys from ``FLEXGUARD_API_KEYS`` (comma-separated) and/or a file with one key per line."""
    keys = [k.strip() for k in os.environ.get("FLEXGUARD_API_KEYS", "").split(",") if k.strip()]
    if path:
        try:
            keys += [line.strip() for line in Path(path).read_text().splitlines() if line.strip() and not line.startswith("#")]
        except OSError as e:
            raise ConfigError(f"cannot read API keys file {path}: {e.strerror}") from None
    return keys


def _key_ok(given: str, keys: Sequence[str]) -> bool:
    ok = False
    for k in keys:  # compare against every key, in constant time, without short-circuit
        ok |= hmac.compare_digest(given.encode(), k.encode())
    return ok


def create_app(moderator: Moderator, policy: Policy | None = None, *, api_keys: Sequence[str] = (),
               limits: ServerLimits | None = None, cors_origins: Sequence[str] | None = None,
               model_name: str | None = None) -> FastAPI:
    """Build the app around one moderator and policy (state lives on ``app.state``)."""
    from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

    policy = policy or Policy()
    limits = limits or ServerLimits()
    name = model_name or moderator.info().get("model", moderator.name)
    batcher = MicroBatcher(moderator, max_batch=limits.max_batch, max_wait_ms=limits.max_wait_ms)
    registry = CollectorRegistry()
    m_requests = Counter("flexguard_requests_total", "HTTP requests", ["route", "status"], registry=registry)
    m_items = Counter("flexguard_items_total", "items scored", ["mode"], registry=registry)
    m_latency = Histogram("flexguard_request_seconds", "request latency", ["route"], registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await batcher.start()
        app.state.ready = True
        yield
        app.state.ready = False
        await batcher.stop()

    app = FastAPI(title="flexguard", version="1", lifespan=lifespan)
    app.state.moderator, app.state.policy, app.state.batcher, app.state.ready = moderator, policy, batcher, False
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        route = request.url.path
        if api_keys and route.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not token or not _key_ok(token, api_keys):
                m_requests.labels(route, "401").inc()
                return _error(401, "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
                              "invalid_request_error", code="invalid_api_key")
        response = await call_next(request)
        m_requests.labels(route, str(response.status_code)).inc()
        m_latency.labels(route).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return _error(e.status, e.message, e.type, e.param, e.code)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        msg = "malformed JSON body" if first.get("type") == "json_invalid" else f"{loc or 'body'}: {first.get('msg', 'invalid')}"
        return _error(400, f"Invalid request: {msg}", "invalid_request_error", param=loc or None)

    @app.exception_handler(FlexGuardError)
    async def flexguard_error(_: Request, e: FlexGuardError):
        return _error(400, str(e), "invalid_request_error")

    def check_decision_args(strictness: str | None, threshold: float | None) -> None:
        if strictness is not None and threshold is not None:
            raise APIError(400, "give 'strictness' or 'threshold', not both", param="strictness")
        if strictness is not None and strictness not in policy.regimes:
            raise APIError(400, f"unknown strictness {strictness!r}; use one of {', '.join(policy.regime_names)}",
                           param="strictness")

    def check_items(items: list[Item]) -> None:
        if not items:
            raise APIError(400, "no input given", param="input")
        if len(items) > limits.max_items:
            raise APIError(413, f"too many inputs: {len(items)} > limit of {limits.max_items} items per request",
                           param="input", code="too_many_items")
        for k, it in enumerate(items):
            for field_name, text in (("prompt", it.prompt), ("response", it.response)):
                if text is None:
                    continue
                if not text.strip():
                    raise APIError(400, f"input {k}: {field_name} is empty", param="input")
                if len(text) > limits.max_chars:
                    raise APIError(413, f"input {k}: {field_name} has {len(text)} characters > limit of "
                                   f"{limits.max_chars} characters per item", param="input", code="text_too_long")

    async def run(items: list[Item], mode_label: str) -> list[ModerationResult]:
        check_items(items)
        if not app.state.ready:
            raise APIError(503, "model is loading", type="server_error")
        try:
            results = await asyncio.wait_for(batcher.score(items), timeout=limits.timeout_s)
        except asyncio.TimeoutError:
            raise APIError(504, f"scoring took longer than {limits.timeout_s:g} s", type="server_error", code="timeout") from None
        except FlexGuardError as e:
            raise APIError(502, f"moderator failed: {e}", type="server_error") from None
        m_items.labels(mode_label).inc(len(items))
        return results

    def decisions(res: ModerationResult, mode: str, strictness: str | None, threshold: float | None):
        return policy.verdict(res.score, label=res.flagged, category=res.category, mode=mode, strictness=strictness,
                              threshold=threshold)

    @app.post("/v1/moderations", response_model=ModerationResponse)
    async def moderations(req: ModerationRequest) -> ModerationResponse:
        check_decision_args(req.strictness, req.threshold)
        texts = [req.input] if isinstance(req.input, str) else [x if isinstance(x, str) else x.text for x in req.input]
        items = [Item(id=str(k), prompt=t) for k, t in enumerate(texts)]
        results = await run(items, "prompt")
        out = []
        for res in results:
            v = decisions(res, "prompt", req.strictness, req.threshold)
            scores = openai_category_scores(res.score, res.category_scores, res.category)
            hit = set(TO_OPENAI[res.category]) if (v.flagged and res.category is not None) else set()
            out.append(ModerationResultOut(
                flagged=v.flagged, categories={c: c in hit for c in OPENAI_CATEGORIES}, category_scores=scores,
                category_applied_input_types={c: ["text"] for c in OPENAI_CATEGORIES},
                risk_score=res.score, severity_tier=None if res.tier is None else res.tier.value,
                category=None if res.category is None else res.category.value, decisions=v.decisions,
                margins=v.margins, thresholds=v.thresholds, threshold_used=v.threshold, parse_error=res.parse_error,
            ))
        return ModerationResponse(id=f"modr-{uuid.uuid4().hex[:24]}", model=req.model or name, results=out)

    @app.post("/v1/moderate", response_model=ModerateResponse)
    async def moderate(req: ModerateRequest) -> ModerateResponse:
        check_decision_args(req.strictness, req.threshold)
        items = []
        for k, it in enumerate(req.items):
            prompt, response = it.prompt, it.response
            if it.messages is not None:
                if prompt is not None or response is not None:
                    raise APIError(400, f"items[{k}]: give 'messages' or 'prompt'/'response', not both", param="items")
                users = [m.content for m in it.messages if m.role == "user"]
                bots = [m.content for m in it.messages if m.role == "assistant"]
                if not users:
                    raise APIError(400, f"items[{k}]: messages need a user turn", param="items")
                prompt, response = users[-1], (bots[-1] if bots else None)
            if prompt is None:
                raise APIError(400, f"items[{k}]: no prompt", param="items")
            items.append(Item(id=it.id or str(k), prompt=prompt, response=response))
        results = await run(items, "mixed")
        out = []
        for it, res in zip(items, results):
            v = decisions(res, it.mode, req.strictness, req.threshold)
            out.append(NativeResult(
                id=it.id, mode=it.mode, risk_score=res.score, severity_tier=None if res.tier is None else res.tier.value,
                category=None if res.category is None else res.category.value, category_scores=res.category_scores,
                flagged=v.flagged, threshold_used=v.threshold, decisions=v.decisions, margins=v.margins,
                margin=v.margin, parse_error=res.parse_error, latency_ms=res.latency_ms, extras=res.extras,
            ))
        return ModerateResponse(model=name, results=out)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not app.state.ready:
            return JSONResponse(status_code=503, content={"status": "loading"})
        return {"status": "ready", "model": name}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "flexguard",
                                            "policy": policy.to_dict()}]}

    return app


def serve(moderator: Moderator, policy: Policy | None = None, *, host: str = "127.0.0.1", port: int = 8000,
          api_keys_file: str | None = None, cors: Sequence[str] | None = None) -> None:
    """Run uvicorn around a loaded moderator (``flexguard serve``)."""
    import uvicorn

    keys = load_api_keys(api_keys_file)
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        log.warning("serving on %s without API keys: anyone who can reach it can use it", host)
    app = create_app(moderator, policy, api_keys=keys, cors_origins=cors or None)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)

"""The proxy's routes: ``/v1/chat/completions`` and ``/v1/models`` in front of an upstream server.

For each chat request: the conversation is moderated before anything goes upstream; a
flagged one is answered here with ``finish_reason: "content_filter"``. Otherwise the request
(without flexguard's own ``strictness`` / ``threshold``) goes upstream. An ordinary answer is
moderated whole; a streamed one as it streams: chunks are held back until a check has read
their text, and once a check flags the answer the stream ends with a ``content_filter``
chunk and the upstream request is closed. A client that disconnects closes the upstream
request too. Every answer carries ``flexguard`` (the stages' summaries) and ``X-FlexGuard-*``
headers. Auth keys work as in ``flexguard serve``; texts and keys are never logged.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Sequence

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from ..errors import FlexGuardError
from ..moderators import Moderator
from ..server.app import BodyLimit, _error, _key_ok, load_api_keys
from ..server.protocol import APIError
from ..server.serving import ServerLimits
from ..thresholds import Policy
from .guard import OWN_KEYS, Guard, blocked_chunk, blocked_completion, headers, message_text, summary
from .upstream import Upstream

log = logging.getLogger(__name__)


def _sse(obj: dict[str, Any] | str) -> bytes:
    data = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False)
    return f"data: {data}\n\n".encode()


def create_proxy_app(moderator: Moderator, upstream: str | Upstream, policy: Policy | None = None, *,
                     api_keys: Sequence[str] = (), limits: ServerLimits | None = None, upstream_key: str | None = None,
                     min_chars: int = 80, check_chars: int = 400) -> FastAPI:
    """A guardrail app around one moderator, in front of ``upstream`` (an OpenAI-compatible ``…/v1`` URL)."""
    from prometheus_client import CollectorRegistry, Counter, generate_latest

    guard = Guard(moderator, policy or Policy(), limits or ServerLimits(), min_chars=min_chars, check_chars=check_chars)
    up = upstream if isinstance(upstream, Upstream) else Upstream(upstream, api_key=upstream_key)
    registry = CollectorRegistry()
    m_requests = Counter("flexguard_proxy_requests_total", "chat requests", ["status"], registry=registry)
    m_blocked = Counter("flexguard_proxy_blocked_total", "requests and answers filtered", ["stage"], registry=registry)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await guard.batcher.start()
        yield
        await guard.batcher.stop()
        await up.close()

    app = FastAPI(title="flexguard proxy", version="1", lifespan=lifespan)
    app.state.guard, app.state.upstream = guard, up

    @app.middleware("http")
    async def auth(request: Request, call_next):
        if api_keys and request.url.path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not token or not _key_ok(token, api_keys):
                return _error(APIError(401, "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
                                       code="invalid_api_key"))
        try:
            return await call_next(request)
        except Exception:  # a bug, not the client's: OpenAI-shaped, never a bare traceback
            log.exception("internal error on %s", request.url.path)
            return _error(APIError(500, "internal server error", type="server_error"))

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        m_requests.labels(str(e.status)).inc()
        return _error(e)

    @app.exception_handler(FlexGuardError)
    async def flexguard_error(_: Request, e: FlexGuardError):
        return _error(APIError(400, str(e)))

    def client_auth(request: Request) -> str | None:
        return None if api_keys else request.headers.get("authorization")  # a proxy key never goes upstream

    @app.get("/v1/models")
    async def models(request: Request):
        resp = await up.get("/models", client_auth(request))
        return JSONResponse(status_code=resp.status_code, content=_json(resp))

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics():
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise APIError(400, "Invalid request: malformed JSON body") from None
        if not isinstance(body, dict):
            raise APIError(400, "Invalid request: the body must be a JSON object")
        strictness, threshold = guard.decision_args(body)
        messages, non_text = guard.conversation(body)
        model = str(body.get("model", ""))
        prompt_rec = await guard.judge(guard.item("request", messages), non_text=non_text, strictness=strictness,
                                       threshold=threshold)
        records: dict[str, Any] = {"prompt": summary(prompt_rec)}
        stream = bool(body.get("stream"))
        if prompt_rec["flagged"]:
            m_blocked.labels("prompt").inc()
            m_requests.labels("200").inc()
            if stream:
                return StreamingResponse(_one_chunk(blocked_chunk(model, "prompt", records)),
                                         media_type="text/event-stream", headers=headers(records))
            return JSONResponse(blocked_completion(model, "prompt", records), headers=headers(records))
        for key in OWN_KEYS:
            body.pop(key, None)
        auth_header = client_auth(request)
        if not stream:
            return await complete(body, messages, model, records, auth_header, strictness, threshold)
        resp = await up.open_stream("/chat/completions", body, auth_header)
        if resp.status_code != 200:  # the upstream's own error, passed on as it is
            try:
                content = _json(resp, await resp.aread())
            finally:
                await resp.aclose()
            m_requests.labels(str(resp.status_code)).inc()
            return JSONResponse(status_code=resp.status_code, content=content)
        m_requests.labels("200").inc()
        prompt = messages_last_user(messages)
        return StreamingResponse(relay(resp, prompt, model, records, strictness, threshold),
                                 media_type="text/event-stream", headers=headers(records))

    async def complete(body, messages, model, records, auth_header, strictness, threshold) -> JSONResponse:
        resp = await up.post("/chat/completions", body, auth_header)
        content = _json(resp)
        if resp.status_code != 200:
            m_requests.labels(str(resp.status_code)).inc()
            return JSONResponse(status_code=resp.status_code, content=content)
        choices = content.get("choices") if isinstance(content, dict) else None
        if not isinstance(choices, list) or not choices:
            raise APIError(502, "the upstream server's answer has no choices", type="server_error",
                           code="upstream_malformed")
        recs = []
        for choice in choices:
            text, non_text = message_text((choice.get("message") or {}).get("content"))
            item = guard.item("answer", messages + [("assistant", text)])
            rec = await guard.judge(item, non_text=non_text, strictness=strictness, threshold=threshold)
            recs.append(rec)
            if rec["flagged"]:  # nothing of a filtered answer reaches the client
                choice["message"] = {"role": "assistant", "content": ""}
                choice["finish_reason"] = "content_filter"
        worst = max(recs, key=lambda r: (r["flagged"], r["risk_score"] or 0.0))
        records["response"] = summary(worst)
        if worst["flagged"]:
            m_blocked.labels("response").inc()
        content["flexguard"] = {"blocked": "response" if worst["flagged"] else None, **records}
        m_requests.labels("200").inc()
        return JSONResponse(content, headers=headers(records))

    async def relay(resp, prompt, model, records, strictness, threshold) -> AsyncIterator[bytes]:
        """Upstream chunks, each released once a check has read its text; a flag ends the stream."""
        moderators: dict[int, Any] = {}
        held: list[dict[str, Any]] = []  # chunks whose text no check has passed yet, or that end a choice
        try:
            async for chunk in up.events(resp):
                if chunk is None:
                    break
                if "error" in chunk and not chunk.get("choices"):
                    yield _sse(chunk)  # the upstream's own error event: pass it on and stop
                    return
                held.append(chunk)
                for choice in chunk.get("choices") or []:
                    idx = int(choice.get("index", 0))
                    sm = moderators.setdefault(idx, guard.stream_moderator(prompt, strictness=strictness,
                                                                           threshold=threshold))
                    delta = (choice.get("delta") or {}).get("content") or ""
                    update = await sm.afeed(delta)
                    if update.flagged:
                        yield _sse(stream_blocked(model, records, update.record, chunk.get("id"), idx))
                        yield _sse("[DONE]")
                        return
                if all(sm.released == len(sm.text) for sm in moderators.values()) and not _ends(held[-1]):
                    for c in held:
                        yield _sse(c)
                    held.clear()
            for idx, sm in moderators.items():  # the answer is complete: check what is left
                update = await sm.afinish()
                if update.flagged:
                    yield _sse(stream_blocked(model, records, update.record, held[-1].get("id") if held else None, idx))
                    yield _sse("[DONE]")
                    return
            last = next(iter(moderators.values())).record if moderators else None
            if last is not None:
                records["response"] = summary(last)
            for c in held:
                if _ends(c):
                    c["flexguard"] = {"blocked": None, **records}
                yield _sse(c)
            yield _sse("[DONE]")
        except APIError as e:  # headers are sent: the error travels as an event, as OpenAI's SDK expects
            yield _sse(e.response().model_dump())
        finally:
            await resp.aclose()  # stop reading upstream: on a flag, an error or a client that left

    def stream_blocked(model, records, rec, chunk_id, idx) -> dict[str, Any]:
        records["response"] = summary(rec)
        m_blocked.labels("response").inc()
        return blocked_chunk(model, "response", records, chunk_id, idx)

    app.add_middleware(BodyLimit, max_bytes=guard.limits.max_body_bytes)
    return app


def messages_last_user(messages: list[tuple[str, str]]) -> str:
    return next(text for role, text in reversed(messages) if role == "user")


def _ends(chunk: dict[str, Any]) -> bool:
    return any(c.get("finish_reason") for c in chunk.get("choices") or [])


def _json(resp, raw: bytes | None = None) -> Any:
    try:
        return json.loads(raw if raw is not None else resp.content)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise APIError(502, f"the upstream server answered {resp.status_code} with a body that is not JSON",
                       type="server_error", code="upstream_malformed") from None


async def _one_chunk(chunk: dict[str, Any]) -> AsyncIterator[bytes]:
    yield _sse(chunk)
    yield _sse("[DONE]")


def run_proxy(moderator: Moderator, upstream: str, policy: Policy | None = None, *, host: str = "127.0.0.1",
              port: int = 8080, api_keys_file: str | None = None, upstream_key: str | None = None,
              min_chars: int = 80, check_chars: int = 400) -> None:
    """Run uvicorn around the proxy (``flexguard proxy``)."""
    import os

    import uvicorn

    keys = load_api_keys(api_keys_file)
    if host not in ("127.0.0.1", "localhost", "::1") and not keys:
        log.warning("proxying on %s without API keys: anyone who can reach it can use the upstream model", host)
    key = upstream_key or os.environ.get("FLEXGUARD_UPSTREAM_API_KEY")
    app = create_proxy_app(moderator, upstream, policy, api_keys=keys, upstream_key=key, min_chars=min_chars,
                           check_chars=check_chars)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=True)

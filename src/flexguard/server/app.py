"""The HTTP routes: ``create_app(moderator, policy)`` and ``serve()`` for the CLI.

Routes are thin: they parse the request and hand it to the
:class:`~flexguard.server.serving.ModerationService` on ``app.state.service``. Texts are
never logged. Errors use OpenAI's JSON shape (:class:`~flexguard.server.protocol.ErrorResponse`).
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Sequence

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.requests import ClientDisconnect

from ..errors import ConfigError, FlexGuardError
from ..moderators import Moderator
from ..thresholds import Policy
from .protocol import APIError, ModerateRequest, ModerateResponse, ModerationRequest, ModerationResponse
from .serving import ModerationService, ServerLimits

log = logging.getLogger(__name__)

__all__ = ["ServerLimits", "create_app", "load_api_keys", "serve"]


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


def _error(e: APIError) -> JSONResponse:
    return JSONResponse(status_code=e.status, content=e.response().model_dump(), headers=e.headers)


class BodyLimit:
    """ASGI middleware: refuse a request body over ``max_bytes`` before it is read, let alone parsed.

    A declared ``Content-Length`` over the limit is answered 413 at once. A body that streams
    past the limit without one is answered 413 where it passes it; the app then sees the
    client as gone, and anything it still sends is dropped.
    """

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = _error(APIError(413, f"request body over the limit of {self.max_bytes} bytes", code="body_too_large"))
        try:
            if declared is not None and int(declared) > self.max_bytes:
                return await too_big(scope, receive, send)
        except ValueError:
            return await _error(APIError(400, "malformed Content-Length header"))(scope, receive, send)
        seen, answered = 0, False

        async def limited_receive():
            nonlocal seen, answered
            if answered:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    answered = True
                    await too_big(scope, receive, send)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message):
            if not answered:
                await send(message)

        await self.app(scope, limited_receive, guarded_send)


def create_app(moderator: Moderator, policy: Policy | None = None, *, api_keys: Sequence[str] = (),
               limits: ServerLimits | None = None, cors_origins: Sequence[str] | None = None,
               model_name: str | None = None) -> FastAPI:
    """Build the app around one moderator and policy (the service lives on ``app.state.service``)."""
    from prometheus_client import generate_latest

    service = ModerationService(moderator, policy or Policy(), limits or ServerLimits(), model_name=model_name)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await service.start()
        yield
        await service.stop()

    app = FastAPI(title="flexguard", version="1", lifespan=lifespan)
    app.state.service = service
    known_paths: set[str] = set()  # filled once the routes below exist: metrics never label by a raw URL
    if cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    @app.middleware("http")
    async def auth_and_metrics(request: Request, call_next):
        t0 = time.perf_counter()
        path = request.url.path
        route = path if path in known_paths else "other"
        if api_keys and path.startswith("/v1/"):
            header = request.headers.get("authorization", "")
            token = header[7:] if header.lower().startswith("bearer ") else ""
            if not token or not _key_ok(token, api_keys):
                service.m_requests.labels(route, "401").inc()
                return _error(APIError(401, "Incorrect or missing API key. Pass it as 'Authorization: Bearer <key>'.",
                                       code="invalid_api_key"))
        try:
            response = await call_next(request)
        except ClientDisconnect:  # the client left, or BodyLimit answered 413 mid-body: nothing more to send
            response = Response(status_code=499)
        except Exception:  # a bug, not the client's fault: an OpenAI-shaped 500, counted like any other answer
            log.exception("internal error on %s", route)
            response = _error(APIError(500, "internal server error", type="server_error"))
        service.m_requests.labels(route, str(response.status_code)).inc()
        service.m_latency.labels(route).observe(time.perf_counter() - t0)
        return response

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return _error(e)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {}
        loc = ".".join(str(x) for x in first.get("loc", []) if x != "body")
        msg = "malformed JSON body" if first.get("type") == "json_invalid" else f"{loc or 'body'}: {first.get('msg', 'invalid')}"
        return _error(APIError(400, f"Invalid request: {msg}", param=loc or None))

    @app.exception_handler(FlexGuardError)
    async def flexguard_error(_: Request, e: FlexGuardError):
        return _error(APIError(400, str(e)))

    @app.post("/v1/moderations", response_model=ModerationResponse)
    async def moderations(req: ModerationRequest) -> ModerationResponse:
        return await service.moderations(req)

    @app.post("/v1/moderate", response_model=ModerateResponse)
    async def moderate(req: ModerateRequest) -> ModerateResponse:
        return await service.moderate(req)

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz():
        if not service.ready:
            return JSONResponse(status_code=503, content={"status": "loading"})
        return {"status": "ready", "model": service.name}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(generate_latest(service.registry).decode(), media_type="text/plain; version=0.0.4")

    @app.get("/v1/models")
    async def models():
        return service.models()

    known_paths.update(getattr(r, "path", "") for r in app.routes)
    app.add_middleware(BodyLimit, max_bytes=service.limits.max_body_bytes)
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

"""The upstream OpenAI-compatible server: JSON calls and streamed (SSE) chat completions.

Every failure to reach it becomes an :class:`~flexguard.server.protocol.APIError` in OpenAI's
shape: 502 when it cannot be reached or answers garbage, 504 when it is too slow. Its own
error answers (4xx/5xx with a JSON body) are passed through unchanged. Keys are sent, never
logged; texts are never logged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator

import httpx

from ..server.protocol import APIError


@dataclass
class Upstream:
    """An OpenAI-compatible base URL (ending in ``/v1``) and how to call it."""

    base_url: str
    api_key: str | None = None
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(self.timeout_s, connect=self.connect_timeout_s))

    async def close(self) -> None:
        await self.client.aclose()

    def headers(self, client_auth: str | None) -> dict[str, str]:
        """The configured key, else the client's own ``Authorization`` (passed through)."""
        if self.api_key:
            return {"Authorization": f"Bearer {self.api_key}"}
        return {"Authorization": client_auth} if client_auth else {}

    def _failed(self, e: Exception) -> APIError:
        if isinstance(e, httpx.TimeoutException):
            return APIError(504, f"the upstream server did not answer within {self.timeout_s:g} s", type="server_error",
                            code="upstream_timeout")
        return APIError(502, f"the upstream server cannot be reached ({type(e).__name__})", type="server_error",
                        code="upstream_unreachable")

    async def get(self, path: str, client_auth: str | None) -> httpx.Response:
        try:
            return await self.client.get(self.base_url + path, headers=self.headers(client_auth))
        except httpx.HTTPError as e:
            raise self._failed(e) from None

    async def post(self, path: str, body: dict[str, Any], client_auth: str | None) -> httpx.Response:
        try:
            return await self.client.post(self.base_url + path, json=body, headers=self.headers(client_auth))
        except httpx.HTTPError as e:
            raise self._failed(e) from None

    async def open_stream(self, path: str, body: dict[str, Any], client_auth: str | None) -> httpx.Response:
        """Send a streaming request; the caller reads :func:`events` and must ``aclose()`` the response."""
        req = self.client.build_request("POST", self.base_url + path, json=body, headers=self.headers(client_auth))
        try:
            return await self.client.send(req, stream=True)
        except httpx.HTTPError as e:
            raise self._failed(e) from None

    async def events(self, resp: httpx.Response) -> AsyncIterator[dict[str, Any] | None]:
        """The JSON chunks of an SSE response; ``None`` for ``[DONE]``. A malformed event raises 502."""
        try:
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue  # comments, event names, blank separators
                data = line[5:].strip()
                if data == "[DONE]":
                    yield None
                    return
                try:
                    chunk = json.loads(data)
                except json.JSONDecodeError:
                    raise APIError(502, "the upstream server sent a malformed stream chunk", type="server_error",
                                   code="upstream_malformed") from None
                if not isinstance(chunk, dict):
                    raise APIError(502, "the upstream server sent a stream chunk that is not an object",
                                   type="server_error", code="upstream_malformed")
                yield chunk
        except httpx.HTTPError as e:
            raise self._failed(e) from None

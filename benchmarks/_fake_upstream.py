"""A fake OpenAI-compatible LLM server for the proxy benchmark: streams a fixed answer at a fixed rate.

    python benchmarks/_fake_upstream.py PORT [TOKENS_PER_S] [TOKENS]
"""

from __future__ import annotations

import asyncio
import json
import sys

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

WORDS = ("The capital of France is Paris. It is known for its museums, its cafes and the river that runs "
         "through it. Many visitors come every year to walk along the quays and look at the old bridges. ").split()


def make_app(tokens_per_s: float, tokens: int) -> FastAPI:
    app = FastAPI()
    delay = 1.0 / tokens_per_s
    words = [WORDS[k % len(WORDS)] for k in range(tokens)]

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()

        def chunk(delta, finish=None):
            return "data: " + json.dumps({"id": "up", "object": "chat.completion.chunk", "created": 0,
                                          "model": body.get("model", "m"),
                                          "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}) + "\n\n"

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            for w in words:
                await asyncio.sleep(delay)
                yield chunk({"content": w + " "})
            yield chunk({}, "stop")
            yield "data: [DONE]\n\n"

        if body.get("stream"):
            return StreamingResponse(events(), media_type="text/event-stream")
        await asyncio.sleep(delay * len(words))
        return {"id": "up", "object": "chat.completion", "created": 0, "model": body.get("model", "m"),
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": " ".join(words)}}]}

    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    rate = float(sys.argv[2]) if len(sys.argv) > 2 else 50.0
    n = int(sys.argv[3]) if len(sys.argv) > 3 else 100
    uvicorn.run(make_app(rate, n), host="127.0.0.1", port=port, log_level="warning")

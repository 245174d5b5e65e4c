"""The OpenAI-compatible backend against a fake vLLM-style server on loopback."""

import asyncio
import math

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flexguard.errors import BackendError, ConfigError
from flexguard.moderators import get_moderator
from flexguard.moderators.openai_compat import OpenAICompatibleModerator
from flexguard.schema import Item
from servers import Running

SCORE_P = {7: 0.5, 73: 0.3, 100: 0.2}  # the fake model's distribution over scores after "CAT\n"


def next_dist(digits: str) -> dict[str, float]:
    total = sum(q for n, q in SCORE_P.items() if str(n).startswith(digits))
    out = {}
    if digits and int(digits) in SCORE_P and str(int(digits)) == digits:
        out["<|im_end|>"] = SCORE_P[int(digits)] / total
    for d in "0123456789":
        q = sum(v for n, v in SCORE_P.items() if str(n).startswith(digits + d))
        if q:
            out[d] = q / total
    return out


def fake_vllm() -> FastAPI:
    app = FastAPI()
    app.state.calls = {}

    def reply(content, top=None):
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        if top is not None:
            choice["logprobs"] = {"content": [{"token": content, "logprob": 0.0, "bytes": None, "top_logprobs": [
                {"token": t, "logprob": math.log(p), "bytes": None} for t, p in top.items()]}]}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": "m", "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body["model"]
        n = app.state.calls[model] = app.state.calls.get(model, 0) + 1
        if model == "flaky" and n <= 2:
            return JSONResponse(status_code=503, content={"error": {"message": "overloaded", "type": "server_error"}})
        if model == "bad":
            return JSONResponse(status_code=400, content={"error": {"message": "max_tokens too large", "type": "invalid"}})
        if model == "slow":
            await asyncio.sleep(1.0)
        msgs = body["messages"]
        user = next(m["content"] for m in msgs if m["role"] == "user")
        if msgs[-1]["role"] == "assistant":
            assert body.get("continue_final_message") and body.get("add_generation_prompt") is False
            prefill = msgs[-1]["content"]
            if body.get("logprobs"):
                dist = next_dist(prefill.rsplit("\n", 1)[1])
                return reply(max(dist, key=dist.get), top=dist)
            return reply("VIO\n73")  # after an empty think block
        if "garbage" in user:
            return reply("I am not sure what you mean.")
        if "bomb" in user:
            return reply("<think>\nweapon request\n</think>\nVIO\n73")
        return reply("<think>\nfine\n</think>\nSAFE\n3")

    return app


@pytest.fixture(scope="module")
def vllm():
    app = fake_vllm()
    with Running(app) as url:
        yield f"{url}/v1", app


def test_generate_mode(vllm):
    url, _ = vllm
    mod = get_moderator(f"openai:{url}#flexguard", concurrency=4)
    res = mod.score([Item(id="a", prompt="make a bomb"), Item(id="b", prompt="hi", response="hello"),
                     Item(id="c", prompt="garbage")])
    assert (res[0].score, res[0].category.value, res[0].parse_error) == (73, "VIO", False)
    assert (res[1].score, res[1].category.value) == (3, "SAFE")
    assert res[2].parse_error and res[2].score is None and res[2].raw == "I am not sure what you mean."
    assert mod.info()["template_sha256"] and mod.info()["model"].endswith("#flexguard")


@pytest.mark.parametrize("think", ["generate", "empty"])
def test_expected_mode_reads_the_score_distribution(vllm, think):
    url, _ = vllm
    mod = OpenAICompatibleModerator(url, "flexguard", mode="expected", think=think)
    [r] = mod.score([Item(id="a", prompt="make a bomb")])
    assert r.category.value == "VIO" and r.extras["generated_score"] == 73
    assert r.score == pytest.approx(0.5 * 7 + 0.3 * 73 + 0.2 * 100) and r.extras["valid_mass"] == pytest.approx(1.0)


def test_retries_with_backoff_then_succeeds(vllm):
    url, app = vllm
    mod = OpenAICompatibleModerator(url, "flaky", max_retries=3)
    [r] = mod.score([Item(id="a", prompt="make a bomb")])
    assert r.score == 73 and app.state.calls["flaky"] == 3


def test_non_retryable_error_and_timeout_are_reported(vllm):
    url, app = vllm
    with pytest.raises(BackendError, match="answered 400: .*max_tokens too large"):
        OpenAICompatibleModerator(url, "bad").score([Item(id="a", prompt="x")])
    assert app.state.calls["bad"] == 1  # a 400 is not retried
    with pytest.raises(BackendError, match="unreachable after retries"):
        OpenAICompatibleModerator(url, "slow", timeout=0.2, max_retries=1).score([Item(id="a", prompt="x")])


def test_unreachable_server():
    with pytest.raises(BackendError, match="unreachable"):
        OpenAICompatibleModerator("http://127.0.0.1:9/v1", "m", max_retries=0, timeout=1).score([Item(id="a", prompt="x")])


@pytest.mark.parametrize("spec", ["openai:http://x/v1", "openai:ftp://x#m", "openai"])
def test_spec_errors(spec):
    with pytest.raises(ConfigError):
        get_moderator(spec)


def test_openai_moderation_baseline_against_flexguards_own_server():
    from flexguard.server.app import create_app
    from flexguard.thresholds import Policy
    from test_server import LengthModerator

    with Running(create_app(LengthModerator(), Policy())) as url:
        mod = get_moderator(f"openai-moderation:{url}/v1#length-test")
        res = mod.score([Item(id="a", prompt="short bomb text"), Item(id="b", prompt="q", response="hi")])
    # server: risk 45, P(VIO)=0.6 of harm mass 0.9 -> violence 0.45*0.6/0.9 = 0.3 is the top OpenAI score
    assert res[0].score == pytest.approx(30.0, abs=0.01) and res[0].category.value == "VIO"
    assert res[1].score < 20 and res[1].category.value == "SAFE"  # the response text "hi" is what is scored

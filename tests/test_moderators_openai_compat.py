"""The OpenAI-compatible backend against a fake vLLM-style server on loopback."""

import asyncio
import math
import re

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from flexguard.errors import BackendError, ConfigError
from flexguard.moderators import get_moderator
from flexguard.moderators.openai_compat import OpenAICompatibleModerator
from flexguard.schema import Item
from servers import Running
from tiny_models import qwen3_tokenizer_dir

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
    """A vLLM-shaped server that renders chats with the real Qwen3 chat template, as vLLM does.

    So it answers 400 where vLLM does: a prefilled assistant turn with ``continue_final_message``
    whose ``<think>`` block the template rewrites. ``/v1/completions`` checks that its prompt is a
    Qwen3-rendered chat and answers from the fake distribution below.
    """
    from tiny_models import qwen3_tokenizer

    tok = qwen3_tokenizer()
    app = FastAPI()
    app.state.calls = {}

    def answer(prompt_text: str) -> str:
        if "garbage" in prompt_text:
            return "I am not sure what you mean."
        if "bomb" in prompt_text:
            return "<think>\nweapon request\n</think>\nVIO\n73"
        if "too long" in prompt_text:
            return None
        return "<think>\nfine\n</think>\nSAFE\n3"

    def count(model):
        n = app.state.calls[model] = app.state.calls.get(model, 0) + 1
        if model == "flaky" and n <= 2:
            return JSONResponse(status_code=503, content={"error": {"message": "overloaded", "type": "server_error"}})
        if model == "bad":
            return JSONResponse(status_code=400, content={"error": {"message": "max_tokens too large", "type": "invalid"}})
        return None

    def refuse(message):
        return JSONResponse(status_code=400, content={"error": {"message": message, "type": "BadRequestError"}})

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        if (err := count(body["model"])) is not None:
            return err
        if body["model"] == "slow":
            await asyncio.sleep(1.0)
        msgs = body["messages"]
        try:
            prompt = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=msgs[-1]["role"] != "assistant",
                                             continue_final_message=bool(body.get("continue_final_message")))
        except ValueError as e:  # what vLLM answers when the template rewrites the prefilled turn
            return refuse(str(e))
        content = answer(prompt)
        if content is None:
            return refuse("This model's maximum context length is 8192 tokens.")
        choice = {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}
        return {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

    @app.post("/v1/completions")
    async def completions(request: Request):
        body = await request.json()
        if (err := count(body["model"])) is not None:
            return err
        prompt = body["prompt"]
        if not (prompt.startswith("<|im_start|>system\n") and "<|im_end|>\n<|im_start|>assistant\n" in prompt):
            return refuse("not a chat rendered with the checkpoint's template")
        app.state.prompts = getattr(app.state, "prompts", []) + [prompt]
        answer_so_far = prompt.split("<|im_start|>assistant\n", 1)[1]
        text, lp = "", None
        if body.get("logprobs"):
            dist = next_dist(answer_so_far.rsplit("\n", 1)[1])
            text = max(dist, key=dist.get)
            lp = {"tokens": [text], "token_logprobs": [0.0], "text_offset": [0],
                  "top_logprobs": [{t: math.log(q) for t, q in dist.items()}]}
        elif answer_so_far.endswith("</think>\n"):
            text = "VIO\n73"  # after an empty think block
        choice = {"index": 0, "text": text, "finish_reason": "stop", "logprobs": lp}
        return {"id": "x", "object": "text_completion", "created": 0, "model": body["model"], "choices": [choice],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}

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
    url, app = vllm
    mod = OpenAICompatibleModerator(url, "flexguard", mode="expected", think=think, tokenizer=qwen3_tokenizer_dir())
    [r] = mod.score([Item(id="a", prompt="make a bomb")])
    assert r.category.value == "VIO" and r.extras["generated_score"] == 73
    assert r.score == pytest.approx(0.5 * 7 + 0.3 * 73 + 0.2 * 100) and r.extras["valid_mass"] == pytest.approx(1.0)
    # every scoring request continued the answer as text after the checkpoint's own rendering
    ends = sorted(p.rsplit("VIO\n", 1)[1] for p in app.state.prompts[-6:])
    assert ends == ["", "1", "10", "100", "7", "73"]  # one request per likely numeric prefix


def test_a_prefilled_chat_turn_is_what_vllm_refuses():
    """The old request shape (continue_final_message) against Qwen3's real template: HTTP 400."""
    import openai

    with Running(fake_vllm()) as url:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.BadRequestError, match="final message does not appear"):
            client.chat.completions.create(model="m", max_tokens=1, messages=[
                {"role": "user", "content": "x"}, {"role": "assistant", "content": "<think>\n\n</think>\nVIO\n"}],
                extra_body={"continue_final_message": True, "add_generation_prompt": False})


def test_expected_mode_needs_a_tokenizer_with_a_chat_template(vllm):
    url, _ = vllm
    with pytest.raises(ConfigError, match="tokenizer=HUB_ID_OR_FOLDER"):
        OpenAICompatibleModerator(url, "no-such-model-here", mode="expected")


def test_an_item_the_server_refuses_fails_alone(vllm):
    url, _ = vllm
    mod = OpenAICompatibleModerator(url, "flexguard")
    ok, refused = mod.score([Item(id="a", prompt="make a bomb"), Item(id="b", prompt="too long text")])
    assert ok.score == 73 and refused.score is None and "maximum context length" in refused.error


def test_retries_with_backoff_then_succeeds(vllm):
    url, app = vllm
    mod = OpenAICompatibleModerator(url, "flaky", max_retries=3)
    [r] = mod.score([Item(id="a", prompt="make a bomb")])
    assert r.score == 73 and app.state.calls["flaky"] == 3


def test_non_retryable_error_and_timeout_are_reported(vllm):
    url, app = vllm
    [r] = OpenAICompatibleModerator(url, "bad").score([Item(id="a", prompt="x")])
    assert r.score is None and re.search("answered 400: .*max_tokens too large", r.error)  # this item only: not raised
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

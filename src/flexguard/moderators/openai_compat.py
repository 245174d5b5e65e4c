"""FlexGuard over any OpenAI-compatible chat endpoint, above all ``vllm serve`` (the scale-out path).

Serve a checkpoint with vLLM on a GPU machine::

    vllm serve Tommy-DING/FlexGuard-Qwen3-8B --served-model-name flexguard \\
        --max-model-len 8192 --max-logprobs 20 --enable-prefix-caching

and point flexguard at it: ``--model openai:http://HOST:8000/v1#flexguard``.

``generate`` sends the rendered chat and parses the answer. ``expected`` then reads the
score distribution from token logprobs: the answer up to the category line is sent back
as a *prefilled* assistant turn (vLLM's ``continue_final_message``), and the distribution
over "0" … "100" is assembled digit by digit from one-token requests with ``top_logprobs``
(one per likely numeric prefix: a peaked model needs a handful), which prefix caching
makes cheap.
Requests run concurrently; the ``openai`` client retries connection errors, 429 and 5xx
with exponential backoff and enforces the timeout.
"""

from __future__ import annotations

import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Sequence

from ..errors import BackendError, ConfigError
from ..schema import Item, ModerationResult
from ..template import DEFAULT_TEMPLATE, EMPTY_THINK, PromptTemplate, check_modes
from .llm import ScoreCondition, generated_result

END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>", "")
PREFILL = {"continue_final_message": True, "add_generation_prompt": False}


def parse_spec_url(arg: str) -> tuple[str, str]:
    url, sep, model = arg.partition("#")
    if not url.startswith(("http://", "https://")) or not sep or not model:
        raise ConfigError(f"expected --model openai:URL#MODEL (e.g. openai:http://127.0.0.1:8000/v1#flexguard), got {arg!r}")
    return url.rstrip("/"), model


class OpenAICompatibleModerator:
    """Chat-completions client for FlexGuard models served by vLLM (or anything compatible).

    Parameters
    ----------
    base_url, model : endpoint (ending in ``/v1``) and served model name.
    api_key : defaults to ``$OPENAI_API_KEY`` or ``"EMPTY"`` (vLLM's convention).
    mode, think, template, max_tokens, temperature : as for the ``hf`` backend.
    concurrency : requests in flight; timeout : seconds per request; max_retries : per request.
    prune : in ``expected`` mode, numeric prefixes less likely than this are not expanded.
    """

    name = "openai"
    supports_response_mode = True
    supports_logprobs = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, mode: str = "generate",
                 think: str = "generate", template: str = DEFAULT_TEMPLATE, max_tokens: int = 512,
                 temperature: float = 0.0, concurrency: int = 8, timeout: float = 60.0, max_retries: int = 3,
                 min_mass: float = 1e-4, prune: float = 1e-3):
        check_modes(mode, think)
        try:
            import openai
        except ImportError:  # pragma: no cover - part of the llm extra
            raise BackendError("the openai backend needs the 'openai' package: pip install 'flexguard[llm]'") from None
        self.base_url, self.model, self.mode, self.think = base_url, model, mode, think
        self.template = PromptTemplate.load(template)
        self.max_tokens, self.temperature, self.concurrency, self.min_mass = max_tokens, temperature, concurrency, min_mass
        self.prune = prune
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                                    timeout=timeout, max_retries=max_retries)
        self._openai = openai

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "OpenAICompatibleModerator":
        if not arg:
            raise ConfigError("the openai backend needs an endpoint: --model openai:URL#MODEL")
        return cls(*parse_spec_url(arg), **options)

    def info(self) -> dict[str, Any]:
        return {"model": f"openai:{self.base_url}#{self.model}", "revision": None, "template_sha256": self.template.sha256,
                "template": self.template.name, "mode": self.mode, "think": self.think, "temperature": self.temperature}

    # -- requests ----------------------------------------------------------------------
    def _chat(self, messages: list[dict], *, max_tokens: int, prefill: str | None = None, logprobs: bool = False):
        msgs = list(messages) + ([{"role": "assistant", "content": prefill}] if prefill is not None else [])
        kw: dict[str, Any] = {"extra_body": PREFILL} if prefill is not None else {}
        if logprobs:
            kw.update(logprobs=True, top_logprobs=20)
        try:
            return self.client.chat.completions.create(model=self.model, messages=msgs, max_tokens=max_tokens,
                                                       temperature=self.temperature, **kw)
        except self._openai.APIStatusError as e:
            raise BackendError(f"{self.base_url} answered {e.status_code}: {e.message}") from None
        except (self._openai.APIConnectionError, self._openai.APITimeoutError) as e:
            raise BackendError(f"{self.base_url} unreachable after retries: {e}") from None

    def _next_token(self, messages: list[dict], prefill: str) -> dict[str, float]:
        """Top-20 next-token probabilities after a prefilled assistant turn (end tokens as "")."""
        resp = self._chat(messages, max_tokens=1, prefill=prefill, logprobs=True)
        content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
        if not content:
            return {}
        out: dict[str, float] = {}
        for t in content[0].top_logprobs:
            key = "" if t.token in END_TOKENS else t.token
            out[key] = out.get(key, 0.0) + math.exp(t.logprob)
        return out

    def score_distribution(self, messages: list[dict], prefix: str) -> list[float]:
        """P(n), n = 0..100: a digit-by-digit expansion of the model's next-token probabilities.

        Each numeric prefix with probability at least ``prune`` is extended by one request
        (its next digit, or the end of the answer); ``P(n) = P(digits of n) · P(end | n)``.
        Pruned branches and invalid continuations (leading zeros, > 100, no end) are simply
        not counted, so they show up as missing valid mass instead of being guessed.
        """
        p = [0.0] * 101
        frontier = [("", 1.0)]
        with ThreadPoolExecutor(min(self.concurrency, 10) or 1) as pool:
            while frontier:
                dists = list(pool.map(lambda sq: self._next_token(messages, prefix + sq[0]), frontier))
                nxt = []
                for (digits, q), dist in zip(frontier, dists):
                    if digits:
                        p[int(digits)] += q * dist.get("", 0.0)
                    if digits == "0":
                        continue  # "0" followed by more digits is not a valid score
                    for d in "0123456789":
                        cand = digits + d
                        if dist.get(d, 0.0) * q >= self.prune and int(cand) <= 100:
                            nxt.append((cand, q * dist[d]))
                frontier = nxt
        return p

    def _one(self, item: Item) -> ModerationResult:
        t0 = time.perf_counter()
        messages = self.template.messages(item)
        if self.think == "empty":
            budget = 8 if self.mode == "expected" else self.max_tokens
            text = EMPTY_THINK + (self._chat(messages, max_tokens=budget, prefill=EMPTY_THINK).choices[0].message.content or "")
        else:
            text = self._chat(messages, max_tokens=self.max_tokens).choices[0].message.content or ""
        if self.mode == "generate":
            return generated_result(item.id, text, latency_ms=round((time.perf_counter() - t0) * 1000, 3))
        cond = ScoreCondition.of(text, empty_think=self.think == "empty")
        if cond.prefix is None:
            return cond.error_result(item.id, latency_ms=round((time.perf_counter() - t0) * 1000, 3))
        p = self.score_distribution(messages, cond.prefix)
        return cond.result(item.id, p, min_mass=self.min_mass, latency_ms=round((time.perf_counter() - t0) * 1000, 3))

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, items))

"""FlexGuard over any OpenAI-compatible chat endpoint, above all ``vllm serve`` (the scale-out path).

Serve a checkpoint with vLLM on a GPU machine::

    vllm serve Tommy-DING/FlexGuard-Qwen3-8B --served-model-name flexguard \\
        --max-model-len 8192 --max-logprobs 20 --enable-prefix-caching

and point flexguard at it: ``--model openai:http://HOST:8000/v1#flexguard``.

``generate`` (with the model's own reasoning) sends the chat to ``/v1/chat/completions``
and parses the answer. Everything that continues a partly written answer (``think=empty``,
and ``expected`` mode, which reads the score distribution after the category line) goes to
``/v1/completions`` instead, with the prompt rendered here by the checkpoint's own chat
template (``tokenizer``: a Hub id or folder; default: the served model name) and the answer
so far appended as text. A prefilled assistant turn on the chat endpoint
(``continue_final_message``) is not an option: Qwen3's stock template rewrites the
``<think>`` block of the last assistant turn, and vLLM answers 400. The distribution over
"0" … "100" is assembled digit by digit from one-token requests with ``logprobs=20`` (one
per likely numeric prefix: a peaked model needs a handful), which prefix caching makes cheap.
Requests run concurrently; the ``openai`` client retries connection errors, 429 and 5xx
with exponential backoff and enforces the timeout. A request the server refuses for one
item (4xx: e.g. a text longer than the model's context) fails only that item.

vLLM itself is not a dependency: install it on the GPU machine, in the range TRL supports
(``pip install 'flexguard[vllm]'``: ``vllm>=0.22,<=0.31``).
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
TOP_LOGPROBS = 20  # vLLM's default --max-logprobs


class ItemRejected(BackendError):
    """The server refused a request for this item alone (a 4xx other than 429)."""


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
    tokenizer : Hub id or folder whose chat template renders prompts for the completions
        endpoint (``think=empty`` and ``expected`` mode); default: the served model name.
    concurrency : requests in flight; timeout : seconds per request; max_retries : per request.
    prune : in ``expected`` mode, numeric prefixes less likely than this are not expanded.
    """

    name = "openai"
    supports_response_mode = True
    supports_logprobs = True

    def __init__(self, base_url: str, model: str, *, api_key: str | None = None, mode: str = "generate",
                 think: str = "generate", template: str = DEFAULT_TEMPLATE, max_tokens: int = 1024,
                 temperature: float = 0.0, concurrency: int = 8, timeout: float = 60.0, max_retries: int = 3,
                 min_mass: float = 1e-4, prune: float = 1e-3, tokenizer: str | None = None):
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
        self.tokenizer_name = tokenizer or model
        self._tokenizer = None
        if mode == "expected" or think == "empty":
            self._tokenizer = self._load_tokenizer()

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "OpenAICompatibleModerator":
        if not arg:
            raise ConfigError("the openai backend needs an endpoint: --model openai:URL#MODEL")
        return cls(*parse_spec_url(arg), **options)

    def info(self) -> dict[str, Any]:
        return {"model": f"openai:{self.base_url}#{self.model}", "revision": None, "template_sha256": self.template.sha256,
                "template": self.template.name, "mode": self.mode, "think": self.think, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "tokenizer": self.tokenizer_name if self._tokenizer is not None else None}

    def _load_tokenizer(self):
        try:
            from transformers import AutoTokenizer
        except ImportError:
            raise BackendError("rendering prompts for the completions endpoint needs transformers: "
                               "pip install 'flexguard[llm]'") from None
        try:
            tok = AutoTokenizer.from_pretrained(self.tokenizer_name)
        except (OSError, ValueError) as e:
            raise ConfigError(f"cannot load the tokenizer {self.tokenizer_name!r} ({type(e).__name__}); expected mode and "
                              "think=empty render prompts with the checkpoint's chat template: pass "
                              "--model-opt tokenizer=HUB_ID_OR_FOLDER") from None
        if getattr(tok, "chat_template", None) is None:
            raise ConfigError(f"the tokenizer {self.tokenizer_name!r} has no chat template")
        return tok

    def render(self, item: Item) -> str:
        """The prompt as the checkpoint sees it, up to the start of the assistant's answer."""
        return self.template.render(item, self._tokenizer)

    # -- requests ----------------------------------------------------------------------
    def _call(self, fn, **kw):
        try:
            return fn(model=self.model, temperature=self.temperature, **kw)
        except self._openai.APIStatusError as e:
            err = ItemRejected if 400 <= e.status_code < 500 and e.status_code != 429 else BackendError
            raise err(f"{self.base_url} answered {e.status_code}: {e.message}") from None
        except (self._openai.APIConnectionError, self._openai.APITimeoutError) as e:
            raise BackendError(f"{self.base_url} unreachable after retries: {e}") from None

    def _chat(self, messages: list[dict], *, max_tokens: int) -> str:
        resp = self._call(self.client.chat.completions.create, messages=messages, max_tokens=max_tokens)
        return resp.choices[0].message.content or ""

    def _complete(self, prompt: str, *, max_tokens: int) -> str:
        return self._call(self.client.completions.create, prompt=prompt, max_tokens=max_tokens).choices[0].text or ""

    def _next_token(self, prompt: str) -> dict[str, float]:
        """Top next-token probabilities after ``prompt`` (end-of-answer tokens as "")."""
        resp = self._call(self.client.completions.create, prompt=prompt, max_tokens=1, logprobs=TOP_LOGPROBS)
        lp = resp.choices[0].logprobs
        top = (lp.top_logprobs or [None])[0] if lp is not None else None
        out: dict[str, float] = {}
        for token, logprob in (top or {}).items():
            key = "" if token in END_TOKENS else token
            out[key] = out.get(key, 0.0) + math.exp(logprob)
        return out

    def score_distribution(self, prompt: str) -> list[float]:
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
                dists = list(pool.map(lambda sq: self._next_token(prompt + sq[0]), frontier))
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
        try:
            return self._judge(item, t0)
        except ItemRejected as e:  # about this item only (e.g. longer than the model's context)
            return ModerationResult(id=item.id, error=str(e), latency_ms=round((time.perf_counter() - t0) * 1000, 3))

    def _judge(self, item: Item, t0: float) -> ModerationResult:
        ms = lambda: round((time.perf_counter() - t0) * 1000, 3)  # noqa: E731
        if self.think == "empty":
            budget = 8 if self.mode == "expected" else self.max_tokens
            text = EMPTY_THINK + self._complete(self.render(item) + EMPTY_THINK, max_tokens=budget)
        else:
            text = self._chat(self.template.messages(item), max_tokens=self.max_tokens)
        if self.mode == "generate":
            return generated_result(item.id, text, latency_ms=ms())
        cond = ScoreCondition.of(text, empty_think=self.think == "empty")
        if cond.prefix is None:
            return cond.error_result(item.id, latency_ms=ms())
        p = self.score_distribution(self.render(item) + cond.prefix)
        return cond.result(item.id, p, min_mass=self.min_mass, latency_ms=ms())

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self._one, items))

"""Baseline guards through the same protocol, so FlexBench can compare them with FlexGuard.

``llamaguard``
    A Llama-Guard-style causal LM (``hf`` checkpoint or folder): risk = 100 × P(unsafe) from
    the first answer token, normalised over the "safe"/"unsafe" label tokens. Llama Guard 3
    often emits blank lines first, so leading whitespace tokens are followed greedily before
    reading the label. When unsafe is more likely, the violated S-code is decoded and mapped
    to a flexguard category.
``openai-moderation``
    OpenAI's ``/v1/moderations`` (or any compatible server, flexguard's own included):
    risk = 100 × the highest category score, category from the crosswalk. For response
    moderation the response text is what gets scored.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, Sequence

from ..crosswalk import FROM_OPENAI
from ..errors import BackendError, ConfigError
from ..rubric import Category, Tier
from ..schema import Item, ModerationResult

#: Llama Guard 3 / MLCommons hazard codes -> flexguard categories.
LLAMA_GUARD_CODES: dict[str, Category] = {
    "S1": Category.VIO, "S2": Category.ILG, "S3": Category.SEX, "S4": Category.SEX, "S5": Category.MIS,
    "S6": Category.MIS, "S7": Category.INF, "S8": Category.ILG, "S9": Category.VIO, "S10": Category.DIS,
    "S11": Category.VIO, "S12": Category.SEX, "S13": Category.MIS, "S14": Category.INF,
}


class LlamaGuardModerator:
    name = "llamaguard"
    supports_response_mode = True
    supports_logprobs = True

    def __init__(self, model: Any, tokenizer: Any = None, *, dtype: str = "auto", device: str | None = None,
                 revision: str | None = None, max_whitespace: int = 3):
        from .loading import load_causal_lm

        self.model_id, self.model, self.tokenizer = load_causal_lm(model, tokenizer, revision=revision, dtype=dtype,
                                                                   device=device)
        self.model.eval()
        self.revision, self.max_whitespace = revision, max_whitespace
        safe = self.tokenizer("safe", add_special_tokens=False)["input_ids"]
        unsafe = self.tokenizer("unsafe", add_special_tokens=False)["input_ids"]
        if not safe or not unsafe or safe[0] == unsafe[0]:
            raise BackendError("this tokenizer does not separate 'safe' and 'unsafe' at the first token")
        self.safe_id, self.unsafe_id = safe[0], unsafe[0]

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "LlamaGuardModerator":
        if not arg:
            raise ConfigError("the llamaguard backend needs a model: --model llamaguard:meta-llama/Llama-Guard-3-8B")
        return cls(arg, **options)

    def info(self) -> dict[str, Any]:
        return {"model": f"llamaguard:{self.model_id}", "revision": self.revision, "template_sha256": None}

    def _conversation(self, item: Item) -> str:
        conv = [{"role": "user", "content": item.prompt}]
        if item.response is not None:
            conv.append({"role": "assistant", "content": item.response})
        return self.tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        import torch

        out = []
        for it in items:
            t0 = time.perf_counter()
            ids = self.tokenizer(self._conversation(it), add_special_tokens=False, return_tensors="pt")["input_ids"]
            ids = ids.to(self.model.device)
            with torch.no_grad():
                for _ in range(self.max_whitespace + 1):
                    probs = self.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float().softmax(-1)
                    top = int(probs.argmax())
                    if self.tokenizer.decode([top]).strip() or top in (self.safe_id, self.unsafe_id):
                        break
                    ids = torch.cat([ids, torch.tensor([[top]], device=ids.device)], dim=1)  # skip a blank line
            p_safe, p_unsafe = float(probs[self.safe_id]), float(probs[self.unsafe_id])
            mass = p_safe + p_unsafe
            if mass <= 0:
                out.append(ModerationResult(id=it.id, parse_error=True, extras={"error": "no probability on safe/unsafe"}))
                continue
            p = p_unsafe / mass
            category, raw = Category.SAFE, None
            if p > 0.5:
                seq = torch.cat([ids, torch.tensor([[self.unsafe_id]], device=ids.device)], dim=1)
                with torch.no_grad():
                    gen = self.model.generate(seq, max_new_tokens=8, do_sample=False,
                                              pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
                raw = "unsafe" + self.tokenizer.decode(gen[0, seq.shape[1]:], skip_special_tokens=True)
                codes = re.findall(r"S\d{1,2}", raw)
                category = LLAMA_GUARD_CODES.get(codes[0]) if codes else None
            out.append(ModerationResult(id=it.id, score=round(100 * p, 4), category=category, raw=raw,
                                        latency_ms=round((time.perf_counter() - t0) * 1000, 3),
                                        extras={"label_mass": round(mass, 6)}))
        return out


class OpenAIModerationModerator:
    name = "openai-moderation"
    supports_response_mode = True

    def __init__(self, base_url: str | None = None, *, model: str = "omni-moderation-latest", api_key: str | None = None,
                 timeout: float = 30.0, max_retries: int = 3, batch_size: int = 32):
        import openai

        self.base_url, self.model_name, self.batch_size = base_url, model, batch_size
        self.client = openai.OpenAI(base_url=base_url, api_key=api_key or os.environ.get("OPENAI_API_KEY", "EMPTY"),
                                    timeout=timeout, max_retries=max_retries)
        self._openai = openai

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "OpenAIModerationModerator":
        if arg and "#" in arg:
            url, _, model = arg.partition("#")
            return cls(url, model=model, **options)
        return cls(arg or None, **options)

    def info(self) -> dict[str, Any]:
        return {"model": f"openai-moderation:{self.base_url or 'api.openai.com'}#{self.model_name}", "revision": None,
                "template_sha256": None}

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        texts = [it.response if it.response is not None else it.prompt for it in items]
        t0 = time.perf_counter()
        try:
            resp = self.client.moderations.create(model=self.model_name, input=texts)
        except self._openai.APIStatusError as e:
            raise BackendError(f"moderation endpoint answered {e.status_code}: {e.message}") from None
        except (self._openai.APIConnectionError, self._openai.APITimeoutError) as e:
            raise BackendError(f"moderation endpoint unreachable after retries: {e}") from None
        per = (time.perf_counter() - t0) * 1000 / max(len(items), 1)
        out = []
        for it, r in zip(items, resp.results):
            scores = {k: v for k, v in r.category_scores.model_dump(by_alias=True).items() if v is not None}
            top = max(scores, key=scores.get) if scores else None
            risk = 100.0 * (scores[top] if top else 0.0)
            category = Category.SAFE if risk <= Tier.BENIGN.band[1] or top not in FROM_OPENAI else FROM_OPENAI[top]
            out.append(ModerationResult(id=it.id, score=round(risk, 4), category=category, latency_ms=round(per, 3),
                                        category_scores={k: round(v, 6) for k, v in scores.items()},
                                        extras={"openai_flagged": r.flagged}))
        return out

"""FlexGuard LLM moderator on 🤗 transformers, with a one-pass *expected* score.

Two scoring modes:

``generate``
    Decode the answer (greedy by default) and parse ``<think>…</think>\\nCAT\\nSCORE``.
``expected``
    Take the category from the model's answer, then read the model's own distribution over
    the 101 score strings "0" … "100" (each followed by end-of-turn) after the category line
    and report ``E[score]`` and the probability mass that went to valid scores. One forward
    pass over the prefix builds the KV cache; one batched pass over the candidates
    reuses it. With ``think="empty"`` the reasoning is skipped (an empty think block is
    prefilled), so the score costs a short prefill plus the category tokens.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Sequence

import numpy as np

from ..errors import BackendError, ConfigError
from ..schema import Item, ModerationResult
from ..template import DEFAULT_TEMPLATE, EMPTY_THINK, PromptTemplate, check_modes
from .llm import ScoreCondition, generated_result
from .loading import load_causal_lm

log = logging.getLogger(__name__)


def score_candidates(tokenizer: Any, category: str = "SAFE") -> list[list[int]]:
    """Token ids of "0" … "100" followed by end-of-turn, as they follow ``CATEGORY\\n``.

    Raises :class:`BackendError` when the tokenizer would merge a score with the newline
    before it (then per-candidate scoring would not match what the model generates).
    """
    eos = tokenizer.eos_token_id
    if eos is None:
        raise BackendError("the tokenizer has no eos token: the expected score needs an end-of-answer token")
    base = tokenizer(f"{category}\n", add_special_tokens=False)["input_ids"]
    out = []
    for n in range(101):
        ids = tokenizer(f"{category}\n{n}", add_special_tokens=False)["input_ids"]
        if ids[:len(base)] != base:
            raise BackendError("this tokenizer merges the score with the preceding newline; use --mode generate")
        out.append(ids[len(base):] + [eos])
    return out


def expected_score(model: Any, prefix_ids: Sequence[int], candidates: Sequence[Sequence[int]]) -> tuple[float, float, np.ndarray]:
    """``(E[score], valid mass, P(n) for n = 0..100)`` from one cached pass over all candidates.

    ``P(n) = Π_k P(token_k | prefix, tokens<k)`` over the candidate's tokens including the
    end-of-answer token (which separates "1" from "10" and "100"); E is normalised by the
    valid mass. Candidates share digit prefixes ("4" of "42"), so the pass feeds only the
    longest digit strings (91 rows for 0..100) on the repeated prefix cache and applies the
    LM head to the 101 distinct positions whose next-token distribution is needed, instead
    of to every padded position of 101 rows.
    """
    import torch

    device = next(model.parameters()).device
    digits = [tuple(c[:-1]) for c in candidates]
    states = sorted({d[:k] for d in digits for k in range(1, len(d) + 1)})  # non-empty digit prefixes
    rows = [s for s in states if not any(o != s and o[:len(s)] == s for o in states)]
    where = {}  # state -> (row, position whose output predicts the next token)
    for r, row in enumerate(rows):
        for k in range(1, len(row) + 1):
            where.setdefault(row[:k], (r, k - 1))
    with torch.no_grad():
        out = model(input_ids=torch.tensor([list(prefix_ids)], device=device), use_cache=True, logits_to_keep=1)
        first = out.logits[0, -1].float().log_softmax(-1)
        width = max(len(r) for r in rows)
        inp = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)
        for r, row in enumerate(rows):
            inp[r, :len(row)] = torch.tensor(row)
            mask[r, :len(row)] = 1
        cache = out.past_key_values
        cache.batch_repeat_interleave(len(rows))
        attn = torch.cat([torch.ones((len(rows), len(prefix_ids)), dtype=torch.long, device=device), mask], dim=1)
        hidden = model.get_decoder()(input_ids=inp, attention_mask=attn, past_key_values=cache).last_hidden_state
        idx = [where[s] for s in states]
        picked = hidden[torch.tensor([r for r, _ in idx]), torch.tensor([k for _, k in idx])]
        logp = model.get_output_embeddings()(picked).float().log_softmax(-1)
    after = {s: logp[i] for i, s in enumerate(states)}
    total = np.empty(len(candidates))
    for n, (c, d) in enumerate(zip(candidates, digits)):
        lp = float(first[c[0]])
        for k in range(1, len(c)):
            lp += float(after[d[:k]][c[k]])
        total[n] = lp
    p = np.exp(total)
    mass = float(p.sum())
    e = float((np.arange(len(candidates)) * p).sum() / mass) if mass > 0 else float("nan")
    return e, mass, p


class HFModerator:
    """A FlexGuard checkpoint (Hub id or local folder) run with transformers.

    Parameters
    ----------
    model : Hub id such as ``Tommy-DING/FlexGuard-Qwen3-8B`` or a local directory (or a loaded model).
    tokenizer : a loaded tokenizer, when ``model`` is an object.
    mode : ``generate`` or ``expected``.
    think : ``generate`` (let the model reason) or ``empty`` (prefill an empty think block).
    max_new_tokens, temperature : decoding; temperature 0 is greedy. The default budget (1024)
        fits the rubric's step-by-step reasoning; an answer cut off inside ``<think>`` is
        reported as ``truncated``, not as a malformed answer.
    dtype, device, revision : loading options (``dtype="auto"``: bf16 on GPU, fp32 on CPU).
    template : template name or YAML path.
    batch_size : prompts per ``generate`` call (left padding).
    min_mass : in ``expected`` mode, a valid-score mass below this is a parse error.
    """

    name = "hf"
    supports_response_mode = True
    supports_logprobs = True

    def __init__(self, model: Any, tokenizer: Any = None, *, mode: str = "generate", think: str = "generate",
                 max_new_tokens: int = 1024, temperature: float = 0.0, dtype: str = "auto", device: str | None = None,
                 revision: str | None = None, template: str = DEFAULT_TEMPLATE, batch_size: int = 8,
                 min_mass: float = 1e-4, seed: int = 0):
        check_modes(mode, think)
        import torch

        self.mode, self.think, self.max_new_tokens, self.temperature = mode, think, max_new_tokens, temperature
        self.batch_size, self.min_mass, self.seed, self.revision = batch_size, min_mass, seed, revision
        self.template = PromptTemplate.load(template)
        self.model_id, self.model, self.tokenizer = load_causal_lm(model, tokenizer, revision=revision, dtype=dtype,
                                                                   device=device)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self._candidates: dict[str, list[list[int]]] = {}
        torch.manual_seed(seed)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "HFModerator":
        if not arg:
            raise ConfigError("the hf backend needs a model: --model hf:Tommy-DING/FlexGuard-Qwen3-8B or hf:./local-dir")
        return cls(arg, **options)

    def info(self) -> dict[str, Any]:
        return {"model": f"hf:{self.model_id}", "revision": self.revision, "template_sha256": self.template.sha256,
                "template": self.template.name, "mode": self.mode, "think": self.think, "temperature": self.temperature,
                "max_new_tokens": self.max_new_tokens}

    # -- generation --------------------------------------------------------------------
    def _prompts(self, items: Sequence[Item]) -> list[str]:
        texts = [self.template.render(it, self.tokenizer) for it in items]
        return [t + EMPTY_THINK for t in texts] if self.think == "empty" else texts

    def _generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        enc = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.model.device)
        sample = self.temperature > 0
        with torch.no_grad():
            out = self.model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=sample,
                                      temperature=self.temperature if sample else None, top_p=None, top_k=None,
                                      pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.tokenizer.eos_token_id)
        new = out[:, enc["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new, skip_special_tokens=True)

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        results: list[ModerationResult] = []
        for start in range(0, len(items), self.batch_size):
            batch = items[start:start + self.batch_size]
            t0 = time.perf_counter()
            prompts = self._prompts(batch)
            budget = 8 if (self.mode == "expected" and self.think == "empty") else self.max_new_tokens
            texts = self._generate(prompts, budget)
            for it, prompt, text in zip(batch, prompts, texts):
                answer = EMPTY_THINK + text if self.think == "empty" else text
                if self.mode == "generate":
                    results.append(generated_result(it.id, answer))
                else:
                    results.append(self._expected(it, prompt, answer))
            per = (time.perf_counter() - t0) * 1000 / len(batch)
            results[-len(batch):] = [dataclasses.replace(r, latency_ms=round(per, 3)) for r in results[-len(batch):]]
        return results

    def _expected(self, item: Item, prompt: str, answer: str) -> ModerationResult:
        empty = self.think == "empty"
        cond = ScoreCondition.of(answer, empty_think=empty)
        if cond.category is None or cond.prefix is None:
            return cond.error_result(item.id)
        base = prompt[:-len(EMPTY_THINK)] if empty else prompt
        prefix_ids = self.tokenizer(base + cond.prefix, add_special_tokens=False)["input_ids"]
        line = ",".join(c.value for c in cond.parsed.categories)  # the category line the score follows
        if line not in self._candidates:
            self._candidates[line] = score_candidates(self.tokenizer, line)
        _, _, p = expected_score(self.model, prefix_ids, self._candidates[line])
        return cond.result(item.id, p, min_mass=self.min_mass)

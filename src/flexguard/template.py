"""The FlexGuard output contract: prompt templates and the parser of ``<think>…</think>\\nCAT\\nSCORE``.

Templates are versioned YAML files (``system``, ``prompt_user``, ``response_user`` with
``{prompt}``/``{response}`` placeholders) rendered through the tokenizer's chat template.
Their SHA-256 goes into every run manifest so results can be tied to the exact wording.
The parser is shared by the LLM backends, the training rewards and the server: it never
invents a score, and anything it cannot read sets ``parse_error``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .rubric import Category
from .schema import Item, sha256_text

DEFAULT_TEMPLATE = "flexguard-v1"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
#: An empty reasoning block: prefilled to skip the reasoning (``think="empty"``).
EMPTY_THINK = f"{THINK_OPEN}\n\n{THINK_CLOSE}\n"
#: How an LLM backend turns the answer into a score: decode and parse the score line
#: (``generate``), or read the expected score from the model's distribution over "0"…"100"
#: after the category line (``expected``).
SCORE_MODES = ("generate", "expected")
#: Whether the model writes its reasoning (``generate``) or an empty think block is prefilled (``empty``).
THINK_MODES = ("generate", "empty")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    system: str
    prompt_user: str
    response_user: str
    source_text: str

    @property
    def sha256(self) -> str:
        return sha256_text(self.source_text)

    @classmethod
    def load(cls, name_or_path: "str | Path | PromptTemplate" = DEFAULT_TEMPLATE) -> "PromptTemplate":
        """A shipped template by name (``flexguard-v1``) or a user YAML file (a loaded one as it is)."""
        import yaml

        if isinstance(name_or_path, PromptTemplate):
            return name_or_path
        path = Path(name_or_path)
        if path.suffix in (".yaml", ".yml") and path.exists():
            text = path.read_text(encoding="utf-8")
        else:
            res = resources.files("flexguard") / "templates" / f"{name_or_path}.yaml"
            if not res.is_file():
                raise ConfigError(f"no template {name_or_path!r}: give a shipped name ({DEFAULT_TEMPLATE}) or a .yaml file")
            text = res.read_text(encoding="utf-8")
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"template {name_or_path}: malformed YAML: {e}") from None
        missing = [k for k in ("system", "prompt_user", "response_user") if not isinstance((data or {}).get(k), str)]
        if missing:
            raise ConfigError(f"template {name_or_path}: missing text field(s) {', '.join(missing)}")
        for key, need in (("prompt_user", ("{prompt}",)), ("response_user", ("{prompt}", "{response}"))):
            if any(n not in data[key] for n in need):
                raise ConfigError(f"template {name_or_path}: '{key}' must contain {' and '.join(need)}")
        return cls(name=str(data.get("name", path.stem)), system=data["system"].strip(), prompt_user=data["prompt_user"].strip(),
                   response_user=data["response_user"].strip(), source_text=text)

    def messages(self, item: Item) -> list[dict[str, str]]:
        """Chat messages for one item (system + user)."""
        if item.response is None:
            user = self.prompt_user.replace("{prompt}", item.prompt)
        else:
            user = self.response_user.replace("{prompt}", item.prompt).replace("{response}", item.response)
        return [{"role": "system", "content": self.system}, {"role": "user", "content": user}]

    def render(self, item: Item, tokenizer: Any) -> str:
        """The full prompt text up to the start of the assistant's answer."""
        if getattr(tokenizer, "chat_template", None) is None:
            raise ConfigError("the tokenizer has no chat template; FlexGuard prompts are rendered with it")
        return tokenizer.apply_chat_template(self.messages(item), tokenize=False, add_generation_prompt=True)


def check_modes(mode: str, think: str) -> None:
    """Raise :class:`ConfigError` unless ``mode`` is a score mode and ``think`` a think mode."""
    if mode not in SCORE_MODES:
        raise ConfigError(f"unknown mode {mode!r}; use one of {', '.join(SCORE_MODES)}")
    if think not in THINK_MODES:
        raise ConfigError(f"think must be one of {', '.join(THINK_MODES)}, got {think!r}")


def answer_prefix(category: str, reasoning: str | None = None) -> str:
    """The answer up to the score line, in the trained format."""
    return f"{THINK_OPEN}\n{(reasoning or '').strip()}\n{THINK_CLOSE}\n{category}\n"


def completion_text(category: str, score: int, rationale: str = "") -> str:
    """The training target / expected answer: ``<think>\\n…\\n</think>\\nCAT\\nSCORE``."""
    return f"{THINK_OPEN}\n{rationale.strip()}\n{THINK_CLOSE}\n{category}\n{int(score)}"


@dataclass(frozen=True)
class ParsedOutput:
    """A FlexGuard answer, read: ``score`` (0–100) and ``categories`` (primary first), or why not.

    ``truncated`` means the answer stopped inside its ``<think>`` block (a token budget too
    small for the reasoning), which is told apart from an answer in the wrong format.
    """

    score: float | None
    category: Category | None
    reasoning: str | None
    parse_error: bool
    error: str | None = None
    categories: tuple[Category, ...] = ()
    truncated: bool = False


_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>")
_CODES = "|".join(c.value for c in Category)
#: A category line: one or more codes (any case), optionally after "Category:", separated by , / ; | & +
_CATEGORY_LINE = re.compile(rf"^(?:\**\s*categor(?:y|ies)\s*\**\s*[:=\-]\s*)?((?:{_CODES})(?:\s*[,/;|&+]\s*(?:{_CODES}))*)"
                            rf"\s*\.?\s*(?:[,;]?\s*(?:risk[\s_-]*)?score\s*[:=\-]\s*(?P<score>\S+))?$", re.I)
#: A score line: a number, optionally after "Score:"/"Risk score:", optionally "/100" or "%"
_SCORE_LINE = re.compile(r"^(?:\**\s*(?:risk[\s_-]*)?score\s*\**\s*[:=\-]\s*)?(?P<score>\S+?)\s*(?:/\s*100|%)?\s*\.?$", re.I)
_NUMBER = re.compile(r"^\d{1,3}(?:\.\d+)?$")
_WORDS_LINE = re.compile(r"^(?:categor(?:y|ies)\s*[:=\-]\s*)?([A-Za-z_]{2,12})(?:\s*[,/;|&+]\s*[A-Za-z_]{2,12})*$", re.I)


def parse_output(text: str) -> ParsedOutput:
    """Parse a FlexGuard answer ``<think>…</think>\\nCATEGORY[,CATEGORY…]\\nSCORE``; never guesses.

    Tolerated: extra whitespace and blank lines, any case, ``Category:`` / ``Score:`` prefixes,
    several categories on the category line (the first is the primary one), ``85/100``,
    decimals, a missing think block, and extra text before or after the answer. Not tolerated
    (``parse_error`` with the reason in ``error``): no category line followed by a score line,
    an unknown category, a score that is not a number in 0–100. An answer cut off inside its
    think block is ``truncated``, a parse error of its own kind.

    >>> parse_output("<think>\\nasks for a bomb\\n</think>\\nVIO\\n92").score
    92.0
    >>> parse_output("<think>x</think>\\nCategory: VIO, ILG\\nScore: 85/100").categories
    (<Category.VIO: 'VIO'>, <Category.ILG: 'ILG'>)
    >>> parse_output("VIO\\n192").error
    'score 192 is outside 0-100'
    >>> parse_output("<think>\\nstep 1: the request asks for").truncated
    True
    """
    if not isinstance(text, str):
        return ParsedOutput(None, None, None, True, "output is not text")
    body = text
    for token in _END_TOKENS:
        body = body.replace(token, "\n")
    reasoning = None
    if THINK_CLOSE in body:
        head, _, body = body.rpartition(THINK_CLOSE)
        reasoning = head.split(THINK_OPEN, 1)[-1].strip()
    elif THINK_OPEN in body:
        reasoning = body.split(THINK_OPEN, 1)[1].strip()
        return ParsedOutput(None, None, reasoning, True, "the answer stopped inside <think> (no </think>): "
                            "raise the token budget (max_new_tokens / max_tokens)", truncated=True)
    lines = [line.replace("*", "").replace("`", "").strip() for line in body.splitlines()]  # markdown emphasis
    lines = [line for line in lines if line]
    if not lines:
        return ParsedOutput(None, None, reasoning, True, "empty answer")
    for k, line in enumerate(lines):
        m = _CATEGORY_LINE.match(line)
        if not m:
            continue
        categories = tuple(dict.fromkeys(Category(c.upper()) for c in re.split(r"\s*[,/;|&+]\s*", m.group(1))))
        score_text = m["score"]
        if score_text is None:
            nxt = lines[k + 1] if k + 1 < len(lines) else None
            sm = _SCORE_LINE.match(nxt) if nxt is not None else None
            if sm is None:
                why = "no score line after the category line" if nxt is None else f"expected a score line, got {nxt[:40]!r}"
                return ParsedOutput(None, categories[0], reasoning, True, why, categories)
            score_text = sm["score"]
        score_text = score_text.rstrip(".")
        if not _NUMBER.match(score_text.split("/")[0].strip()):
            return ParsedOutput(None, categories[0], reasoning, True, f"score {score_text!r} is not a number in 0-100",
                                categories)
        score = float(score_text.split("/")[0])
        if score > 100:
            return ParsedOutput(None, categories[0], reasoning, True, f"score {score:g} is outside 0-100", categories)
        return ParsedOutput(score, categories[0], reasoning, False, None, categories)
    unknown = next((m.group(1) for line in lines if (m := _WORDS_LINE.match(line))), None)
    scores = [sm["score"] for line in lines if (sm := _SCORE_LINE.match(line))]
    if unknown is not None and any(_NUMBER.match(x) for x in scores):
        return ParsedOutput(None, None, reasoning, True, f"unknown category {unknown!r}")
    return ParsedOutput(None, None, reasoning, True, f"expected 'CATEGORY\\nSCORE', got {body.strip()[:60]!r}")

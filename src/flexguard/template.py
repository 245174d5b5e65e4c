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
    def load(cls, name_or_path: str | Path = DEFAULT_TEMPLATE) -> "PromptTemplate":
        """A shipped template by name (``flexguard-v1``) or a user YAML file."""
        import yaml

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
    score: int | None
    category: Category | None
    reasoning: str | None
    parse_error: bool
    error: str | None = None


_PAIR = re.compile(r"^[ \t]*(?P<cat>[A-Za-z_]{2,12})[ \t]*\r?\n\s*?^[ \t]*(?P<score>\S+)[ \t]*$", re.M)
_END_TOKENS = ("<|im_end|>", "<|endoftext|>", "</s>", "<|eot_id|>")


def parse_output(text: str) -> ParsedOutput:
    """Parse a FlexGuard answer ``<think>…</think>\\nCATEGORY\\nSCORE``; never guesses.

    Tolerated: extra whitespace and blank lines, a missing think block, an unclosed think
    block (the answer is then looked for inside it), and extra text before or after the
    answer. Not tolerated (``parse_error`` with the reason in ``error``): no category line
    followed by a score line, an unknown category, a score that is not an integer, or one
    outside 0–100.

    >>> parse_output("<think>\\nasks for a bomb\\n</think>\\nVIO\\n92")
    ParsedOutput(score=92, category=<Category.VIO: 'VIO'>, reasoning='asks for a bomb', parse_error=False, error=None)
    >>> parse_output("VIO\\n192").error
    'score 192 is outside 0-100'
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
        body = body.split(THINK_OPEN, 1)[1]
        reasoning = body.strip()
    pairs = list(_PAIR.finditer(body))
    if not pairs:
        why = "empty answer" if not body.strip() else f"expected 'CATEGORY\\nSCORE', got {body.strip()[:60]!r}"
        return ParsedOutput(None, None, reasoning, True, why)
    known = [m for m in pairs if m["cat"].upper() in Category.__members__]
    if not known:
        return ParsedOutput(None, None, reasoning, True, f"unknown category {pairs[0]['cat']!r}")
    m = known[0]
    category = Category(m["cat"].upper())
    score_text = m["score"]
    if not re.fullmatch(r"\d{1,3}", score_text):
        return ParsedOutput(None, category, reasoning, True, f"score {score_text!r} is not an integer")
    score = int(score_text)
    if score > 100:
        return ParsedOutput(None, category, reasoning, True, f"score {score} is outside 0-100")
    return ParsedOutput(score, category, reasoning, False)


def parse_category(text: str) -> Category | None:
    """The category line of an answer whose score line may be missing (``expected`` mode)."""
    body = text.rpartition(THINK_CLOSE)[2] if THINK_CLOSE in text else text
    for line in body.splitlines():
        word = line.strip().upper()
        if word:
            return Category(word) if word in Category.__members__ else None
    return None

"""Loading FlexBench (Hub, local directory or any table) and the binary public suites.

Every loader returns a :class:`Benchmark`: a list of :class:`~flexguard.schema.Item` plus
where it came from. Rows are checked before anything is scored, because a silently wrong
label column corrupts every metric downstream: missing columns, unknown tiers, labels that
disagree with tiers, empty texts and duplicate ids are reported in one :class:`DataError`
naming the file, the column and the first offending rows.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Literal, Sequence

import numpy as np

from .errors import DataError
from .rubric import Category, Regime, Tier, tier_ranks
from .schema import Item

Subset = Literal["prompt", "response"]
HUB_REPO = "Tommy-DING/FlexBench"
LABEL_COLUMNS = {r: f"label_{r.value}" for r in Regime}
#: Where a row's gold tier may come from, in order: a tier name, a tier rank 0–4, or the three labels.
TIER_SOURCES = ("severity", "severity_level", "labels")
#: Texts longer than this are refused by the loaders: nothing a moderator sees is this long.
MAX_TEXT_CHARS = 200_000
_SHOW = 5


@dataclass
class Benchmark:
    """A labelled evaluation set: items plus provenance."""

    name: str
    subset: Subset
    split: str
    items: list[Item]
    origin: str

    def __len__(self) -> int:
        return len(self.items)

    @property
    def tier_ranks(self) -> np.ndarray:
        """Gold tier rank per item (-1 where the suite is binary)."""
        return tier_ranks(i.tier for i in self.items)

    def binary_labels(self) -> np.ndarray:
        """Gold harmful/unharmful labels of a binary suite."""
        return np.array([bool(i.harmful) for i in self.items])


def flexbench_filename(subset: Subset, split: str) -> str:
    return f"Guard_{subset}_{split}.csv"


def load_flexbench(source: str | Path = "flexbench", *, subset: Subset = "prompt", split: str = "valid") -> Benchmark:
    """Load one FlexBench subset and split.

    Parameters
    ----------
    source : ``"flexbench"`` for the Hub dataset ``Tommy-DING/FlexBench`` (needs network),
        ``"hub:OWNER/NAME"`` for another Hub repo or a local dataset folder read through
        🤗 datasets, a directory holding ``Guard_{subset}_{split}.csv``, or a CSV / JSONL /
        Parquet file with FlexBench columns.
    subset : ``"prompt"`` or ``"response"``.
    split : ``"valid"`` or ``"test"`` (FlexBench's names); any split name of a local folder.
    """
    if subset not in ("prompt", "response"):
        raise DataError(f"unknown subset {subset!r}; expected 'prompt' or 'response'")
    src = str(source)
    if src == "flexbench" or src.startswith("hub:"):
        repo = HUB_REPO if src == "flexbench" else src[4:]
        rows, origin = _load_from_hub(repo, subset, split), f"hub:{repo}/{flexbench_filename(subset, split)}"
    else:
        path = Path(src)
        if path.is_dir():
            path = path / flexbench_filename(subset, split)
            if not path.exists():
                have = sorted(p.name for p in path.parent.glob("Guard_*"))
                raise DataError(
                    f"{path} not found: the folder has no {subset}/{split} file"
                    + (f" (it has: {', '.join(have)})" if have else "")
                )
        rows, origin = read_table(path), str(path)
    items = rows_to_items(rows, origin=origin, subset=subset)
    return Benchmark(name="FlexBench", subset=subset, split=split, items=items, origin=origin)


def _load_from_hub(repo: str, subset: Subset, split: str) -> list[dict]:
    """Load exactly as the FlexBench card says: ``load_dataset(repo, data_files=...)``."""
    try:
        from datasets import load_dataset
    except ImportError as e:  # pragma: no cover - datasets is a core dependency
        raise DataError("loading from the Hub needs the 'datasets' package") from e
    data_files = {s: flexbench_filename(subset, s) for s in ("valid", "test")}
    if split not in data_files:
        data_files[split] = flexbench_filename(subset, split)
    if not _hub_offline_mode() and (why := _hub_unreachable()):  # fail in seconds, not after a minute of retries
        raise DataError(f"cannot load {repo}: the Hugging Face Hub is unreachable ({why}). "
                        "Pass a local folder, e.g. --data ../shared/data/flexbench_r")
    try:
        ds = load_dataset(repo, data_files={split: data_files[split]})
    except Exception as e:  # network, auth, missing file: all user-fixable
        raise DataError(
            f"could not load {repo} ({data_files[split]}) through datasets: {type(e).__name__}: {e}. "
            "Without Hub access, pass a local folder, e.g. --data ../shared/data/flexbench_r"
        ) from None
    return [dict(r) for r in ds[split]]


def _hub_offline_mode() -> bool:
    """``HF_HUB_OFFLINE`` is set: datasets will read its cache only, no network."""
    import os

    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _hub_unreachable(timeout: float = 3.0) -> str | None:
    """Why the Hub cannot be reached (a TCP connection to its endpoint), or None when it can."""
    import os
    import socket
    from urllib.parse import urlparse

    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname or "huggingface.co", url.port or 443), timeout=timeout).close()
    except OSError as e:
        return f"{url.hostname}: {e.strerror or e}"
    return None


def read_table(path: str | Path) -> list[dict]:
    """Read a CSV, JSONL/JSON or Parquet file into a list of row dicts."""
    import pandas as pd

    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    suffix = "".join(path.suffixes[-2:]).lower() if path.suffix == ".gz" else path.suffix.lower()
    try:
        if suffix.startswith(".csv") or suffix.startswith(".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix.startswith(".tsv") else ",", dtype={"id": str}, keep_default_na=False,
                             na_values=[""])
        elif suffix.startswith(".parquet"):
            df = pd.read_parquet(path)
        elif suffix.startswith(".jsonl") or suffix.startswith(".json"):
            return list(read_jsonl(path)) if suffix.startswith(".jsonl") else _read_json_rows(path)
        else:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .csv, .jsonl, .json or .parquet")
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as e:
        raise DataError(f"{path}: cannot read it as {suffix.lstrip('.')}: {e}") from None
    df = df.astype(object).where(df.notna(), None)
    return df.to_dict("records")


def _read_json_rows(path: Path) -> list[dict]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: malformed JSON: {e}") from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"{path}: expected a JSON list of objects")
    return data


def read_jsonl(path: str | Path) -> Iterator[dict]:
    """Yield the objects of a JSONL file; a bad line raises :class:`DataError` with its number."""
    with open(path, "rb") as f:
        yield from parse_jsonl(f, origin=str(path))


def parse_jsonl(lines: Iterable[bytes], *, origin: str) -> Iterator[dict]:
    """Yield the JSON objects of JSONL byte lines (a file, standard input); errors name ``origin`` and the line."""
    for n, raw in enumerate(lines, 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{origin}:{n}: invalid UTF-8 ({e.reason} at byte {e.start})") from None
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{origin}:{n}: malformed JSON: {e.msg} (column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataError(f"{origin}:{n}: expected a JSON object, got {type(obj).__name__}")
        yield obj


def _truthy(v: object) -> bool | None:
    if v is None:
        return None
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    if isinstance(v, (int, float, np.integer, np.floating)) and not (isinstance(v, float) and np.isnan(v)):
        if v in (0, 1):
            return bool(v)
        return None
    s = str(v).strip().lower()
    return {"1": True, "true": True, "yes": True, "unsafe": True, "harmful": True,
            "0": False, "false": False, "no": False, "safe": False, "unharmful": False}.get(s)


def _problems(kind: str, rows: list[tuple[int, str]]) -> str:
    shown = "; ".join(f"row {n} ({why})" for n, why in rows[:_SHOW])
    more = f" and {len(rows) - _SHOW} more" if len(rows) > _SHOW else ""
    return f"{kind} in {len(rows)} rows: {shown}{more}"


def rows_to_items(rows: list[dict], *, origin: str, subset: Subset) -> list[Item]:
    """Validate FlexBench-shaped rows and build :class:`Item` objects.

    Row numbers in messages count data rows from 1 (the line after a CSV header is row 1).
    """
    if not rows:
        raise DataError(f"{origin}: no rows")
    columns = set().union(*(r.keys() for r in rows[:50]))
    required = ["id", "prompt"] + (["response"] if subset == "response" else [])
    labels = list(LABEL_COLUMNS.values())
    source = next((s for s in TIER_SOURCES[:2] if s in columns), "labels" if set(labels) <= columns else None)
    missing = [c for c in required if c not in columns]
    if missing or source is None:
        need = ", ".join(required) + " and one of: severity (BENIGN…EXTREME), severity_level (0–4), " + ", ".join(labels)
        raise DataError(
            f"{origin}: missing column(s) {', '.join(missing + ([] if source else labels))}; FlexBench files need "
            f"{need} (found: {', '.join(sorted(map(str, columns)))})"
        )
    errors: dict[str, list[tuple[int, str]]] = {}
    items: list[Item] = []
    seen: dict[str, int] = {}
    for n, r in enumerate(rows, 1):
        bad = lambda col, why, n=n: errors.setdefault(col, []).append((n, why))  # noqa: E731
        rid = "" if r.get("id") is None else str(r["id"]).strip()
        if not rid:
            bad("id", "empty id")
        elif rid in seen:
            bad("id", f"duplicate id {rid!r}, first at row {seen[rid]}")
        seen.setdefault(rid, n)
        prompt, response = r.get("prompt"), r.get("response")
        if not isinstance(prompt, str) or not prompt.strip():
            bad("prompt", f"id {rid}: empty prompt")
        elif len(prompt) > MAX_TEXT_CHARS:
            bad("prompt", f"id {rid}: {len(prompt)} characters, limit {MAX_TEXT_CHARS}")
        if subset == "response" and (not isinstance(response, str) or not response.strip()):
            bad("response", f"id {rid}: empty response")
        tier = _row_tier(r, source, rid, bad)
        if tier is None:
            continue
        for regime, col in LABEL_COLUMNS.items():
            if col not in r or source == "labels":
                continue  # absent labels follow from the tier; labels that gave the tier were checked there
            got = _truthy(r.get(col))
            want = tier.rank >= regime.min_tier.rank
            if got is None:
                bad(col, f"id {rid}: {r.get(col)!r} is not 0/1")
            elif got != want:
                bad(col, f"id {rid}: {int(got)} but severity {tier.value} implies {int(want)}")
        category = None
        if r.get("category") is not None:
            try:
                category = Category.parse(r["category"])
            except DataError:
                bad("category", f"id {rid}: unknown category {r['category']!r}")
        score = r.get("risk_score")
        if score is not None:
            try:
                score = float(score)
                if not 0 <= score <= 100:
                    raise ValueError
            except (TypeError, ValueError):
                bad("risk_score", f"id {rid}: {r.get('risk_score')!r} is not a number in 0-100")
                score = None
        items.append(Item(
            id=rid, prompt=prompt if isinstance(prompt, str) else "",
            response=response if subset == "response" and isinstance(response, str) else None,
            tier=tier, category=category, risk_score=score,
            source=None if r.get("source") is None else str(r["source"]),
            harmful=_truthy(r.get("source_label")),
            rationale=None if r.get("rationale") is None else str(r["rationale"]),
        ))
    if errors:
        parts = [f"column '{col}': " + _problems("problems", rs) for col, rs in errors.items()]
        raise DataError(f"{origin}: " + " | ".join(parts))
    return items


def _row_tier(r: dict, source: str, rid: str, bad) -> Tier | None:
    """The gold tier of a row from ``source`` (see :data:`TIER_SOURCES`); problems go to ``bad``.

    From the three labels alone the tier is the lowest one they imply: HIGH and EXTREME are
    both "unsafe under loose", so such rows become HIGH (every regime's label is exact).
    """
    if source == "severity":
        try:
            return Tier.parse(r.get("severity"))
        except DataError:
            bad("severity", f"id {rid}: {r.get('severity')!r} is not one of BENIGN LOW MODERATE HIGH EXTREME")
            return None
    if source == "severity_level":
        v = r.get("severity_level")
        try:
            rank = int(v) if not isinstance(v, bool) and float(v) == int(float(v)) else -1
        except (TypeError, ValueError):
            rank = -1
        if not 0 <= rank <= 4:
            bad("severity_level", f"id {rid}: {v!r} is not a tier rank 0-4")
            return None
        return Tier.from_rank(rank)
    got = [_truthy(r.get(col)) for col in LABEL_COLUMNS.values()]
    if any(g is None for g in got):
        bad("labels", f"id {rid}: labels {[r.get(c) for c in LABEL_COLUMNS.values()]} are not all 0/1")
        return None
    if got != sorted(got, reverse=True):  # unsafe when loose but safe when strict cannot be
        bad("labels", f"id {rid}: strict/moderate/loose labels {[int(g) for g in got]} contradict each other: a looser "
                      "regime cannot flag what a stricter one allows")
        return None
    return [Tier.BENIGN, Tier.LOW, Tier.MODERATE, Tier.HIGH][sum(got)]


# --- items to score (no labels) -------------------------------------------------------

_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with lone surrogates replaced by U+FFFD.

    JSON can carry ``"\\ud800"`` but no encoder can write it: left in, one such character
    fails the tokenizer, the batch it shares and the response that echoes it.
    """
    return _SURROGATES.sub("\ufffd", text) if isinstance(text, str) else text


def clean_item(item: Item) -> Item:
    """``item`` with :func:`clean_text` applied to its id and texts."""
    messages = None if item.messages is None else tuple((r, clean_text(t)) for r, t in item.messages)
    return Item(id=clean_text(item.id), prompt=clean_text(item.prompt),
                response=None if item.response is None else clean_text(item.response), messages=messages)


def _texts(item: Item) -> list[tuple[str, object]]:
    """The texts of an item to check, named: its messages' contents, or prompt and response."""
    if item.messages is not None:
        return [(f"messages[{k}].content", text) for k, (_, text) in enumerate(item.messages)]
    return [("prompt", item.prompt)] + ([] if item.response is None else [("response", item.response)])


@dataclass(frozen=True)
class ItemProblem:
    """What is wrong with one item to score: where (``index``, 0-based; ``field``), a machine
    ``code`` (``missing``, ``not_text``, ``empty``, ``too_long``, ``duplicate_id``) and a message."""

    index: int
    field: str
    code: str
    message: str


class InvalidItemsError(DataError):
    """Items to score that break the input rules; ``problems`` lists each one."""

    def __init__(self, message: str, problems: list[ItemProblem]):
        super().__init__(message)
        self.problems = problems


def text_problem(text: object, field: str, *, max_chars: int) -> tuple[str, str] | None:
    """``(code, message)`` of what is wrong with one text, or None when it can be scored."""
    if text is None:
        return "missing", f"no {field!r}"
    if not isinstance(text, str):
        return "not_text", f"{field!r} is {type(text).__name__}, not a string"
    if not text.strip():
        return "empty", f"{field!r} is empty"
    if len(text) > max_chars:
        return "too_long", f"{field!r} has {len(text)} characters > limit of {max_chars} characters per text"
    return None


def _raise_problems(origin: str, label: str, problems: list[ItemProblem], *, first: int) -> None:
    """One error listing the first problems; items are numbered from ``first`` (rows of a file from 1)."""
    if problems:
        shown = "; ".join(f"{label} {p.index + first} ({p.message})" for p in problems[:_SHOW])
        more = f" and {len(problems) - _SHOW} more" if len(problems) > _SHOW else ""
        raise InvalidItemsError(f"{origin}: {len(problems)} problem(s) in the {label}s: {shown}{more}", problems)


def check_items(items: Sequence[Item], *, max_chars: int = MAX_TEXT_CHARS, origin: str = "request",
                what: str = "input") -> None:
    """Raise :class:`InvalidItemsError` unless every item's texts can be scored (one error listing all)."""
    problems = []
    for k, it in enumerate(items):
        for name, text in _texts(it):
            if bad := text_problem(text, name, max_chars=max_chars):
                problems.append(ItemProblem(k, name, *bad))
    _raise_problems(origin, what, problems, first=0)


def messages_from(value: object) -> tuple[tuple[str, str], ...]:
    """``[{"role", "content"}, ...]`` as ``(role, content)`` pairs; :class:`DataError` naming what is wrong."""
    if not isinstance(value, list) or not value:
        raise DataError("'messages' must be a non-empty list of {role, content} objects")
    out = []
    for k, m in enumerate(value):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant"):
            raise DataError(f"messages[{k}] needs a role of system, user or assistant")
        out.append((m["role"], m.get("content")))
    return tuple(out)


def items_from_rows(rows: Iterable[dict], *, origin: str, max_chars: int = MAX_TEXT_CHARS) -> list[Item]:
    """Build unlabelled items from ``{"id"?, "prompt"|"text", "response"?}`` or ``{"id"?, "messages"}`` rows.

    Rows without an id get their 1-based row number. A ``messages`` row is a conversation,
    moderated turn by turn (:mod:`flexguard.conversation`). Empty or non-string texts and
    texts over ``max_chars`` raise one :class:`InvalidItemsError` listing the first offending rows.
    """
    from .conversation import conversation_item

    items, problems, seen = [], [], set()
    for n, r in enumerate(rows):
        rid = str(r["id"]) if r.get("id") is not None else str(n + 1)
        if r.get("messages") is not None:
            try:
                item = conversation_item(rid, messages_from(r["messages"]))
            except DataError as e:
                problems.append(ItemProblem(n, "messages", "malformed", str(e)))
                continue
            problems += [ItemProblem(n, name, *bad) for name, text in _texts(item)
                         if (bad := text_problem(text, name, max_chars=max_chars))]
            if rid in seen:
                problems.append(ItemProblem(n, "id", "duplicate_id", f"duplicate id {rid!r}"))
            seen.add(rid)
            items.append(clean_item(item))
            continue
        prompt = r.get("prompt", r.get("text", r.get("input")))
        response = r.get("response")
        if prompt is None:
            problems.append(ItemProblem(n, "prompt", "missing", "no 'prompt' (or 'text') field"))
            continue
        for name, text in (("prompt", prompt), ("response", response)):
            if text is None and name == "response":
                continue
            if bad := text_problem(text, name, max_chars=max_chars):
                problems.append(ItemProblem(n, name, *bad))
        if rid in seen:
            problems.append(ItemProblem(n, "id", "duplicate_id", f"duplicate id {rid!r}"))
        seen.add(rid)
        items.append(clean_item(Item(id=rid, prompt=prompt if isinstance(prompt, str) else "",
                                     response=response if isinstance(response, str) else None)))
    _raise_problems(origin, "row", problems, first=1)
    return items


# --- binary public suites -------------------------------------------------------------

#: GuardReasoner benchmark files → (suite name, subset). The refusal set is a different task.
PUBLIC_FILES: dict[str, tuple[str, Subset]] = {
    "0_0_SimpleSafetyTests.json": ("SimpleSafetyTests", "prompt"),
    "0_1_AegisSafetyTest.json": ("Aegis", "prompt"),
    "0_2_OpenAIModeration.json": ("OpenAIModeration", "prompt"),
    "0_3_harmbench_prompt.json": ("HarmBenchPrompt", "prompt"),
    "0_8_toxic_chat.json": ("ToxicChat", "prompt"),
    "0_5_harmbench_response.json": ("HarmBenchResponse", "response"),
    "0_6_xstest_response_harmful.json": ("XSTestResponse", "response"),
    "0_9_safe_rlhf.json": ("SafeRLHF", "response"),
    "0_A_beaver_tails.json": ("BeaverTails", "response"),
}
_GR_INPUT = re.compile(r"^Human user:\n(?P<prompt>.*?)\n\nAI assistant:\n(?P<response>.*?)\n\n$", re.S)
_GR_LABEL = re.compile(r"(?:Response:\s*)?\b(harmful|unharmful)\b", re.I)


def load_public(directory: str | Path, names: Iterable[str] | None = None) -> dict[str, Benchmark]:
    """Load the binary public guard suites (GuardReasoner's JSON format) from ``directory``.

    Returns ``{suite name: Benchmark}`` with ``Item.harmful`` set and no tiers.
    """
    directory = Path(directory)
    wanted = None if names is None else {n.lower() for n in names}
    out: dict[str, Benchmark] = {}
    for fname, (name, subset) in PUBLIC_FILES.items():
        if wanted is not None and name.lower() not in wanted:
            continue
        path = directory / fname
        if not path.exists():
            continue
        items = []
        for n, row in enumerate(_read_json_rows(path), 1):
            m = _GR_INPUT.match(row.get("input", ""))
            label = _GR_LABEL.findall(str(row.get("output", "")))
            if not m or not label:
                raise DataError(f"{path}: row {n} is not in the GuardReasoner format (input/output)")
            response = m["response"]
            items.append(Item(
                id=f"{name}-{n}", prompt=m["prompt"],
                response=None if subset == "prompt" or response == "None" else response,
                harmful=label[-1].lower() == "harmful", source=name,
            ))
        out[name] = Benchmark(name=name, subset=subset, split="public", items=items, origin=str(path))
    if wanted is not None and (unknown := wanted - {k.lower() for k in out}):
        raise DataError(
            f"no public suite named {', '.join(sorted(unknown))} in {directory}; "
            f"known: {', '.join(n for n, _ in PUBLIC_FILES.values())}"
        )
    if not out:
        raise DataError(f"{directory}: none of the public benchmark files ({', '.join(PUBLIC_FILES)}) is there")
    return out

"""A backend that reads precomputed predictions, so any external guard can be evaluated."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from ..data import _truthy, read_jsonl
from ..errors import ConfigError, DataError
from ..rubric import Category
from ..schema import Item, ModerationResult

SCORE_KEYS = ("score", "risk_score")
LABEL_KEYS = ("flagged", "label", "unsafe", "prediction")


def read_predictions(path: str | Path) -> dict[str, ModerationResult]:
    """Read ``{"id", "score"|"risk_score"}`` or ``{"id", "flagged"|"label"}`` lines.

    A score must lie in 0–100; a label may be a bool, 0/1, or safe/unsafe/harmful/unharmful.
    ``category`` and ``parse_error`` are optional. Problems name the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such predictions file")
    out: dict[str, ModerationResult] = {}
    for n, row in enumerate(read_jsonl(path), 1):
        where = f"{path}: record {n}"
        if row.get("id") is None:
            raise DataError(f"{where}: no 'id'")
        rid = str(row["id"])
        score = next((row[k] for k in SCORE_KEYS if row.get(k) is not None), None)
        label = next((row[k] for k in LABEL_KEYS if row.get(k) is not None), None)
        if score is not None:
            try:
                score = float(score)
            except (TypeError, ValueError):
                raise DataError(f"{where}: score {score!r} is not a number") from None
            if not 0 <= score <= 100:
                raise DataError(f"{where}: score {score:g} is outside 0-100 (if your scores are 0-1, multiply by 100)")
        flagged = None
        if score is None and label is not None:
            flagged = _truthy(label)
            if flagged is None:
                raise DataError(f"{where}: label {label!r} is not one of true/false, 1/0, unsafe/safe, harmful/unharmful")
        parse_error = bool(row.get("parse_error", False))
        if score is None and flagged is None and not parse_error:
            raise DataError(f"{where}: needs a 'score' (0-100) or a 'flagged' label, or parse_error: true")
        category = None
        if row.get("category") not in (None, ""):
            category = Category.parse(row["category"])
        out[rid] = ModerationResult(
            id=rid, score=score, flagged=flagged, category=category,
            category_scores=row.get("category_scores"), parse_error=parse_error, raw=row.get("raw"),
            latency_ms=row.get("latency_ms"),
        )
    if not out:
        raise DataError(f"{path}: no predictions")
    return out


class PredictionsModerator:
    """Looks items up by id in a predictions JSONL file (``--predictions FILE``)."""

    name = "predictions"
    supports_response_mode = True
    options = ()

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._preds = read_predictions(self.path)

    @classmethod
    def from_spec(cls, arg: str | None, **options: Any) -> "PredictionsModerator":
        if not arg:
            raise ConfigError("the predictions backend needs a file: --model predictions:FILE or --predictions FILE")
        return cls(arg)

    def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        missing = [i.id for i in items if i.id not in self._preds]
        if missing:
            raise DataError(
                f"{self.path}: no prediction for {len(missing)} of {len(items)} items "
                f"(first ids: {', '.join(missing[:5])}); ids must match the data's 'id' column"
            )
        return [self._preds[i.id] for i in items]

    def info(self) -> dict[str, Any]:
        return {"model": f"predictions:{self.path}", "revision": None, "template_sha256": None}

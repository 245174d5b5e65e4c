"""Drive a moderator over many items: batching, progress, incremental JSONL, resume.

This is the one place that writes predictions as they are produced, so an interrupted
job loses at most the batch in flight and re-running the same command resumes it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import ConfigError, DataError
from .moderators import Moderator
from .schema import Item, ModerationResult, RunManifest

log = logging.getLogger(__name__)


@dataclass
class ScoreRun:
    """Results in item order, plus how they were obtained."""

    results: list[ModerationResult]
    manifest: RunManifest
    resumed: int = 0


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def _read_done(out: Path) -> dict[str, dict]:
    """Records already written; a torn last line (from a crash) is cut from the file."""
    data = out.read_bytes()
    lines = data.splitlines(keepends=True)
    done: dict[str, dict] = {}
    good_bytes = 0
    for n, line in enumerate(lines, 1):
        last = n == len(lines)
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            if not last:
                raise DataError(f"{out}:{n}: cannot resume, this line is not valid JSON; move the file away") from None
            log.warning("%s: dropping an incomplete last line left by an interrupted run", out)
            break
        if last and not line.endswith(b"\n"):
            break  # complete JSON but no newline: the write may not have finished
        done[str(rec["id"])] = rec
        good_bytes += len(line)
    if good_bytes != len(data):
        with open(out, "r+b") as f:
            f.truncate(good_bytes)
    return done


def score_items(
    moderator: Moderator,
    items: Sequence[Item],
    *,
    out: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    resume: bool = True,
    annotate: Callable[[Item, ModerationResult], dict[str, Any]] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> ScoreRun:
    """Score ``items`` in batches, appending each batch to ``out`` (JSONL) as it finishes.

    With ``resume`` (default), ids already in ``out`` are not scored again, provided the
    file was written by the same model (checked against its ``.manifest.json``).
    ``annotate(item, result)`` may add fields to each written record (e.g. decisions).
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if any(i.response is not None for i in items) and not getattr(moderator, "supports_response_mode", True):
        raise ConfigError(f"model {moderator.name!r} cannot moderate responses (prompt mode only)")
    info = moderator.info()
    manifest = RunManifest(
        model=info.get("model", moderator.name), revision=info.get("revision"),
        template_sha256=info.get("template_sha256"),
        mode="response" if any(i.response is not None for i in items) else "prompt",
        extra={**{k: v for k, v in info.items() if k not in ("model", "revision", "template_sha256")}, **(manifest_extra or {})},
    )
    done: dict[str, dict] = {}
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        mpath = manifest_path(out_path)
        if out_path.exists() and out_path.stat().st_size and resume:
            if mpath.exists():
                old = json.loads(mpath.read_text())
                if (old.get("model"), old.get("template_sha256")) != (manifest.model, manifest.template_sha256):
                    raise ConfigError(
                        f"{out_path} holds results of model {old.get('model')!r}, not {manifest.model!r}; "
                        "choose another output or delete the file to start over"
                    )
            done = _read_done(out_path)
        elif out_path.exists() and not resume:
            out_path.unlink()
        mpath.write_text(manifest.to_json())
    ids = {i.id for i in items}
    todo = [i for i in items if i.id not in done]
    results: dict[str, ModerationResult] = {rid: ModerationResult.from_dict(r) for rid, r in done.items() if rid in ids}

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc=f"scoring ({moderator.name})")
    fh = open(out_path, "a", encoding="utf-8") if out_path is not None else None
    t0 = time.perf_counter()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            got = moderator.score(batch)
            if len(got) != len(batch):
                raise RuntimeError(f"backend {moderator.name} returned {len(got)} results for {len(batch)} items")
            for item, res in zip(batch, got):
                if res.id != item.id:
                    res = dataclasses.replace(res, id=item.id)
                results[item.id] = res
                if fh is not None:
                    rec = res.to_dict()
                    if annotate is not None:
                        rec.update(annotate(item, res))
                    fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
            if bar is not None:
                bar.update(len(batch))
    finally:
        if fh is not None:
            fh.close()
        if bar is not None:
            bar.close()
    elapsed = time.perf_counter() - t0
    manifest.items = len(items)
    manifest.items_per_s = round(len(todo) / elapsed, 2) if todo and elapsed > 0 else None
    if out_path is not None:
        manifest_path(out_path).write_text(manifest.to_json())
    return ScoreRun(results=[results[i.id] for i in items], manifest=manifest, resumed=len(items) - len(todo))

"""Drive a moderator over many items: batching, progress, incremental JSONL, resume.

This is the one place that writes predictions as they are produced, so an interrupted job
loses at most the batch in flight and re-running the same command resumes it. A resumed
file must come from the same configuration (model, template, policy and decision options:
its ``.manifest.json`` records a hash of them), and a row whose text changed under the same
id is scored again. One item the moderator fails on never fails its batch: the batch is
retried item by item and the failing item gets a result with ``error`` set (retried on the
next resume), which the policy then decides on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .conversation import score_turns
from .errors import ConfigError, DataError, FlexGuardError
from .moderators import Moderator
from .records import result_from_record, result_record
from .schema import Item, ModerationResult, RunManifest, item_sha256
from .thresholds import Policy

log = logging.getLogger(__name__)


@dataclass
class ScoreRun:
    """Results in item order, plus how they were obtained."""

    results: list[ModerationResult]
    manifest: RunManifest
    resumed: int = 0


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + ".manifest.json")


def config_sha256(info: dict[str, Any], settings: dict[str, Any] | None) -> str:
    """A hash of what decides a file's records: the moderator's info and the caller's settings."""
    blob = json.dumps({"moderator": info, "settings": settings or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _read_done(out: Path) -> dict[str, dict]:
    """Records already written (the last one per id); a torn last line (from a crash) is cut from the file."""
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
        if not isinstance(rec, dict) or "id" not in rec:
            raise DataError(f"{out}:{n}: cannot resume, this line is not a result record; move the file away")
        done[str(rec["id"])] = rec
        good_bytes += len(line)
    if good_bytes != len(data):
        with open(out, "r+b") as f:
            f.truncate(good_bytes)
    return done


def score_isolated(moderator: Moderator, batch: Sequence[Item]) -> list[ModerationResult]:
    """``moderator.score(batch)``, made safe for neighbours: if it raises, the items are scored one
    by one, so one bad item fails only itself (its result carries ``error``); a score that is
    not a number in 0–100 becomes an error too, never a value passed on. Conversations are
    scored turn by turn (:func:`flexguard.conversation.score_turns`).

    A :class:`~flexguard.errors.FlexGuardError` (a server that cannot be reached, a missing
    extra) is not about one item: it propagates (a batch job stops and a re-run resumes).
    """
    return score_turns(lambda flat: _isolated(moderator, flat), batch)


def _isolated(moderator: Moderator, batch: Sequence[Item]) -> list[ModerationResult]:
    try:
        got = moderator.score(batch)
    except FlexGuardError:
        raise
    except Exception as e:  # noqa: BLE001 - whatever a backend raises on one input must not fail the others
        if len(batch) == 1:
            return [ModerationResult(id=batch[0].id, error=f"{type(e).__name__}: {e}")]
        log.warning("a batch of %d failed (%s); scoring its items one by one", len(batch), type(e).__name__)
        return [r for it in batch for r in _isolated(moderator, [it])]
    if len(got) != len(batch):
        raise RuntimeError(f"backend {moderator.name} returned {len(got)} results for {len(batch)} items")
    return [_checked(r if r.id == it.id else dataclasses.replace(r, id=it.id)) for it, r in zip(batch, got)]


def _checked(r: ModerationResult) -> ModerationResult:
    if r.score is None or (isinstance(r.score, (int, float)) and math.isfinite(r.score) and 0 <= r.score <= 100):
        return r
    return dataclasses.replace(r, score=None, error=f"the moderator returned an invalid score {r.score!r}")


def score_items(
    moderator: Moderator,
    items: Sequence[Item],
    *,
    out: str | Path | None = None,
    batch_size: int = 32,
    progress: bool = True,
    resume: bool = True,
    policy: Policy | None = None,
    strictness: str | None = None,
    threshold: float | None = None,
    annotate: Callable[[Item, ModerationResult], dict[str, Any]] | None = None,
    settings: dict[str, Any] | None = None,
    manifest_extra: dict[str, Any] | None = None,
) -> ScoreRun:
    """Score ``items`` in batches, appending each batch's records to ``out`` (JSONL) as it finishes.

    Parameters
    ----------
    policy, strictness, threshold : what decides the written records
        (:func:`flexguard.records.result_record`; default: the rubric-default policy).
    annotate : adds fields to each written record (e.g. the texts, for distillation).
    settings : what else decides the records (e.g. a teacher's sampling): with the decision
        options, part of the configuration hash that a resumed file must match.
    resume : with an existing ``out``, score only the items not yet in it (same
        configuration required: a different one is a :class:`ConfigError` naming both);
        ``False`` starts the file afresh.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if any(i.response is not None for i in items) and not getattr(moderator, "supports_response_mode", True):
        raise ConfigError(f"model {moderator.name!r} cannot moderate responses (prompt mode only)")
    policy = policy or Policy()
    settings = {"policy": policy.to_dict(), "strictness": strictness, "threshold": threshold, **(settings or {})}
    info = moderator.info()
    manifest = RunManifest(
        model=info.get("model", moderator.name), revision=info.get("revision"),
        template_sha256=info.get("template_sha256"),
        mode="response" if any(i.response is not None for i in items) else "prompt",
        extra={**{k: v for k, v in info.items() if k not in ("model", "revision", "template_sha256")},
               "config_sha256": config_sha256(info, settings), "settings": settings, **(manifest_extra or {})},
    )
    done: dict[str, dict] = {}
    out_path = Path(out) if out is not None else None
    if out_path is not None:
        if out_path.is_dir():
            raise ConfigError(f"{out_path} is a folder; --out takes a file path such as {out_path / 'scored.jsonl'}")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        mpath = manifest_path(out_path)
        if out_path.exists() and out_path.stat().st_size and resume:
            _check_same_run(out_path, mpath, manifest)
            done = _read_done(out_path)
        elif out_path.exists() and not resume:
            out_path.unlink()
        mpath.write_text(manifest.to_json())
    hashes = {i.id: item_sha256(i) for i in items}
    fresh = {rid: r for rid, r in done.items()
             if rid in hashes and r.get("text_sha256") == hashes[rid] and not r.get("error")}
    todo = [i for i in items if i.id not in fresh]
    results: dict[str, ModerationResult] = {rid: result_from_record(r) for rid, r in fresh.items()}

    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(items), initial=len(items) - len(todo), unit="item", desc=f"scoring ({moderator.name})")
    fh = open(out_path, "a", encoding="utf-8") if out_path is not None else None
    t0 = time.perf_counter()
    try:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for item, res in zip(batch, score_isolated(moderator, batch)):
                results[item.id] = res
                if fh is not None:
                    rec = {**result_record(item, res, policy, strictness=strictness, threshold=threshold),
                           "text_sha256": hashes[item.id]}
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


def _check_same_run(out: Path, mpath: Path, manifest: RunManifest) -> None:
    """Refuse to append to a file written by another model or configuration."""
    if not mpath.exists():
        raise ConfigError(f"{out} exists but has no {mpath.name}, so it cannot be checked for resuming; "
                          "choose another --out, or start afresh (--no-resume)")
    try:
        old = json.loads(mpath.read_text())
    except json.JSONDecodeError:
        raise ConfigError(f"{mpath}: malformed; choose another --out or start afresh (--no-resume)") from None
    if old.get("model") != manifest.model:
        raise ConfigError(f"{out} holds results of model {old.get('model')!r}, not {manifest.model!r}; "
                          "choose another --out, or start afresh (--no-resume)")
    if old.get("extra", {}).get("config_sha256") != manifest.extra["config_sha256"]:
        before, now = old.get("extra", {}).get("settings"), manifest.extra["settings"]
        raise ConfigError(f"{out} was written with another configuration (template, model options or decision "
                          f"settings: {before} then, {now} now); choose another --out, or start afresh (--no-resume)")

"""Micro-batching with fairness and load shedding: concurrent requests share model calls.

Each request's items wait in a queue of their own; one worker builds each batch by taking
items round-robin across the waiting requests (up to ``max_batch``, waiting at most
``max_wait_ms`` for company once the first arrives), so a one-item request joins the next
batch instead of waiting behind a 256-item one. Scoring runs in a thread through
:func:`flexguard.runner.score_isolated`, so one bad item never fails its batch and the event
loop stays free for health checks. At most ``max_queue`` items wait: a request that would
exceed it is refused at once (:class:`Overloaded`, answered 429 with ``Retry-After``).
"""

from __future__ import annotations

import asyncio
import collections
import time
from dataclasses import dataclass, field
from typing import Sequence

from ..moderators import Moderator
from ..runner import score_isolated
from ..schema import Item, ModerationResult


class Overloaded(Exception):
    """The queue is full; ``retry_after`` is the estimated wait in seconds."""

    def __init__(self, retry_after: int):
        super().__init__(f"server busy: retry after {retry_after} s")
        self.retry_after = retry_after


@dataclass
class _Request:
    items: collections.deque = field(default_factory=collections.deque)  # (Item, Future) not yet batched


class MicroBatcher:
    def __init__(self, moderator: Moderator, *, max_batch: int = 32, max_wait_ms: float = 5.0, max_queue: int = 2048):
        self.moderator = moderator
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._pending: collections.deque[_Request] = collections.deque()
        self._queued = 0
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0
        self._items_per_s = 100.0  # running estimate, for Retry-After

    @property
    def queued(self) -> int:
        """Items waiting to be batched."""
        return self._queued

    async def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        if self._wake is None:
            raise RuntimeError("start() the batcher first")
        if self._queued + len(items) > self.max_queue:
            raise Overloaded(max(1, round((self._queued + len(items)) / self._items_per_s)))
        loop = asyncio.get_running_loop()
        req = _Request()
        futures = [loop.create_future() for _ in items]
        req.items.extend(zip(items, futures))
        self._pending.append(req)
        self._queued += len(items)
        self._wake.set()
        try:
            return list(await asyncio.gather(*futures))
        except asyncio.CancelledError:  # the caller timed out or left: drop what was not batched yet
            self._queued -= len(req.items)
            req.items.clear()
            raise

    def _take(self) -> list[tuple[Item, asyncio.Future]]:
        """Up to ``max_batch`` items, one per waiting request in turn."""
        batch: list[tuple[Item, asyncio.Future]] = []
        while self._pending and len(batch) < self.max_batch:
            req = self._pending.popleft()
            if req.items:
                batch.append(req.items.popleft())
            if req.items:
                self._pending.append(req)
        self._queued -= len(batch)
        return batch

    async def _worker(self) -> None:
        assert self._wake is not None
        loop = asyncio.get_running_loop()
        while True:
            if not self._queued:
                self._wake.clear()
                await self._wake.wait()
            if self._queued < self.max_batch and self.max_wait > 0:
                await asyncio.sleep(self.max_wait)  # a moment for company
            live = [(it, f) for it, f in self._take() if not f.done()]  # skip requests that gave up
            if not live:
                continue
            t0 = time.perf_counter()
            try:
                results = await loop.run_in_executor(None, score_isolated, self.moderator, [it for it, _ in live])
                self.batches += 1
                for (_, fut), res in zip(live, results):
                    if not fut.done():
                        fut.set_result(res)
            except Exception as e:  # a failure of the moderator as a whole (e.g. its server is down)
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)
            rate = len(live) / max(time.perf_counter() - t0, 1e-6)
            self._items_per_s = 0.8 * self._items_per_s + 0.2 * rate

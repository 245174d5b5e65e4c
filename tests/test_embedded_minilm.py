"""MiniLM embedding pieces: windows, padding, length batching."""

import numpy as np
import pytest

from flexguard.embedded.minilm import (
    CLS_ID,
    PROMPT_CONTEXT,
    SEP_ID,
    encode_windows,
    length_batches,
    load_minilm_tokenizer,
    pad_batch,
)


def test_embedder_windows():
    from flexguard.embedded.minilm import MiniLMEmbedder

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


@pytest.fixture(scope="module")
def tok():
    return load_minilm_tokenizer()


def test_prompt_windows(tok):
    w = encode_windows(tok, ["hello world", "word " * 300, ""], max_len=128, max_chunks=2)
    assert w.owner.tolist() == [0, 1, 1, 2]
    assert w.truncated.tolist() == [False, True, False]  # 300 pieces need 3 windows of 126
    assert w.ids[0][0] == CLS_ID and w.ids[0][-1] == SEP_ID and len(w.ids[0]) == 4
    assert all(len(x) <= 128 for x in w.ids) and all(set(t) == {0} for t in w.types)
    assert w.ids[3] == [CLS_ID, 100, SEP_ID]  # empty text becomes [UNK], never a zero-length window


def test_pair_windows_keep_prompt_context(tok):
    prompt = "how do i " + "really " * 200 + "do it"
    w = encode_windows(tok, ["short question", prompt], ["short answer", "step " * 400], max_len=256, max_chunks=8)
    first = w.ids[0]
    assert first.count(SEP_ID) == 2 and w.types[0] == [0] * 4 + [1] * 3  # [CLS] short question [SEP] | short answer [SEP]
    long_windows = [i for i, o in enumerate(w.owner) if o == 1]
    assert len(long_windows) == 3  # 400 response pieces in windows of 256 - 3 - 64 = 189: every piece is read
    for i in long_windows:
        ids, types = w.ids[i], w.types[i]
        assert len(ids) <= 256 and types.count(0) == PROMPT_CONTEXT + 2  # each window carries the prompt's start
        assert ids[:PROMPT_CONTEXT + 2] == w.ids[long_windows[0]][:PROMPT_CONTEXT + 2]
    assert not w.truncated.any() and w.n_chunks.tolist() == [1, len(long_windows)]


def test_long_prompt_short_response_trims_the_prompt_only(tok):
    w = encode_windows(tok, ["a " * 500], ["fine"], max_len=64)
    assert len(w.ids) == 1 and len(w.ids[0]) == 64 and w.types[0][-2:] == [1, 1]
    w = encode_windows(tok, ["a " * 500], ["b " * 500], max_len=64)  # both long: the prompt keeps at most half
    assert all(len(x) == 64 and t.count(0) == 2 + 30 for x, t in zip(w.ids, w.types)) and len(w.ids) == 8

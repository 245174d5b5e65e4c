"""Cross-encoder runtime pieces that need no model: windowing, padding, pooling."""

import numpy as np
import pytest

from flexguard.crossencoder import CLS_ID, PROMPT_CONTEXT, SEP_ID, encode_windows, pool_windows
from flexguard.embedding import load_minilm_tokenizer


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


def test_pool_windows():
    cut, cat = pool_windows(np.array([[0.0, -1], [2, -3], [1, 1]]), np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2)
    assert cut.tolist() == [[2, -1], [1, 1]] and cat.ravel().tolist() == [2, 5]

"""Cross-encoder runtime pieces that need no model (windowing is tested in test_embedding.py)."""

import numpy as np

from flexguard.embedded.crossencoder import pool_windows


def test_pool_windows():
    cut, cat = pool_windows(np.array([[0.0, -1], [2, -3], [1, 1]]), np.array([[1.0], [3.0], [5.0]]), np.array([0, 0, 1]), 2)
    assert cut.tolist() == [[2, -1], [1, 1]] and cat.ravel().tolist() == [2, 5]

"""Raw uint8 pixels into a float32 input tensor: the same values as the table's floats."""

from __future__ import annotations

import threading

import numpy as np

from edge_runtime import EdgeClassifier


def test_float_model_raw_pixels_equal_model_space(edge_models):
    """uint8 batches (chunked, padded), single images and threads == the float table input."""
    clf = EdgeClassifier.load(edge_models["mlp_float32"], batch_size=8)  # 5 chunks, last padded
    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, size=(37, 28, 28, 1), dtype=np.uint8)
    want = clf.predict_proba(clf._lut[x])  # model-space floats: the table's values as input
    np.testing.assert_array_equal(clf.predict_proba(x), want)
    single = np.stack([clf.predict(img[..., 0])[0].probabilities for img in x])
    np.testing.assert_array_equal(single, want)
    got: dict[int, np.ndarray] = {}

    def work(t: int) -> None:
        got[t] = np.stack([clf.predict_proba(x[i])[0] for i in range(t, 37, 4)])

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for t in range(4):
        np.testing.assert_array_equal(got[t], want[t::4])

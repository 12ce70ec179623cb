"""Raw uint8 pixels into a float32 input tensor: the same values as the table's floats."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_runtime import EdgeClassifier
from edge_runtime.metadata.block import read_metadata


def test_float_model_raw_pixels_equal_model_space(edge_models):
    """uint8 batches (chunked, padded), single images and threads == the float table input."""
    clf = EdgeClassifier.load(edge_models["mlp_float32"], batch_size=8)  # 5 chunks, last padded
    rng = np.random.default_rng(13)
    x = rng.integers(0, 256, size=(37, 28, 28, 1), dtype=np.uint8)
    # model-space floats worked out here from the model's metadata (p * scale + offset), not
    # from the classifier's own table
    meta = read_metadata(edge_models["mlp_float32"])["input"]
    assert meta["scale"] == pytest.approx(1 / 255) and meta.get("offset", 0.0) == 0.0
    floats = x.astype(np.float32) * np.float32(meta["scale"]) + np.float32(meta.get("offset", 0))
    want = clf.predict_proba(floats)
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

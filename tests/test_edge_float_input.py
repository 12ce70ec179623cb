"""Raw uint8 pixels into a float32 input tensor: the in-place ufunc path equals the table."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from edge_runtime import EdgeClassifier
from edge_runtime.classifier import _exact_affine


@pytest.mark.parametrize(
    ("scale", "offset"),
    [(1 / 255, 0.0), (2 / 255, -1.0), (1 / 127.5, -1.0), (0.5, 0.0), (1.0, 0.0), (0.017, -2.1)],
)
def test_exact_affine_reproduces_the_table(scale, offset):
    lut = (np.arange(256, dtype=np.float64) * scale + offset).astype(np.float32)  # as _setup
    found = _exact_affine(lut, scale, offset)
    if found is None:  # allowed: the classifier then gathers through the table
        return
    ufunc, constant, add = found
    values = np.arange(256, dtype=np.uint8).astype(np.float32)
    ufunc(values, constant, out=values)
    if add is not None:
        np.add(values, add, out=values)
    np.testing.assert_array_equal(values.view(np.uint32), lut.view(np.uint32))


def test_exact_affine_only_for_float_tables():
    assert _exact_affine(np.arange(256, dtype=np.uint8).view(np.int8), 1.0, 0.0) is None
    assert _exact_affine(np.zeros(256, np.float32), 0.0, 0.0) is None
    table = (np.arange(256, dtype=np.float64) / 255).astype(np.float32)
    assert _exact_affine(table, 1 / 255, 0.0) is not None  # the default metadata scale


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

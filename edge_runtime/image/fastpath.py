"""The tables of `EdgeClassifier.predict`'s single-image path (one uint8 image, the common call).

One 256-entry table maps a pixel to the input tensor's value: the same values `_to_tensor`
computes (the classifier's quantization table for an integer tensor, `pixel * scale + offset`
in float32 for a float one). Where that table is `pixel - 128` in int8 (edgeship's int8 input),
an XOR with 0x80 viewed as int8 gives the same bytes in one cheap pass. A softmax output of int8
or uint8 is dequantized through a second table (the same float32 arithmetic as
`_probabilities`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import numpy.typing as npt

    from edge_runtime.classifier import EdgeClassifier

    # (pixel table, XOR shortcut, image shapes taken, feed shape, dequantization table)
    FastTables = tuple[
        npt.NDArray[Any],
        bool,
        frozenset[tuple[int, ...]],
        tuple[int, ...],
        npt.NDArray[np.float32] | None,
    ]


def single_image_tables(clf: EdgeClassifier) -> FastTables:
    """(pixel table, XOR shortcut, image shapes taken, feed shape, dequantization table)."""
    pixels = np.arange(256, dtype=np.uint8)
    scores = None
    out = clf.output_spec
    if clf._final and clf._dequantize is not None and out.dtype in (np.int8, np.uint8):
        codes = pixels.astype(out.dtype)  # int8: 128..255 read as -128..-1, as take() wraps
        zero_point, scale = clf._dequantize
        scores = (codes.astype(np.float32) - zero_point) * scale
    feed = (1, *clf._feed_shape)
    if clf._per_channel:  # one scaling per channel: no single table, `_to_tensor` does it
        return np.zeros(0, np.float32), False, frozenset(), feed, scores
    table = clf._lut
    if clf._float_input:
        table = pixels * clf._scale32
        if clf._has_offset:
            table += clf._offset32
    minus_128 = (pixels.astype(np.int16) - 128).astype(np.int8)
    xor = table.dtype == np.int8 and np.array_equal(table, minus_128)
    shapes = (clf.input_shape, clf._gray_shape)
    return table, xor, frozenset(s for s in shapes if s is not None), feed, scores

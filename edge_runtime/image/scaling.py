"""How raw pixels (0-255) become a model's input values: `p * scale + offset`, per channel."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_runtime.metadata.standard import StandardMetadata
from edge_runtime.tensors import TensorSpec

_PerChannel = np.ndarray[Any, np.dtype[np.float32]]  # one value per channel
Scaling = tuple[float | _PerChannel, float | _PerChannel, str]


def raw_pixel_scaling(
    meta_input: dict[str, Any],
    spec: TensorSpec,
    standard: StandardMetadata | None,
    channels: int,
) -> Scaling:
    """(scale, offset, source): edgeship's block first, then the standard metadata's
    `NormalizationOptions` (a float input only, as MediaPipe reads it), then an 8-bit input's
    own quantization (raw pixels), else unchanged. Scale/offset are floats, or float32 arrays
    of one value per channel when the normalization differs between channels."""
    if "scale" in meta_input:
        scale, offset = meta_input["scale"], meta_input.get("offset", 0.0)
        if isinstance(scale, list) or isinstance(offset, list):  # per channel (--input-mean/std)
            scale = np.broadcast_to(np.asarray(scale, np.float32), (channels,)).copy()
            offset = np.broadcast_to(np.asarray(offset, np.float32), (channels,)).copy()
            return scale, offset, "edgeship metadata"
        return float(scale), float(offset), "edgeship metadata"
    if standard is not None and standard.mean is not None and spec.dtype.kind == "f":
        # (p - mean) / std  ==  p * (1 / std) + (-mean / std), channel by channel
        mean = np.broadcast_to(np.asarray(standard.mean, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(standard.std, np.float64), (channels,))
        scale, offset = 1.0 / std, -mean / std
        if np.all(scale == scale[0]) and np.all(offset == offset[0]):
            return float(scale[0]), float(offset[0]) + 0.0, "standard metadata"
        return scale.astype(np.float32), offset.astype(np.float32), "standard metadata"
    if spec.quantized and spec.dtype.itemsize == 1:
        # No metadata, an 8-bit input tensor (a stock model): raw pixels go in unchanged
        # (uint8), or shifted by -128 (int8, TFLite's uint8 -> int8 rule): whatever the
        # tensor's quantization says the model sees, it sees it for the pixels it expects.
        shift = -128 if spec.dtype == np.int8 else 0
        return spec.scale, (shift - spec.zero_point) * spec.scale, "input tensor"
    return 1.0, 0.0, "none"

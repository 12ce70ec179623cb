"""`TensorSpec`: an interpreter tensor's details, made once at the edge of edge_runtime."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

QUANTIZED_DTYPES = (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16))


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor: name, index, shape, dtype and (per-tensor) quantization.

    `shape` is the current shape (batch included); `shape_signature` has -1 where the model
    allows any size. `scale == 0` means the tensor is not quantized.
    """

    name: str
    index: int
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    dtype: np.dtype[Any]
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", np.dtype(self.dtype))
        if self.index < 0:
            raise ValueError(f"Tensor index must be >= 0. Received: index={self.index}")
        if len(self.shape) != len(self.shape_signature):
            raise ValueError(
                "shape and shape_signature must have the same rank. "
                f"Received: shape={self.shape}, shape_signature={self.shape_signature}"
            )
        if self.scale < 0:
            raise ValueError(f"Quantization scale must be >= 0. Received: scale={self.scale}")

    @classmethod
    def from_details(cls, details: dict[str, Any]) -> TensorSpec:
        """Build from one dict of `Interpreter.get_input_details()`/`get_output_details()`."""
        shape = tuple(int(d) for d in details["shape"])
        signature = details.get("shape_signature")
        signature = tuple(int(d) for d in signature) if signature is not None else shape
        scale, zero_point = details.get("quantization", (0.0, 0))
        return cls(
            name=str(details.get("name", "")),
            index=int(details["index"]),
            shape=shape,
            shape_signature=signature,
            dtype=np.dtype(details["dtype"]),
            scale=float(scale),
            zero_point=int(zero_point),
        )

    @property
    def quantized(self) -> bool:
        """True if the tensor holds integers that stand for `scale * (q - zero_point)`."""
        return self.scale > 0 and self.dtype in QUANTIZED_DTYPES

    @property
    def batch_resizable(self) -> bool:
        """True if the model declares a dynamic batch dimension (-1)."""
        return len(self.shape_signature) > 0 and self.shape_signature[0] == -1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly view (for `info`)."""
        return {
            "name": self.name,
            "index": self.index,
            "shape": list(self.shape),
            "shape_signature": list(self.shape_signature),
            "dtype": self.dtype.name,
            "quantization": {"scale": self.scale, "zero_point": self.zero_point}
            if self.quantized
            else None,
        }

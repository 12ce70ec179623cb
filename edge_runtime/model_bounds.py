"""`--max-model-mb`: what a model's input tensors may take, checked before any allocation.

A 2.8 KB model may declare a 1x16384x16384x3 float input: its interpreter's arena and the
image resized to it would take gigabytes (a Pi is OOM-killed). The declared inputs are read
from the flatbuffer itself (edge_runtime.metadata.graph.input_tensors) and checked against the bound
before an interpreter exists, in `predict`, `serve`, `bench` and `info` alike. The default fits
a 1 GB Pi. (The interpreter's own arena is not readable before allocation from Python; the
inputs are what a small file can make huge.)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from edge_runtime.errors import ModelFileError

if TYPE_CHECKING:
    import argparse

DEFAULT_MAX_MODEL_MB = 256.0
MB = 1024 * 1024


class ModelTooLargeError(ModelFileError):
    """A model whose declared input tensors are over --max-model-mb."""


def max_model_option(parser: argparse.ArgumentParser) -> None:
    """The `--max-model-mb MB` argument of predict, bench, info and serve."""
    parser.add_argument(
        "--max-model-mb",
        type=float,
        default=DEFAULT_MAX_MODEL_MB,
        metavar="MB",
        help=f"largest input tensors a model may declare (default {DEFAULT_MAX_MODEL_MB:g}, "
        "a 1 GB Pi; larger: refused before any allocation)",
    )


def check_model_memory(
    data: bytes, max_model_mb: float, batch: int = 1, source: str = "<bytes>"
) -> None:
    """ModelTooLargeError when the inputs of `data` (times `batch`) exceed `max_model_mb`."""
    from edge_runtime.metadata.graph import input_tensors  # not at import: the CLIs' parsers

    if not max_model_mb > 0:
        raise ModelFileError(f"--max-model-mb must be > 0. Received: --max-model-mb {max_model_mb}")
    inputs = input_tensors(data, source)
    total = sum(size for _, _, size in inputs) * batch
    if total <= max_model_mb * MB:
        return
    shapes = ", ".join(f"{'x'.join(map(str, shape))} {kind}" for shape, kind, _ in inputs)
    raise ModelTooLargeError(
        f"The model's input ({shapes}{f', batch {batch}' if batch > 1 else ''}) needs "
        f"{total / MB:,.0f} MB, over --max-model-mb {max_model_mb:g}: refusing to allocate it. "
        f"Pass --max-model-mb with a larger bound if this device has the memory. "
        f"Received: {source}"
    )

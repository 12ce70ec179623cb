"""The bundle's smoke test: a sample image per model input and what the desktop answers on it."""

from __future__ import annotations

import gzip
import io
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgeship.deploy.errors import BundleError

if TYPE_CHECKING:  # NumPy is imported where a sample is made: `edgeship deploy --help` stays cheap
    import numpy as np


def _fashion_mnist_image(source: str | None) -> np.ndarray | None:
    """The first Fashion-MNIST test image (28, 28, 1) uint8 from the dataset folder, if there."""
    import numpy as np

    if not source:
        return None
    for name in ("t10k-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte"):
        path = Path(source) / name
        if path.is_file():
            try:
                opener = gzip.open if name.endswith(".gz") else open
                with opener(path, "rb") as handle:
                    head = handle.read(16 + 28 * 28)
            except OSError:
                return None
            if len(head) == 16 + 28 * 28 and head[:4] == b"\x00\x00\x08\x03":
                return np.frombuffer(head[16:], dtype=np.uint8).reshape(28, 28, 1).copy()
    return None


def _synthetic_image(shape: tuple[int, int, int]) -> np.ndarray:
    """A deterministic light blob on a dark background of `shape` (H, W, C)."""
    import numpy as np

    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    r = np.hypot((yy - h / 2) / (h / 3), (xx - w / 2) / (w / 4))
    img = np.clip(230 * (1 - r), 0, 255).astype(np.uint8)
    return np.repeat(img[:, :, None], c, axis=2)


def _png(arr: np.ndarray) -> bytes:
    from PIL import Image

    img = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def sample_for(model: Path, data: bytes) -> tuple[str, bytes]:
    """A sample image (file name, PNG bytes) that fits the input of `model` (its bytes `data`)."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.metadata.block import read_embedded_metadata, read_sidecar

    meta = read_embedded_metadata(data, f"path={model}")
    if meta is None:
        meta = read_sidecar(model)  # as read_metadata(path) does
    meta = meta or {}
    shape: tuple[Any, ...] = tuple((meta.get("input") or {}).get("shape") or ())
    if len(shape) != 3:
        desc = EdgeClassifier.load(model).describe()
        shape = tuple(desc.get("image_shape") or ())
    if len(shape) != 3 or shape[2] not in (1, 3):
        raise BundleError(
            f"Cannot make a sample image for the model: its input is not an image (H, W, 1|3). "
            f"Received: path={model}, shape={shape}"
        )
    h, w, c = (int(s) for s in shape)
    dataset = meta.get("dataset") or {}
    arr = None
    if dataset.get("name") == "fashion-mnist" and (h, w, c) == (28, 28, 1):
        arr = _fashion_mnist_image(dataset.get("source"))
    kind = "fashion-mnist" if arr is not None else "synthetic"
    if arr is None:
        arr = _synthetic_image((h, w, c))
    return f"samples/{kind}_{h}x{w}x{c}.png", _png(arr)


def expected_answers(
    models: Sequence[tuple[str, Path]], samples: dict[str, dict[str, bytes]]
) -> dict[str, dict[str, Any]]:
    """Run each (entry name, model path) on its sample here, through edge_runtime: what the
    device must answer. `samples`: sample name -> {model entry name: PNG bytes}."""
    from edge_runtime.cli import predict_lines

    expected = {}
    with tempfile.TemporaryDirectory(prefix="edgeship-bundle-") as tmp:
        for entry_name, path in models:
            sample_name = next(name for name, m in samples.items() if entry_name in m)
            sample_path = Path(tmp) / Path(sample_name).name
            sample_path.write_bytes(samples[sample_name][entry_name])
            record = json.loads(predict_lines(path, [sample_path], as_json=True)[0])
            expected[entry_name] = {
                "sample": sample_name,
                "index": record["index"],
                "label": record["label"],
                "confidence": record["confidence"],
            }
    return expected

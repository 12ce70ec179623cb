"""`label_model`: embed class names (and pixel scaling) into any existing .tflite, atomically.

The job tflite-support's MetadataWriter did for stock models (it no longer installs on current
Python): the names go into the model's `edgeship` metadata, so one file is self-describing and
`predict` prints names, not class numbers. Other metadata entries (the converter's
`CONVERSION_METADATA`) and an existing `edgeship` entry's other fields are kept.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from edge_runtime.errors import LabelsError, OutputError
from edge_runtime.files import atomic_write_bytes
from edge_runtime.metadata.block import read_metadata, read_model_bytes
from edge_runtime.metadata.labels import Labels, resolve_labels
from edge_runtime.metadata.standard_write import embed_all_metadata

METADATA_SCHEMA_VERSION = 1


def label_model(
    path: str | os.PathLike[str],
    labels: Labels | None = None,
    *,
    input_scale: float | None = None,
    input_offset: float | None = None,
    author: str | None = None,
    license: str | None = None,  # noqa: A002 - the metadata field's name
) -> dict[str, Any]:
    """Write `labels` (file or names) and the raw-pixel scaling into `path`; return the metadata.

    `input_scale`/`input_offset`: how a raw pixel p (0-255) becomes model input,
    `p * scale + offset` (1/255 and 0 for a model trained on [0, 1]; 1/127.5 and -1 for
    [-1, 1]). Left out, the model keeps what it had (a uint8 stock model takes raw pixels).
    `author`/`license` go into the standard TFLite metadata, which is (re)written beside
    edgeship's block with the labels packed in (for MediaPipe Tasks and Android Studio).
    The file is replaced in one step: a failure leaves it as it was.
    """
    from edge_runtime.classifier import EdgeClassifier

    if labels is None and input_scale is None and input_offset is None and not (author or license):
        raise LabelsError(
            "Nothing to write: pass labels, an input scale, an author or a license. "
            "Received: path=" + str(path)
        )
    for name, value in (("input_scale", input_scale), ("input_offset", input_offset)):
        if value is not None and not math.isfinite(value):
            raise LabelsError(f"{name} must be a finite number. Received: {name}={value}")
    if input_scale == 0:
        raise LabelsError("input_scale must not be 0. Received: input_scale=0")
    path = Path(path)
    data = read_model_bytes(path)
    classifier = EdgeClassifier.load(path)  # the model must load and look like a classifier
    meta = dict(read_metadata(path, lenient=True) or {})
    meta.setdefault("schema_version", METADATA_SCHEMA_VERSION)
    meta.setdefault("model", "custom")
    block = dict(meta.get("input") or {})
    block.setdefault("shape", list(classifier.input_shape))
    block.setdefault("color_mode", "grayscale" if classifier.input_shape[-1] == 1 else "rgb")
    if input_scale is not None or input_offset is not None:
        block["scale"] = float(input_scale if input_scale is not None else block.get("scale", 1.0))
        block["offset"] = float(
            input_offset if input_offset is not None else block.get("offset", 0.0)
        )
    meta["input"] = block
    if labels is not None:
        meta["class_names"] = list(resolve_labels(labels, classifier.num_classes, f"path={path}"))
    elif "class_names" not in meta and classifier.names_source == "standard metadata":
        meta["class_names"] = list(classifier.class_names)  # keep a stock model's packed names
    meta.update({k: v for k, v in (("author", author), ("license", license)) if v})
    try:
        atomic_write_bytes(path, embed_all_metadata(data, meta))
    except OutputError as err:  # worded for this command: it has no --out
        raise OutputError(
            f"Cannot write {path}: {err.reason}. The model is changed in place: copy it to a "
            f"writable folder (or free space) and label the copy. Received: path={path}",
            path=err.path,
            reason=err.reason,
        ) from None
    return meta

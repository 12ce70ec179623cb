"""Training: dataset -> compiled model -> fit -> evaluate -> `model.keras` + `model.json`."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_runtime.files import atomic_path, check_output_dir
from edgeship.train.datasets import FASHION_MNIST, Dataset, load_dataset
from edgeship.train.errors import TrainError
from edgeship.train.models import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_EPOCHS,
    LEARNING_RATE,
    LR_SCHEDULES,
    build_model,
    check_model,
    learning_rate_callback,
)
from edgeship.train.quiet import import_keras

SCHEMA_VERSION = 1
MODEL_FILE = "model.keras"
METADATA_FILE = "model.json"
PIXEL_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class TrainConfig:
    """What to train and how; `None` epochs/batch size mean the model's defaults."""

    model: str = "mlp"
    epochs: int | None = None
    batch_size: int | None = None
    seed: int = 0
    dataset: str = FASHION_MNIST
    data_dir: str | None = None
    limit: int | None = None
    # The architecture's size (models.PARAMETERS), as sorted (name, value) pairs; empty:
    # the model's defaults. Recorded in model.json's `architecture`.
    params: tuple[tuple[str, int], ...] = ()

    def __post_init__(self) -> None:
        check_model(self.model, (k for k, _ in self.params))
        for name in ("epochs", "batch_size", "limit"):
            value = getattr(self, name)
            if value is not None and value < 1:
                flag = name.replace("_", "-")
                raise TrainError(f"--{flag} must be at least 1. Received: {flag}={value}")

    @property
    def resolved_epochs(self) -> int:
        """Epochs to run."""
        return self.epochs or DEFAULT_EPOCHS[self.model]

    @property
    def resolved_batch_size(self) -> int:
        """Batch size to use."""
        return self.batch_size or DEFAULT_BATCH_SIZE[self.model]


@dataclass(frozen=True)
class TrainResult:
    """Where the trained model went, and its metadata."""

    model_path: Path
    metadata_path: Path
    metadata: dict


def subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple:
    """Return at most `limit` examples, drawn with `seed` (all of them when `limit` is None)."""
    if limit is None or limit >= len(x):
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(len(x), size=limit, replace=False))
    return x[index], y[index]


def library_versions() -> dict[str, str]:
    """Versions of the libraries that shaped a model."""
    import keras
    import tensorflow as tf

    try:  # the distribution's version: train must not import the `edgeship` CLI package
        edgeship_version = importlib.metadata.version("edgeship")
    except importlib.metadata.PackageNotFoundError:
        edgeship_version = "unknown (not installed)"
    return {
        "edgeship": edgeship_version,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
    }


def build_metadata(
    config: TrainConfig,
    data: Dataset,
    train_size: int,
    seconds: float,
    metrics: dict,
    parameters: int,
) -> dict:
    """The `model.json` document (the run folder's contract: docs/train.md, ARCHITECTURE.md)."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": config.model,
        "architecture": dict(config.params),
        "class_names": list(data.class_names),
        "input": {
            "shape": list(data.image_shape),
            "dtype": "float32",
            "scale": PIXEL_SCALE,
            "offset": 0.0,
            "color_mode": data.color_mode,
            "background": data.background,
        },
        "dataset": {
            "name": data.name,
            "source": data.source,
            "train_size": int(train_size),
            "test_size": int(len(data.x_test)),
            "sha256": data.sha256,
        },
        "training": {
            "epochs": config.resolved_epochs,
            "batch_size": config.resolved_batch_size,
            "optimizer": "adam",
            "learning_rate": LEARNING_RATE,
            "learning_rate_schedule": LR_SCHEDULES[config.model],
            "seed": config.seed,
            "seconds": round(seconds, 3),
            "limit": config.limit,
        },
        "metrics": metrics,
        "parameters": int(parameters),
        "versions": library_versions(),
    }


def prepare_out_dir(out_dir: str | os.PathLike) -> Path:
    """Check `--out` before any work: a folder that takes a file (probed, and left as it was
    found: a missing folder is created only when the model is written)."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise TrainError(f"--out must be a directory. Received: out={out}")
    return check_output_dir(out, keep=False)


def train(
    config: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    callbacks: Sequence = (),
    data: Dataset | None = None,
) -> TrainResult:
    """Train `config.model`, evaluate it on the test set and write the run directory.

    `model.keras` and `model.json` are written to temporary files and moved into place
    together at the end, so an interrupted run leaves neither half-written.
    """
    keras = import_keras()
    import tensorflow as tf

    out = prepare_out_dir(out_dir)  # before the data and the training, not after
    data = data if data is not None else load_dataset(config.dataset, config.data_dir)
    x_train, y_train = subsample(data.x_train, data.y_train, config.limit, config.seed)

    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = build_model(
        config.model, data.image_shape, len(data.class_names), **dict(config.params)
    )
    schedule = learning_rate_callback(config.model, config.resolved_epochs)
    callbacks = [*callbacks, schedule] if schedule is not None else list(callbacks)
    start = time.perf_counter()
    model.fit(
        x_train.astype(np.float32) * PIXEL_SCALE,
        y_train,
        epochs=config.resolved_epochs,
        batch_size=config.resolved_batch_size,
        verbose=0,
        callbacks=callbacks,
    )
    seconds = time.perf_counter() - start
    loss, accuracy = model.evaluate(
        data.x_test.astype(np.float32) * PIXEL_SCALE, data.y_test, verbose=0, batch_size=256
    )
    metadata = build_metadata(
        config,
        data,
        train_size=len(x_train),
        seconds=seconds,
        metrics={"test_accuracy": round(float(accuracy), 6), "test_loss": round(float(loss), 6)},
        parameters=model.count_params(),
    )
    model_path, metadata_path = out / MODEL_FILE, out / METADATA_FILE
    with contextlib.ExitStack() as stack:
        tmp_model = stack.enter_context(atomic_path(model_path))
        tmp_meta = stack.enter_context(atomic_path(metadata_path))
        model.save(tmp_model)
        tmp_meta.write_text(json.dumps(metadata, indent=2) + "\n")
    return TrainResult(model_path=model_path, metadata_path=metadata_path, metadata=metadata)


def read_run_metadata(path: str | os.PathLike) -> dict | None:
    """The `model.json` train wrote in a run directory (or beside a model file), or None."""
    p = Path(path)
    if p.is_dir():
        meta_path = p / METADATA_FILE
    else:
        meta_path = p if p.name == METADATA_FILE else p.with_name(METADATA_FILE)
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise TrainError(
            f"{METADATA_FILE} cannot be read or is not valid JSON ({err}). Re-run `edgeship "
            f"train`, or fix or remove the file. Received: path={meta_path}"
        ) from None
    if not isinstance(meta, dict) or not isinstance(meta.get("input"), dict):
        raise TrainError(
            f"{METADATA_FILE} has no 'input' block; it was not written by `edgeship train`. "
            f"Re-run `edgeship train`, or remove the file. Received: path={meta_path}"
        )
    return meta

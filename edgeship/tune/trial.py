"""One trial's model: train (seeded, short) -> convert (one mode) -> accuracy on the
validation split. Only the public API of `train` and `convert` is used."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edge_runtime.files import atomic_write_text
from edgeship.train import Dataset, TrainConfig
from edgeship.tune.errors import TuneError
from edgeship.tune.space import SearchSpace, default_space, load_space

if TYPE_CHECKING:  # search imports this module
    from edgeship.tune.search import TuneOptions

VALIDATION_FRACTION = 0.1
# The split's own seed: every worker of a study (whatever its --seed) validates on the same
# images.
SPLIT_SEED = 0

# Convert's own checks (calibration, agreement with Keras) on few samples: a trial is short.
CALIBRATION_SAMPLES = 200
VERIFY_SAMPLES = 200
FALLBACK_MIN_AGREEMENT = 0.99


@dataclass(frozen=True)
class Candidate:
    """A trained and converted trial model, before it is measured on the device."""

    folder: Path
    tflite: Path
    mode: str
    validation_accuracy: float
    size_bytes: int


def split_validation(data: Dataset, fraction: float, seed: int, limit: int | None) -> tuple:
    """(training part, validation part) of `data`'s training set: a seeded shuffle of at most
    `limit` training images, the last `fraction` of them held out. The test set is untouched."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(data.x_train))
    if limit is not None:
        order = order[:limit]
    n_val = max(1, int(round(len(order) * fraction)))
    if n_val >= len(order):
        raise TuneError(
            f"Too few training images to carve a validation split. "
            f"Received: {len(order)} images, fraction={fraction}"
        )
    fit, val = np.sort(order[:-n_val]), np.sort(order[-n_val:])
    train_part = replace(
        data,
        x_train=data.x_train[fit],
        y_train=data.y_train[fit],
        x_test=data.x_train[val],
        y_test=data.y_train[val],
    )
    return train_part, (data.x_train[val], data.y_train[val])


def model_params(params: dict[str, Any]) -> tuple[tuple[str, int], ...]:
    """The architecture sizes of a trial's parameters (`mlp.width` -> width), for TrainConfig."""
    family = params["family"]
    sizes = {k.split(".", 1)[1]: int(v) for k, v in params.items() if k.startswith(family + ".")}
    sizes["resolution"] = int(params["resolution"])
    return tuple(sorted(sizes.items()))


def tflite_accuracy(path: Path, x: np.ndarray, y: np.ndarray) -> float:
    """Top-1 accuracy of a .tflite on raw uint8 images, through edge_runtime as on the device."""
    from edge_runtime import EdgeClassifier

    clf = EdgeClassifier.load(path, batch_size=256)  # predict_proba invokes 256 at a time
    return float(np.mean(clf.predict_proba(x).argmax(1) == y))


def build_candidate(
    params: dict[str, Any],
    train_part: Dataset,
    validation: tuple[np.ndarray, np.ndarray],
    folder: Path,
    *,
    seed: int,
    batch_size: int,
) -> Candidate:
    """Train, convert and validate the model `params` describe into `folder` (a run folder:
    model.keras, model.json, model_<mode>.tflite)."""
    from edgeship.convert import convert_model
    from edgeship.train import train

    config = TrainConfig(
        model=params["family"],
        epochs=int(params["epochs"]),
        batch_size=batch_size,
        seed=seed,
        dataset=train_part.name,
        params=model_params(params),
    )
    result = train(config, folder, data=train_part)
    meta = dict(result.metadata)
    # train evaluated on what it was given as the test split: the validation images.
    meta["metrics"] = {
        "validation_accuracy": meta["metrics"]["test_accuracy"],
        "validation_loss": meta["metrics"]["test_loss"],
    }
    meta["dataset"] = {**meta["dataset"], "validation_size": int(len(validation[0]))}
    meta["dataset"].pop("test_size", None)
    meta["tune"] = {"params": params}
    atomic_write_text(result.metadata_path, json.dumps(meta, indent=2) + "\n")
    quant = params["quantization"]
    mode = "int8" if quant == "int8-fallback" else quant
    fallback = quant == "int8-fallback"
    report = convert_model(
        result.model_path,
        folder,
        modes=mode,
        calibration_samples=CALIBRATION_SAMPLES,
        verify_samples=VERIFY_SAMPLES,
        fallback=fallback,
        min_agreement=FALLBACK_MIN_AGREEMENT if fallback else None,
    )
    if report.failed:
        err = report.failed[0]
        raise TuneError(f"convert {mode} failed: {err.error}")
    tflite = folder / f"model_{mode}.tflite"
    accuracy = tflite_accuracy(tflite, *validation)
    return Candidate(folder, tflite, quant, round(accuracy, 6), tflite.stat().st_size)


def search_inputs(
    options: TuneOptions,
) -> tuple[SearchSpace, Dataset, tuple[np.ndarray, np.ndarray]]:
    """The space, training part and validation split `options` name: the same on every
    worker, and when the chosen trial is rebuilt."""
    from edgeship.train import load_dataset

    data = load_dataset(options.dataset, options.data_dir)
    height = data.image_shape[0]
    space = load_space(options.space_file, height) if options.space_file else default_space(height)
    train_part, validation = split_validation(data, VALIDATION_FRACTION, SPLIT_SEED, options.limit)
    return space, train_part, validation


def rebuild_trial(options: TuneOptions, params: dict[str, Any], folder: Path) -> Candidate:
    """Build a trial's model again from its parameters (seeded): for the chosen trial of a
    study whose trial ran on another worker."""
    space, train_part, validation = search_inputs(options)
    return build_candidate(
        params, train_part, validation, folder, seed=options.seed, batch_size=space.batch_size
    )

"""The `edgeship` metadata a converted model carries: the model's, and each mode's own."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_runtime.files import sha256_file
from edgeship.convert.inputs import CheckInputs, PixelScaling
from edgeship.convert.loading import ModelSignature
from edgeship.convert.modes import CALIBRATED_MODES

if TYPE_CHECKING:
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.tensors import TensorSpec

METADATA_SCHEMA_VERSION = 1


def foreign_metadata(
    signature: ModelSignature,
    class_names: tuple[str, ...] | None,
    resize: str,
    pixel_scaling: PixelScaling = (1.0, 0.0),
) -> dict[str, Any]:
    """Metadata for a model edgeship did not train: raw pixels in, class indices as names."""
    names = list(class_names) if class_names else [str(i) for i in range(signature.num_classes)]
    normalization = {}
    scale, offset = pixel_scaling
    # --input-mean/--input-std, on pixels in [0, 1] (normalization_scaling gives both as lists)
    if isinstance(scale, list) and isinstance(offset, list):
        normalization = {
            "mean": [round(-o / s / 255.0, 9) for s, o in zip(scale, offset, strict=True)],
            "std": [round(1.0 / (255.0 * s), 9) for s in scale],
        }
    return {
        "schema_version": METADATA_SCHEMA_VERSION,
        "model": "custom",
        "class_names": names,
        "input": {
            "shape": list(signature.input_shape),
            "dtype": "float32",
            "scale": pixel_scaling[0],
            "offset": pixel_scaling[1],
            "color_mode": signature.color_mode,
            "background": "unknown",
            "resize": resize,
            **normalization,
        },
    }


def base_metadata(
    meta: dict[str, Any] | None,
    signature: ModelSignature,
    inputs: CheckInputs,
    names: tuple[str, ...] | None,
    resize: str,
    pixel_scaling: PixelScaling,
    model_path: Path,
    out: Path,
) -> dict[str, Any]:
    """What every mode's file carries: the run's model.json (or a foreign model's metadata),
    the class names, and the source model's path and hash when it lies outside `out`."""
    if meta is not None:
        base = copy.deepcopy(meta)
        base.pop("quantization", None)
    else:
        folder_names = inputs.calibration.class_names if inputs.calibration else None
        base = foreign_metadata(signature, folder_names, resize, pixel_scaling)
    if names is not None:
        base["class_names"] = list(names)
    if model_path.resolve() != (out / "model.keras").resolve():
        # A Keras file outside the run: bench finds the desktop reference through this.
        base["source_model"] = {
            "path": str(model_path.resolve()),
            "sha256": sha256_file(model_path),
        }
    return base


def mode_metadata(
    base_meta: dict[str, Any],
    mode: str,
    inputs: CheckInputs,
    int8_io: bool,
    fallback: dict[str, Any] | None,
    engine: str | None = None,
) -> dict[str, Any]:
    """`base_meta` plus the mode's `quantization` block (its check is added once it ran);
    `engine`: what made the mode ("quantizer": ai-edge-quantizer, "converter": TensorFlow's)."""
    # A calibrated mode always has calibration data (prepare_inputs raises otherwise).
    calibration = inputs.calibration if mode in CALIBRATED_MODES else None
    meta = copy.deepcopy(base_meta)
    meta["quantization"] = {
        "mode": mode,
        "calibration_samples": len(calibration.x) if calibration is not None else 0,
        "calibration_source": calibration.source if calibration is not None else None,
        "int8_io": int8_io,
    }
    if engine is not None:
        meta["quantization"]["engine"] = engine
    if fallback is not None:
        meta["quantization"]["float_layers"] = list(fallback["float_layers"])
        meta["quantization"]["fallback"] = fallback
    return meta


def io_blocks(classifier: EdgeClassifier) -> tuple[dict[str, Any], dict[str, Any]]:
    """Input and output dtype/scale/zero point of a loaded `EdgeClassifier`."""

    def block(spec: TensorSpec) -> dict[str, Any]:
        return {
            "dtype": spec.dtype.name,
            "scale": float(spec.scale),
            "zero_point": int(spec.zero_point),
        }

    return block(classifier.input_spec), block(classifier.output_spec)

"""Checks on `convert_model`'s options, made before anything is loaded or written."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from edge_runtime.errors import EdgeshipError
from edgeship.convert.errors import ConvertError
from edgeship.convert.fallback import Budget
from edgeship.convert.inputs import PixelScaling
from edgeship.convert.loading import ModelSignature
from edgeship.convert.modes import CALIBRATED_MODES


def check_options(
    modes: tuple[str, ...],
    *,
    calibration_samples: int,
    verify_samples: int,
    min_agreement: float | None,
    max_accuracy_drop: float | None,
    int8_io: bool,
    layer_report: bool,
    fallback: bool,
    fallback_max_layers: int,
    resize: str | None,
) -> Budget:
    """Raise `ConvertError` for options that cannot work together; return the budget."""
    if calibration_samples < 1:
        raise ConvertError(
            "--calibration-samples must be at least 1. "
            f"Received: calibration_samples={calibration_samples}"
        )
    if verify_samples < 1:
        raise ConvertError(
            f"--verify-samples must be at least 1. Received: verify_samples={verify_samples}"
        )
    if min_agreement is not None and not 0.0 <= min_agreement <= 1.0:
        raise ConvertError(
            "--min-agreement is a fraction between 0 and 1 (e.g. 0.99). "
            f"Received: min_agreement={min_agreement}"
        )
    budget = Budget(min_agreement=min_agreement, max_accuracy_drop=max_accuracy_drop)
    if fallback:
        _check_fallback(budget, modes, int8_io, fallback_max_layers)
    quantize = ",".join(modes)
    if int8_io and "int8" not in modes:
        raise ConvertError(
            "--int8-io makes the int8 model's input and output int8; it needs the int8 mode. "
            f"Add int8 to --quantize. Received: quantize={quantize}"
        )
    if layer_report and not set(modes) & set(CALIBRATED_MODES):
        raise ConvertError(
            "--layer-report compares a quantized model's layers with float's; it needs the "
            f"int8 or int16x8 mode. Add one to --quantize. Received: quantize={quantize}"
        )
    from edge_runtime.image.preprocess import RESIZE_RULES

    if resize is not None and resize not in RESIZE_RULES:
        raise ConvertError(
            f"--resize must be one of {', '.join(RESIZE_RULES)}. Received: resize={resize!r}"
        )
    return budget


def _check_fallback(
    budget: Budget, modes: tuple[str, ...], int8_io: bool, max_float_layers: int
) -> None:
    if not budget.given:
        raise ConvertError(
            "--fallback keeps layers in float until a budget holds; give one: "
            "--min-agreement X (e.g. 0.98) or --max-accuracy-drop X (e.g. 0.01). "
            "Received: no budget"
        )
    if not {"int8", "int16x8"} & set(modes):
        raise ConvertError(
            "--fallback works on the int8 and int16x8 modes; add one to --quantize. "
            f"Received: quantize={','.join(modes)}"
        )
    if int8_io and "int8" in modes:
        raise ConvertError(
            "--fallback keeps float input and output (layers in float need them); drop "
            "--int8-io. Received: --int8-io with --fallback"
        )
    if max_float_layers < 1:
        raise ConvertError(
            f"--fallback-max-layers must be at least 1. Received: {max_float_layers}"
        )


def check_out(out: Path) -> None:
    """`--out` must be a directory, or not exist yet."""
    if out.exists() and not out.is_dir():
        raise ConvertError(f"--out must be a directory. Received: out={out}")


def check_calibration_path(calibration_data: str | os.PathLike | None) -> None:
    """`--calibration-data`, if given, must exist."""
    if calibration_data is not None and not Path(calibration_data).expanduser().exists():
        raise ConvertError(
            "Calibration data not found: pass an image folder or a .npy array. "
            f"Received: calibration_data={calibration_data}"
        )


def resolve_class_names(
    names: str | list[str] | tuple[str, ...] | None,
    labels: str | os.PathLike | None,
    num_classes: int,
) -> tuple[str, ...] | None:
    """`--class-names a,b,c` or `--labels FILE` checked against the model's outputs (or None)."""
    from edge_runtime.metadata.labels import resolve_labels

    if names is not None and labels is not None:
        raise ConvertError(
            "Pass the class names once: --class-names or --labels, not both. "
            f"Received: class_names={names!r}, labels={labels}"
        )
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",")]
    given = names if names is not None else labels
    if given is None:
        return None
    try:
        return resolve_labels(given, num_classes)
    except EdgeshipError as err:
        raise ConvertError(str(err)) from None


def parse_channels(text: str | list[float] | tuple[float, ...], name: str) -> list[float]:
    """`--input-mean 0.485,0.456,0.406` -> [0.485, 0.456, 0.406] (finite numbers)."""
    items = text.split(",") if isinstance(text, str) else list(text)
    try:
        values = [float(v) for v in items]
    except (TypeError, ValueError):
        values = []
    if not values or not all(math.isfinite(v) for v in values):
        raise ConvertError(
            f"--{name} takes one number per channel, comma-separated (R,G,B), on pixels scaled "
            f"to [0, 1]: e.g. 0.485,0.456,0.406. Received: {name}={text!r}"
        )
    return values


def normalization_scaling(
    input_mean: str | list[float] | None, input_std: str | list[float] | None, channels: int
) -> tuple[list[float], list[float]] | None:
    """`--input-mean`/`--input-std` (on pixels scaled to [0, 1], the PyTorch/ImageNet rule)
    as per-channel (scale, offset) of raw pixels: (p / 255 - mean) / std; None if not given."""
    if input_mean is None and input_std is None:
        return None
    if input_mean is None or input_std is None:
        raise ConvertError(
            "--input-mean and --input-std go together (e.g. --input-mean 0.485,0.456,0.406 "
            f"--input-std 0.229,0.224,0.225). Received: input_mean={input_mean!r}, "
            f"input_std={input_std!r}"
        )
    mean, std = parse_channels(input_mean, "input-mean"), parse_channels(input_std, "input-std")
    for name, values in (("input-mean", mean), ("input-std", std)):
        if len(values) not in (1, channels):
            raise ConvertError(
                f"--{name} needs one value per channel: the model takes {channels}. "
                f"Received: {name}={','.join(f'{v:g}' for v in values)}"
            )
    if any(s <= 0 for s in std):
        raise ConvertError(f"--input-std must be above 0. Received: input_std={std}")
    mean = mean * channels if len(mean) == 1 else mean
    std = std * channels if len(std) == 1 else std
    return ([1.0 / (255.0 * s) for s in std], [-m / s for m, s in zip(mean, std, strict=True)])


def _pixel_scaling(
    input_scale: float | None, input_offset: float | None, meta: dict[str, Any] | None
) -> tuple[float, float]:
    """`--input-scale`/`--input-offset` checked: (scale, offset) of raw pixels, (1, 0) if left
    out. An edgeship run's own scaling comes from its model.json and may not be overridden."""
    given = {"input_scale": input_scale, "input_offset": input_offset}
    for name, value in given.items():
        if value is not None and not math.isfinite(value):
            raise ConvertError(
                f"--{name.replace('_', '-')} must be a finite number. Received: {name}={value}"
            )
    if input_scale == 0:
        raise ConvertError("--input-scale must not be 0. Received: input_scale=0")
    if meta is not None and (input_scale is not None or input_offset is not None):
        raise ConvertError(
            "This model was trained by edgeship: its pixel scaling comes from model.json. "
            f"Leave out --input-scale/--input-offset. Received: input_scale={input_scale}, "
            f"input_offset={input_offset}"
        )
    return (
        1.0 if input_scale is None else float(input_scale),
        0.0 if input_offset is None else float(input_offset),
    )


def input_settings(
    model_path: Path,
    signature: ModelSignature,
    meta: dict[str, Any] | None,
    names: tuple[str, ...] | None,
    resize: str | None,
    input_scale: float | None,
    input_offset: float | None,
    input_mean: str | list[float] | None = None,
    input_std: str | list[float] | None = None,
) -> tuple[str, PixelScaling]:
    """The resize rule and pixel scaling, checked against an edgeship run's model.json (whose
    class names, resize rule, scaling and input shape may not be overridden). The scaling is
    per channel (lists) with `input_mean`/`input_std`."""
    if meta is not None and names is not None and list(names) != meta.get("class_names"):
        raise ConvertError(
            "This model was trained by edgeship: its class names come from its training data "
            "(model.json), and bench would take renamed files for another model's. Leave out "
            f"--class-names/--labels. Received: class_names={list(names)[:10]}, "
            f"model.json={list(meta.get('class_names') or [])[:10]}"
        )
    trained_rule = ((meta or {}).get("input") or {}).get("resize", "stretch")
    if meta is not None and resize not in (None, trained_rule):
        raise ConvertError(
            f"This model was trained by edgeship on images fitted by {trained_rule!r}; photos "
            f"must be prepared the same way. Leave out --resize. Received: resize={resize!r}"
        )
    pixel_scaling: PixelScaling = _pixel_scaling(input_scale, input_offset, meta)
    normalized = normalization_scaling(input_mean, input_std, signature.input_shape[2])
    if normalized is not None:
        if meta is not None:
            raise ConvertError(
                "This model was trained by edgeship: its pixel scaling comes from model.json. "
                f"Leave out --input-mean/--input-std. Received: input_mean={input_mean!r}"
            )
        if input_scale is not None or input_offset is not None:
            raise ConvertError(
                "Give the pixel scaling once: --input-mean/--input-std (per channel, on [0, 1]) "
                "or --input-scale/--input-offset, not both. Received: input_scale="
                f"{input_scale}, input_mean={input_mean!r}"
            )
        pixel_scaling = normalized
    if meta is not None:
        meta_shape = tuple(int(d) for d in meta["input"].get("shape", ()))
        if meta_shape != signature.input_shape:
            raise ConvertError(
                f"model.json says the input is {meta_shape}, the model takes "
                f"{signature.input_shape}; they belong to different models. "
                f"Received: path={model_path}"
            )
    return resize or trained_rule, pixel_scaling

"""Quantize a float32 `.tflite` into a mode by an ai-edge-quantizer recipe.

ai-edge-quantizer (Google's quantizer for LiteRT; imports no TensorFlow) reads the float
flatbuffer and a *recipe*: a list of entries `{regex, operation, algorithm_key, op_config}`
matched against each op's tensor names, later entries winning. Each mode is one recipe:

| mode | recipe |
|---|---|
| dynamic | `dynamic_wi8_afp32`: int8 weights (per channel; FULLY_CONNECTED per tensor, which
  tflite-runtime 2.14 reads right), float activations quantized on the fly |
| float16 | weight-only float16 weights, float compute |
| int8 | `static_wi8_ai8`, calibrated: int8 weights and activations |
| int16x8 | `static_wi8_ai16`, calibrated: int8 weights, int16 activations |

Static recipes quantize the model's input and output too; edgeship's float I/O (as the
TFLite converter makes it) adds `no_quantize` for the INPUT and OUTPUT ops, which leaves a
QUANTIZE after the input and a DEQUANTIZE before the output; `int8_io` leaves them out.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgeship.convert.converter import ModeConversionError
from edgeship.convert.errors import ConvertError
from edgeship.convert.inputs import CheckInputs
from edgeship.convert.modes import CALIBRATED_MODES, FALLBACKS, MODES
from edgeship.convert.results import ModeResult
from edgeship.convert.source import ModelSource
from edgeship.train.quiet import captured_stderr

__all__ = [
    "AUTO_ENGINE",
    "ENGINES",
    "QUANTIZER_CALIBRATION_BATCH",
    "Quantized",
    "RecipeError",
    "calibration_set",
    "check_engine",
    "check_recipe",
    "default_recipe",
    "inline_buffers",
    "load_recipe",
    "make_mode",
    "pick_engine",
    "quantize_tflite",
    "quiet",
    "write_recipe",
]

ENGINES: tuple[str, ...] = ("auto", "quantizer", "converter")
# Samples per calibration call: the calibrator keeps each tensor's running min/max.
QUANTIZER_CALIBRATION_BATCH = 32

Recipe = list[dict[str, Any]]


class RecipeError(ConvertError):
    """A `--recipe` file that does not parse or matches no op of the model."""


@dataclass(frozen=True, eq=False)
class Quantized:
    """A quantized flatbuffer and the recipe (ai-edge-quantizer's JSON form) that made it."""

    model_bytes: bytes
    recipe: Recipe
    engine: str = "quantizer"

    def __post_init__(self) -> None:
        if self.model_bytes[4:8] != b"TFL3":
            raise ModeConversionError("the quantizer returned something that is not a .tflite")
        if self.engine not in ENGINES[1:]:
            raise ConvertError(f"engine must be quantizer or converter. Received: {self.engine}")

    def recipe_json(self) -> str:
        """The recipe as `RUN/quantization/<mode>.recipe.json` holds it."""
        return json.dumps(self.recipe, indent=2) + "\n"


@contextlib.contextmanager
def quiet() -> Iterator[list[str]]:
    """ai-edge-quantizer without its noise: native log lines (kept for error messages),
    Python warnings and its tqdm progress bar (written to `sys.stderr`)."""
    with (
        warnings.catch_warnings(),
        captured_stderr() as log,
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield log


def inline_buffers(model_bytes: bytes) -> bytes:
    """The model with every buffer's data inside the flatbuffer.

    ai-edge-quantizer writes a larger model's weights after the flatbuffer, each `Buffer`
    holding an `offset`/`size` into the file instead of `data`. LiteRT reads that, but a
    flatbuffer rewritten through the object API (edgeship's metadata writer) keeps the offsets
    and loses the bytes after it ("Constant buffer 1 specified an out of range offset").
    """
    import flatbuffers

    from edge_runtime.metadata.block import FILE_IDENTIFIER, _schema_module, inline_buffer_data

    schema = _schema_module()
    raw = schema.Model.GetRootAs(bytearray(model_bytes), 0)
    if not any(raw.Buffers(i).Offset() > 1 for i in range(raw.BuffersLength())):
        return model_bytes
    model = schema.ModelT.InitFromObj(raw)
    inline_buffer_data(model, model_bytes)
    builder = flatbuffers.Builder(len(model_bytes) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=FILE_IDENTIFIER)
    return bytes(builder.Output())


def _float_io() -> Recipe:
    return [
        {"regex": ".*", "operation": op, "algorithm_key": "no_quantize"}
        for op in ("INPUT", "OUTPUT")
    ]


def default_recipe(mode: str, int8_io: bool = False) -> Recipe:
    """The recipe edgeship uses for `mode` (float I/O unless `int8_io`, int8 only)."""
    from ai_edge_quantizer import recipe

    if mode not in MODES or mode == "float32":
        raise ConvertError(
            f"No recipe for mode {mode}: choose from {','.join(MODES[1:])}. Received: {mode}"
        )
    if mode == "dynamic":
        # FULLY_CONNECTED per tensor: tflite-runtime 2.14 (the armhf Pi's runtime) loads a
        # per-channel hybrid FULLY_CONNECTED but reads one scale for all channels (wrong
        # answers, no error); its per-channel hybrid CONV_2D is right.
        rp = copy.deepcopy(recipe.dynamic_wi8_afp32())
        fc = copy.deepcopy(rp[0])
        fc["operation"] = "FULLY_CONNECTED"
        fc["op_config"]["weight_tensor_config"]["granularity"] = "TENSORWISE"
        return [*rp, fc]
    if mode == "float16":
        return [
            {
                "regex": ".*",
                "operation": "*",
                "algorithm_key": "float_casting",
                "op_config": {
                    "weight_tensor_config": {"num_bits": 16, "dtype": "FLOAT"},
                    "compute_precision": "FLOAT",
                    "explicit_dequantize": True,
                },
            }
        ]
    base = recipe.static_wi8_ai8() if mode == "int8" else recipe.static_wi8_ai16()
    return copy.deepcopy(base) + ([] if (int8_io and mode == "int8") else _float_io())


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read a recipe file (ai-edge-quantizer's JSON: a list of entries); `RecipeError` if bad."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RecipeError(
            f"--recipe is not a readable JSON file ({err}). Received: path={p}"
        ) from None
    if not isinstance(data, list) or not data or not all(isinstance(e, dict) for e in data):
        raise RecipeError(
            "--recipe must be ai-edge-quantizer's recipe: a JSON list of entries "
            '{"regex": ..., "operation": ..., "algorithm_key": ...}. Received: path='
            f"{p}"
        )
    for i, entry in enumerate(data):
        missing = [k for k in ("regex", "operation", "algorithm_key") if k not in entry]
        if missing:
            raise RecipeError(f"--recipe entry {i} lacks {', '.join(missing)}. Received: path={p}")
    return data


def calibration_set(
    float_bytes: bytes, calibration: np.ndarray | None, step: int | None = None
) -> tuple[str, list[dict[str, np.ndarray]], int]:
    """(signature key, samples in calls of `step`, `step`) for calibrating the float model
    through its first signature. `step` by default: 1 for a model whose batch is fixed at 1
    (litert-torch converts some PyTorch models only so), else QUANTIZER_CALIBRATION_BATCH."""
    from edge_runtime.backends import load_backend

    with captured_stderr():
        interpreter = load_backend().make_interpreter(float_bytes)
    signatures = interpreter.get_signature_list()
    if not signatures:
        raise ModeConversionError("the float32 model has no signature to calibrate through")
    key = next(iter(signatures))
    inputs = signatures[key]["inputs"]
    if len(inputs) != 1:
        raise ModeConversionError(f"the model has {len(inputs)} inputs; convert takes one image")
    if step is None:
        detail = interpreter.get_input_details()[0]
        batch = int(detail.get("shape_signature", detail["shape"])[0])
        step = 1 if batch == 1 else QUANTIZER_CALIBRATION_BATCH
    samples = np.asarray(calibration, dtype=np.float32)
    data = [{inputs[0]: samples[i : i + step]} for i in range(0, len(samples), step)]
    return key, data, step


def _calibrate_one_by_one(q: Any, data: dict[str, list]) -> dict:
    """Calibrate a batch-1 model sample by sample, keeping each tensor's min and max over all
    samples. (`Quantizer.calibrate` smooths min/max across calls, 0.95 moving average: over
    single samples that clips the rarer, larger activations; int16x8 then agreed with the
    float model no better than int8, 95 % on a small CNN.) ai-edge-quantizer 0.10's own
    Calibrator, with its min/max update, on the quantizer's model and recipe."""
    from ai_edge_quantizer import calibrator
    from ai_edge_quantizer.utils import qsv_utils

    calib = calibrator.Calibrator(
        q._float_model_buffer,
        qsv_update_func=qsv_utils.min_max_update,  # noqa: SLF001
    )
    # Called inside quiet(), which hides its progress bar.
    calib.calibrate(data, q._recipe_manager)  # noqa: SLF001 - pinned 0.10.*
    return calib.get_model_qsvs()


def _needs_calibration(rp: Recipe) -> bool:
    for entry in rp:
        act = (entry.get("op_config") or {}).get("activation_tensor_config")
        if entry.get("algorithm_key") != "no_quantize" and act:
            return True
    return False


def quantize_tflite(
    float_bytes: bytes,
    mode: str,
    calibration: np.ndarray | None = None,
    *,
    int8_io: bool = False,
    recipe: Recipe | None = None,
) -> Quantized:
    """Quantize a float32 `.tflite` into `mode` by its recipe (or `recipe`, a user's).

    `calibration` (float32 model input, N x H x W x C) is required by a recipe with static
    (calibrated) activations: int8 and int16x8 by default. Raises `ModeConversionError` if the
    quantizer fails, `RecipeError` if `recipe` matches no op of the model.
    """
    from ai_edge_quantizer import quantizer

    rp = copy.deepcopy(recipe) if recipe is not None else default_recipe(mode, int8_io)
    needs = _needs_calibration(rp) or (recipe is None and mode in CALIBRATED_MODES)
    if needs and (calibration is None or len(calibration) == 0):
        raise ConvertError(f"Mode {mode} needs calibration data. Received: none")
    log: list[str] = []
    try:
        with quiet() as log:
            q = quantizer.Quantizer(bytearray(float_bytes), rp)
            result = None
            if q.need_calibration:
                key, data, step = calibration_set(float_bytes, calibration)
                result = (
                    q.calibrate({key: data}) if step > 1 else _calibrate_one_by_one(q, {key: data})
                )
            out = q.quantize(result, enable_progress_report=False)
            model_bytes = bytes(out.quantized_model)
    except ConvertError:
        raise
    except Exception as err:  # the quantizer raises ValueError, RuntimeError, KeyError ...
        from edgeship.convert.converter import _reason

        raise ModeConversionError(_reason(err, log)) from None
    return Quantized(model_bytes=inline_buffers(model_bytes), recipe=rp)


def check_recipe(recipe: Recipe, float_bytes: bytes, path: str | os.PathLike) -> None:
    """`RecipeError` unless some entry of `recipe` names an op of the float model: its regex
    found in the op's scope (its output tensor names, `;`-joined, as ai-edge-quantizer
    matches them) and its operation `*` or the op's type."""
    import re

    from edgeship.convert.graph import read_graph

    graph = read_graph(float_bytes)
    scopes = [
        (";".join(graph.tensors[t].name for t in op.outputs) + ";", op.name) for op in graph.ops
    ]
    for i, entry in enumerate(recipe):
        try:
            pattern = re.compile(str(entry["regex"]))
        except re.error as err:
            raise RecipeError(
                f"--recipe entry {i} has a bad regex ({err}). Received: path={path}"
            ) from None
        op = str(entry["operation"])
        if any(pattern.search(scope) and op in ("*", kind) for scope, kind in scopes):
            return
    raise RecipeError(
        "--recipe names no op of the model: no entry's regex matches an op's output tensor "
        "name with its operation (see OUT/quantization/<mode>.recipe.json of a plain run for "
        f"the names). Received: path={path}, {len(recipe)} entries"
    )


# The engine `--engine auto` takes per mode for a Keras model (TensorFlow's converter is
# there); a model from another framework has only the quantizer. docs/convert.md's table
# (tools/engine_table.py): the quantizer's float16 is the converter's, smaller and made in a
# fraction of the time. Its int8 agrees with Keras as well (within 0.002), but `deploy mobile`
# still quantizes the phone model with TensorFlow's converter, and two int8 quantizations of
# one model disagree on ~0.7 % of images (tests/test_deploy_mobile.py wants the phone and the
# run's model to agree on 99.5 %): int8 stays the converter's until `deploy mobile` quantizes
# through this engine too. Its dynamic model is 1.5-2.3x slower on convolutions (LiteRT 2.3,
# one thread) and its int16x8 1.8x slower on the MobileNet-sized model: the converter's.
AUTO_ENGINE: dict[str, str] = {
    "dynamic": "converter",
    "float16": "quantizer",
    "int8": "converter",
    "int16x8": "converter",
}


def check_engine(engine: str) -> str:
    """`engine` if it is one of `ENGINES`, else `ConvertError`."""
    if engine not in ENGINES:
        raise ConvertError(
            f"Unknown --engine. Choose from {'|'.join(ENGINES)}. Received: engine={engine!r}"
        )
    return engine


def pick_engine(mode: str, engine: str, source: ModelSource) -> str:
    """The engine that makes `mode` of `source`: `engine`, or `AUTO_ENGINE`'s choice."""
    check_engine(engine)
    has_converter = source.saved_model_dir is not None
    if engine == "converter" and not has_converter:
        raise ConvertError(
            "--engine converter is TensorFlow's converter, which needs a Keras model; a "
            f"{source.framework} model quantizes through ai-edge-quantizer (--engine "
            f"quantizer). Received: path={source.source_model}"
        )
    if engine == "auto":
        return AUTO_ENGINE.get(mode, "quantizer") if has_converter else "quantizer"
    return engine


def make_mode(
    source: ModelSource,
    mode: str,
    engine: str,
    inputs: CheckInputs,
    int8_io: bool,
    recipe: Recipe | None = None,
) -> Quantized | ModeResult:
    """`mode`'s flatbuffer from `source` by `engine` (float32: the source's own), or the
    failed `ModeResult` saying why."""
    if mode == "float32":
        return Quantized(source.float32_tflite, [], engine="converter")
    calib = inputs.calibration_input() if inputs.calibration is not None else None
    mode_int8_io = bool(int8_io and mode == "int8")
    if engine == "converter" and recipe is None:
        from edgeship.convert.converter import to_tflite

        assert source.saved_model_dir is not None  # pick_engine: "converter" is Keras only
        try:
            data = to_tflite(source.saved_model_dir, mode, calib, int8_io=mode_int8_io)
        except ModeConversionError as err:
            return ModeResult(
                mode, error=f"the TFLite converter failed: {err}", hint=FALLBACKS[mode]
            )
        return Quantized(data, [], engine="converter")
    try:
        return quantize_tflite(
            source.float32_tflite, mode, calib, int8_io=mode_int8_io, recipe=recipe
        )
    except ModeConversionError as err:
        return ModeResult(mode, error=f"ai-edge-quantizer failed: {err}", hint=FALLBACKS[mode])
    except ConvertError as err:  # a --recipe with static activations and no calibration data
        return ModeResult(mode, error=str(err), hint=FALLBACKS[mode])


def write_recipe(out: Path, mode: str, made: Quantized) -> Path | None:
    """`out/quantization/<mode>.recipe.json`: the recipe that made the mode (quantizer only)."""
    from edge_runtime.files import atomic_write_text

    if made.engine != "quantizer":
        return None
    folder = out / "quantization"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{mode}.recipe.json"
    atomic_write_text(path, made.recipe_json())
    return path

"""Load a Keras model file safely and describe its input and output."""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from edgeship.convert.errors import ConvertError
from edgeship.train.quiet import import_keras

KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_TFLITE_IDENTIFIER = b"TFL3"


@dataclass(frozen=True)
class ModelSignature:
    """What convert needs to know of a classifier: one NHWC image in, class scores out."""

    input_shape: tuple[int, int, int]
    num_classes: int

    def __post_init__(self) -> None:
        if len(self.input_shape) != 3 or any(int(d) < 1 for d in self.input_shape):
            raise ConvertError(
                "The model's input must be one image of fixed size (height, width, channels). "
                f"Received: input_shape={self.input_shape}"
            )
        if self.input_shape[2] not in (1, 3):
            raise ConvertError(
                "The model's input must have 1 (grayscale) or 3 (RGB) channels, channels last. "
                f"Received: input_shape={self.input_shape}"
            )
        if self.num_classes < 2:
            raise ConvertError(
                "The model must output one score per class (at least 2), or one sigmoid unit "
                "(a binary classifier). "
                f"Received: num_classes={self.num_classes}"
            )

    @property
    def color_mode(self) -> str:
        """'grayscale' for one channel, 'rgb' for three."""
        return "grayscale" if self.input_shape[2] == 1 else "rgb"


def check_model_file(path: str | os.PathLike) -> Path:
    """Check that `path` looks like a Keras model file before Keras touches it."""
    p = Path(path)
    if not p.exists():
        raise ConvertError(f"Model file not found. Received: path={p}")
    if not p.is_file():
        raise ConvertError(
            f"The model must be a .keras or .h5 file, not a folder. Received: path={p}"
        )
    with p.open("rb") as f:
        head = f.read(8)
    if p.suffix.lower() == ".tflite" or head[4:8] == _TFLITE_IDENTIFIER:
        raise ConvertError(
            "This is already a TensorFlow Lite model; convert takes the Keras model "
            f"(.keras or .h5) it came from. Received: path={p}"
        )
    if p.suffix.lower() not in KERAS_SUFFIXES:
        raise ConvertError(
            f"Not a Keras model file: expected a .keras or .h5 file. Received: path={p}"
        )
    if p.suffix.lower() == ".keras":
        if not zipfile.is_zipfile(p):
            raise ConvertError(
                "Not a valid .keras file (not a zip archive: truncated or another format). "
                f"Save it again with model.save('model.keras'). Received: path={p}"
            )
        try:
            with zipfile.ZipFile(p) as archive:
                bad = archive.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ConvertError(f"Corrupt .keras archive ({err}). Received: path={p}") from None
        if bad is not None:
            raise ConvertError(f"Corrupt .keras archive (bad member {bad}). Received: path={p}")
    elif head != _HDF5_SIGNATURE:
        raise ConvertError(f"Not a valid .h5 file (no HDF5 signature). Received: path={p}")
    return p


def load_keras_model(path: str | os.PathLike):
    """Load a `.keras`/`.h5` model with Keras's safe mode (no arbitrary code runs)."""
    p = check_model_file(path)
    keras = import_keras()

    try:
        model = keras.saving.load_model(p, compile=False, safe_mode=True)
    except Exception as err:  # Keras raises ValueError, TypeError, OSError, KeyError ...
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise ConvertError(
            f"Keras cannot load the model ({type(err).__name__}: {first[:300]}). Received: path={p}"
        ) from None
    if not isinstance(model, keras.Model):
        raise ConvertError(f"The file holds no Keras model. Received: path={p}")
    return with_channel_axis(in_float32(model))


def _float32_policies(config):
    """`config` with every mixed-precision dtype policy (mixed_float16, mixed_bfloat16) made
    float32."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(
            (config.get("config") or {}).get("name", "")
        ).startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_policies(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_policies(v) for v in config]
    if isinstance(config, str) and config.startswith("mixed_"):
        return "float32"
    return config


def in_float32(model):
    """A model trained with mixed precision (`mixed_float16`, the GPU default of Keras's
    guide) rebuilt to compute in float32 with the same weights (its variables are float32
    already); any other model unchanged. TFLite cannot convert its float16 graph, and every
    mode is float32 at heart (float16 mode is a storage format)."""

    def layers(m):
        for layer in getattr(m, "layers", []):
            yield layer
            yield from layers(layer)

    policies = {layer.dtype_policy.name for layer in layers(model)}
    if not any(name.startswith("mixed_") for name in policies):
        return model
    try:
        clone = type(model).from_config(_float32_policies(model.get_config()))
        clone.set_weights(model.get_weights())
    except Exception as err:  # noqa: BLE001 - Keras raises anything on an odd config
        raise ConvertError(
            f"The model computes in mixed precision ({', '.join(sorted(policies))}), which "
            f"TFLite cannot convert, and it could not be rebuilt in float32 ({err}). Save it "
            "with keras.mixed_precision.set_global_policy('float32') in effect."
        ) from None
    return clone


def with_channel_axis(model):
    """A model of grayscale images without a channel axis, input (batch, H, W) (the Keras
    tutorial's `Flatten(input_shape=(28, 28))`), as one taking (batch, H, W, 1), the layout of
    every other stage; any other model unchanged. The layers (and their names, which the layer
    report and the fallback use) are the model's own."""
    inputs = list(model.inputs or [])
    if len(inputs) != 1 or len(inputs[0].shape) != 3 or None in tuple(inputs[0].shape[1:]):
        return model
    keras = import_keras()
    height, width = (int(d) for d in inputs[0].shape[1:])
    image = keras.Input((height, width, 1), name="image")
    x = keras.layers.Reshape((height, width), name="drop_channel_axis")(image)
    if isinstance(model, keras.Sequential):
        for layer in model.layers:
            x = layer(x)
    else:
        x = model(x)
    return keras.Model(image, x, name=model.name)


def model_signature(model) -> ModelSignature:
    """The input image shape and class count of a single-input, single-output model."""
    inputs, outputs = list(model.inputs or []), list(model.outputs or [])
    if len(inputs) != 1 or len(outputs) != 1:
        raise ConvertError(
            "convert handles image classifiers with one input and one output. "
            f"Received: inputs={len(inputs)}, outputs={len(outputs)}"
        )
    in_shape, out_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
    if len(in_shape) != 4 or any(d is None for d in in_shape[1:]):
        raise ConvertError(
            "The model's input must be a batch of fixed-size images (batch, height, width, "
            f"channels). Received: input shape={in_shape}"
        )
    if len(out_shape) != 2 or out_shape[1] is None:
        raise ConvertError(
            f"The model's output must be (batch, classes). Received: output shape={out_shape}"
        )
    from edge_runtime.scores import class_count

    # One output unit is a binary classifier (a sigmoid): two classes, as edge_runtime reads it.
    height, width, channels = (int(d) for d in in_shape[1:])
    return ModelSignature((height, width, channels), class_count(int(out_shape[1])))

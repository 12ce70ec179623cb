"""convert: Keras model -> TensorFlow Lite in each quantization mode, checked against Keras."""

from edgeship.convert.calibration import DEFAULT_CALIBRATION_SAMPLES
from edgeship.convert.errors import ConvertError, ModeFailedError
from edgeship.convert.modes import MODES, parse_modes
from edgeship.convert.run import (
    DEFAULT_VERIFY_SAMPLES,
    ConvertReport,
    ModeResult,
    convert_model,
    convert_run,
    tflite_name,
)

__all__ = [
    "DEFAULT_CALIBRATION_SAMPLES",
    "DEFAULT_VERIFY_SAMPLES",
    "MODES",
    "ConvertError",
    "ConvertReport",
    "ModeFailedError",
    "ModeResult",
    "convert_model",
    "convert_run",
    "parse_modes",
    "tflite_name",
]

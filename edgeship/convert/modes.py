"""The quantization modes and what each one does."""

from __future__ import annotations

MODES: tuple[str, ...] = ("float32", "dynamic", "float16", "int8", "int16x8")

DESCRIPTIONS: dict[str, str] = {
    "float32": "plain conversion, float32 weights and activations",
    "dynamic": "dynamic range: int8 weights, float activations, no calibration data",
    "float16": "float16 weights, float32 compute on CPU",
    "int8": "full integer: int8 weights and activations (representative dataset)",
    "int16x8": "int16 activations, int8 weights (representative dataset)",
}

# Modes that need a representative dataset to fix the activation ranges.
CALIBRATED_MODES: frozenset[str] = frozenset({"int8", "int16x8"})

# What to try when a mode fails to convert.
FALLBACKS: dict[str, str] = {
    "float32": "Check that every layer is a standard Keras layer that TFLite supports.",
    "dynamic": "Try float16 or float32.",
    "float16": "Try float32 or dynamic.",
    "int8": "Try int16x8, dynamic or float16 (some op may lack an int8 kernel), "
    "or other calibration data.",
    "int16x8": "Try int8, dynamic or float16 (int16x8 kernels exist for fewer ops).",
}


def parse_modes(spec: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """Turn `"int8,float16"` (or a list of such strings) into modes in canonical order."""
    from edgeship.convert.errors import ConvertError

    if spec is None:
        return MODES
    parts = [spec] if isinstance(spec, str) else list(spec)
    names = [name.strip().lower() for part in parts for name in part.split(",") if name.strip()]
    if not names:
        raise ConvertError(
            f"--quantize needs at least one mode: {','.join(MODES)}. Received: quantize={spec!r}"
        )
    unknown = [name for name in names if name not in MODES]
    if unknown:
        raise ConvertError(
            f"Unknown quantization mode {', '.join(unknown)}. Choose from {','.join(MODES)}. "
            f"Received: quantize={','.join(names)}"
        )
    return tuple(mode for mode in MODES if mode in names)

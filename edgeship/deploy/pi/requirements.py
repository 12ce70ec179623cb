"""What a bundle installs on each target: exact pins, the full closure of each runtime.

`trixie-arm64` and `bookworm-arm64` install ai-edge-litert 2.3.0 with NumPy, Pillow and
flatbuffers from PyPI (aarch64 wheels for CPython 3.11 and 3.13; every pin also has x86_64
wheels, so the desktop and the tests' loopback "Pi" run the same versions).
`bookworm-armhf` installs tflite-runtime 2.14.0 (the only TFLite Python runtime with armv7l
wheels: CPython 3.11, NumPy 1.x) and flatbuffers into a venv with `--system-site-packages`:
NumPy and Pillow are Debian's `python3-numpy` (1.24) and `python3-pil`, since PyPI has no
armv7l NumPy wheels. Each list is the closure (`pip install --no-deps` would need nothing
else), so `pip download --no-deps` gets every wheel an offline Pi needs.
"""

from __future__ import annotations

from edge_runtime.device.targets import TARGET_NAMES, Target, get_target

LITERT_PINS: dict[str, str] = {
    "ai-edge-litert": "2.3.0",
    "numpy": "2.4.6",
    "pillow": "13.0.0",
    "flatbuffers": "25.12.19",
    # ai-edge-litert 2.3.0's own dependencies
    "backports-strenum": "1.2.8",
    "ml-dtypes": "0.6.0",
    "protobuf": "7.36.2",
    "tqdm": "4.70.1",
    "typing-extensions": "4.16.0",
}
TFLITE_PINS: dict[str, str] = {
    "tflite-runtime": "2.14.0",
    "flatbuffers": "25.12.19",
}
# `python -m edge_runtime serve` and its dependencies: pure-Python (py3-none-any) wheels,
# the same files on every target (typing-extensions: anyio and Starlette on CPython < 3.13).
SERVE_PINS: dict[str, str] = {
    "starlette": "1.10.0",
    "uvicorn": "0.54.0",
    "python-multipart": "0.0.34",
    "anyio": "4.16.0",
    "idna": "3.20",
    "h11": "0.16.0",
    "click": "8.5.1",
    "typing-extensions": "4.16.0",
}
TARGET_PINS: dict[str, dict[str, str]] = {
    "trixie-arm64": {**LITERT_PINS, **SERVE_PINS},
    "bookworm-arm64": {**LITERT_PINS, **SERVE_PINS},
    "bookworm-armhf": {**TFLITE_PINS, **SERVE_PINS},
}
# The newest glibc minor each target's OS has (Debian 13: 2.41, Debian 12: 2.36).
GLIBC_MAX_MINOR: dict[str, int] = {"trixie-arm64": 41, "bookworm-arm64": 36, "bookworm-armhf": 36}
# Kept for the callers that predate targets: the ai-edge-litert closure.
PINS = LITERT_PINS


def target_pins(target: str | Target) -> dict[str, str]:
    """The exact pins of `target`."""
    return TARGET_PINS[_name(target)]


def _name(target: str | Target) -> str:
    return target.name if isinstance(target, Target) else get_target(target).name


def requirements_text(target: str | Target = "bookworm-arm64") -> str:
    """The bundle's requirements-<target>.txt."""
    t = get_target(_name(target))
    source = (
        "NumPy and Pillow come from Debian (python3-numpy, python3-pil; a venv with "
        "--system-site-packages)"
        if t.system_site
        else f"every pin has {t.wheel_machine} and x86_64 cp{t.python.replace('.', '')} wheels"
    )
    lines = [
        f"# edgeship bundle, target {t.name}: {t.image}, CPython {t.python}, {t.arch}.",
        f"# {source}.",
        *(f"{name}=={version}" for name, version in target_pins(t).items()),
    ]
    return "\n".join(lines) + "\n"


def platform_tags(machine: str, glibc_max_minor: int = 36) -> list[str]:
    """pip's --platform tags a glibc-2.`glibc_max_minor` Linux on `machine` installs."""
    tags = [f"manylinux_2_{minor}_{machine}" for minor in range(17, glibc_max_minor + 1)]
    return [f"manylinux2014_{machine}", *tags]


__all__ = [
    "GLIBC_MAX_MINOR",
    "LITERT_PINS",
    "PINS",
    "SERVE_PINS",
    "TARGET_NAMES",
    "TARGET_PINS",
    "TFLITE_PINS",
    "platform_tags",
    "requirements_text",
    "target_pins",
]

"""What a bundle installs on the device: exact pins that have aarch64 and x86_64 cp311 wheels.

ai-edge-litert is pinned to 1.4.0, not 2.x: 2.3.0 dies with SIGSEGV in `Interpreter()` under
the emulated arm64 CPython 3.11 (qemu-user) while 1.4.0 runs models there; NumPy 2.4 works
with litert 1.4.0's extension modules. The list is the full closure (`pip install --no-deps`
would need nothing else), so `pip download --no-deps` gets every wheel an offline Pi needs.
"""

from __future__ import annotations

PINS: dict[str, str] = {
    "ai-edge-litert": "1.4.0",
    "numpy": "2.4.6",
    "pillow": "13.0.0",
    "flatbuffers": "25.12.19",
    # ai-edge-litert 1.4.0's own dependencies
    "backports-strenum": "1.2.8",
    "tqdm": "4.70.1",
    "typing-extensions": "4.16.0",
}
# Raspberry Pi OS Bookworm 64-bit: CPython 3.11, glibc 2.36.
DEVICE_PYTHON = "3.11"
DEVICE_MACHINE = "aarch64"
GLIBC_MAX_MINOR = 36


def requirements_text() -> str:
    """The bundle's requirements.txt."""
    lines = [
        "# edgeship bundle: what edge_runtime needs on the device (Raspberry Pi OS Bookworm,",
        "# CPython 3.11, aarch64). Every pin has aarch64 and x86_64 cp311 wheels.",
        *(f"{name}=={version}" for name, version in PINS.items()),
    ]
    return "\n".join(lines) + "\n"


def platform_tags(machine: str = DEVICE_MACHINE) -> list[str]:
    """pip's --platform tags a glibc-2.36 Linux on `machine` installs (manylinux2014 .. 2_36)."""
    return [f"manylinux2014_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_MAX_MINOR + 1)
    ]

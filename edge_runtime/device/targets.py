"""The Raspberry Pi OS targets edgeship installs on, and which one a machine is.

Standard library only, and runnable as a script with the device's system `python3`, before any
venv exists (`install.sh` and `deploy push` do): the one place that maps a machine (its `uname
-m`, the userland's bitness, its Python and `/etc/os-release`) to a target or to a refusal.

    python3 - --json [--root DIR] < edge_runtime/device/targets.py  # facts + target, one JSON line
    python3 - --shell --bundle DIR < edge_runtime/device/targets.py   # install.sh's sh variables

(Fed on stdin, as install.sh and `deploy push` do: run as a file, its folder would go first on
`sys.path`, where a module of edge_runtime could shadow one of the standard library.)

`--root DIR` (or `EDGESHIP_ROOT`) reads `etc/os-release`, `proc/...` and `sys/...` under DIR
instead of `/`, for tests with a fake device tree.
"""

from __future__ import annotations

import json
import os
import platform
import struct
import sys
from dataclasses import asdict, dataclass
from typing import Any

ROOT_ENV = "EDGESHIP_ROOT"
TARGET_ENV = "EDGESHIP_TARGET"


@dataclass(frozen=True)
class Target:
    """One supported OS image: its Debian release, CPython, userland and TFLite runtime."""

    name: str
    codename: str
    debian: int
    python: str
    bits: int
    arch: str  # Debian architecture of the userland
    wheel_machine: str  # the wheels' platform machine
    runtime: str  # the import name of the TFLite backend
    runtime_dist: str  # its distribution on PyPI
    system_site: bool  # venv --system-site-packages (NumPy / Pillow from Debian)
    system_packages: tuple[str, ...]  # Debian packages the venv needs (apt-get install)
    image: str  # the Raspberry Pi OS image, in words

    def __post_init__(self) -> None:
        if self.bits not in (32, 64) or self.python.count(".") != 1 or not self.name:
            raise ValueError(f"Inconsistent Target. Received: {self}")


TARGETS = (
    Target(
        name="trixie-arm64",
        codename="trixie",
        debian=13,
        python="3.13",
        bits=64,
        arch="arm64",
        wheel_machine="aarch64",
        runtime="ai_edge_litert",
        runtime_dist="ai-edge-litert",
        system_site=False,
        system_packages=("python3-venv",),
        image="Raspberry Pi OS (64-bit), Trixie",
    ),
    Target(
        name="bookworm-arm64",
        codename="bookworm",
        debian=12,
        python="3.11",
        bits=64,
        arch="arm64",
        wheel_machine="aarch64",
        runtime="ai_edge_litert",
        runtime_dist="ai-edge-litert",
        system_site=False,
        system_packages=("python3-venv",),
        image="Raspberry Pi OS (Legacy, 64-bit), Bookworm",
    ),
    Target(
        name="bookworm-armhf",
        codename="bookworm",
        debian=12,
        python="3.11",
        bits=32,
        arch="armhf",
        wheel_machine="armv7l",
        runtime="tflite_runtime",
        runtime_dist="tflite-runtime",
        system_site=True,
        system_packages=("python3-venv", "python3-numpy", "python3-pil"),
        image="Raspberry Pi OS (Legacy, 32-bit), Bookworm",
    ),
)
TARGET_NAMES = tuple(t.name for t in TARGETS)
DEFAULT_TARGET = "trixie-arm64"
# uname -m values of a 64-bit Arm userland, and of the machines whose 32-bit userland runs
# armv7l (hard-float) code: a Pi 2 or newer (32-bit OS on a 64-bit kernel reports aarch64).
ARM64_MACHINES = ("aarch64", "arm64")
ARMV7_MACHINES = ("armv7l", "armv8l", "aarch64", "arm64")
# A 64-bit PC with the same Debian release installs the same pins (every one has x86_64 wheels).
PC_MACHINES = ("x86_64", "amd64")


def get_target(name: str) -> Target:
    """The target called `name`; ValueError naming the supported ones otherwise."""
    for target in TARGETS:
        if target.name == name:
            return target
    raise ValueError(f"Unknown target. Choose from {', '.join(TARGET_NAMES)}. Received: {name!r}")


def _read(root: str, *paths: str) -> str | None:
    for rel in paths:
        try:
            with open(os.path.join(root, rel), encoding="utf-8", errors="replace") as handle:
                return handle.read()
        except OSError:
            continue
    return None


def os_release(root: str = "/") -> dict[str, str]:
    """`/etc/os-release` (or `/usr/lib/os-release`) under `root` as a dict; {} when absent."""
    text = _read(root, "etc/os-release", "usr/lib/os-release") or ""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key and not key.startswith("#"):
            out[key] = value.strip().strip("'\"")
    return out


def board_model(root: str = "/") -> str | None:
    """The board ("Raspberry Pi 4 Model B Rev 1.4") from the device tree, else /proc/cpuinfo."""
    text = _read(root, "proc/device-tree/model", "sys/firmware/devicetree/base/model")
    if text and text.strip("\0\n "):
        return text.strip("\0\n ")
    for line in (_read(root, "proc/cpuinfo") or "").splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "Model" and value.strip():
            return value.strip()
    return None


def probe(root: str | None = None) -> dict[str, Any]:
    """This machine's facts: machine, userland bits, Python, glibc, OS and board."""
    root = root or os.environ.get(ROOT_ENV) or "/"
    release = os_release(root)
    libc, libc_version = platform.libc_ver()
    return {
        "machine": platform.machine(),
        "bits": struct.calcsize("P") * 8,
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "glibc": libc_version if libc == "glibc" else None,
        "os_id": release.get("ID"),
        "os_codename": release.get("VERSION_CODENAME"),
        "os_version": release.get("VERSION_ID"),
        "os_name": release.get("PRETTY_NAME"),
        "board": board_model(root),
    }


def _supported_line() -> str:
    return "; ".join(f"{t.name} ({t.image}, Python {t.python})" for t in TARGETS)


def match(facts: dict[str, Any]) -> tuple[Target | None, str]:
    """(the target of a machine with `facts`, a note) or (None, why it is refused + the fix)."""
    machine = str(facts.get("machine") or "").lower()
    bits = int(facts.get("bits") or 0)
    python = ".".join(str(facts.get("python") or "").split(".")[:2])
    codename = facts.get("os_codename") or "unknown"
    os_name = facts.get("os_name") or facts.get("os_id") or "an unknown OS"
    seen = f"{os_name}, {machine or '?'} {bits}-bit userland, Python {python or '?'}"
    supported = f"Supported: {_supported_line()}."
    if facts.get("python_implementation", "CPython") != "CPython":
        return None, f"Only CPython has TFLite runtime wheels. Received: {seen}. {supported}"
    if machine.startswith(("armv6", "armv5", "armv4")):
        return None, (
            f"An {machine} board (Raspberry Pi Zero / 1) has no TFLite Python runtime (the "
            f"armv7l wheels need a Pi 2 or newer). Received: {seen}. {supported}"
        )
    if bits == 64 and machine in ARM64_MACHINES + PC_MACHINES:
        candidates = [t for t in TARGETS if t.bits == 64]
    elif bits == 32 and machine in ARMV7_MACHINES:
        candidates = [t for t in TARGETS if t.bits == 32]
    else:
        return None, (
            f"No TFLite Python runtime for this machine; flash Raspberry Pi OS (64-bit) on a "
            f"Pi 3, 4 or 5. Received: {seen}. {supported}"
        )
    for target in candidates:
        if target.python == python:
            note = ""
            if codename != target.codename:
                note = f"OS {codename} is not {target.codename}: installing {target.name}'s pins"
            if machine in PC_MACHINES:
                note = f"{machine} PC: installing {target.name}'s pins (x86_64 wheels)"
            return target, note
    if bits == 32:
        fix = (
            "32-bit Raspberry Pi OS has a TFLite runtime only on Bookworm (tflite-runtime 2.14: "
            "CPython 3.11 armv7l wheels, none for 3.13): flash Raspberry Pi OS (64-bit) "
            "(target trixie-arm64), or the Legacy 32-bit Bookworm image (bookworm-armhf)"
        )
    else:
        fix = (
            "flash Raspberry Pi OS (64-bit) Trixie (trixie-arm64, Python 3.13) or the Legacy "
            "Bookworm image (bookworm-arm64, Python 3.11)"
        )
    return None, f"No target for Python {python or '?'} here; {fix}. Received: {seen}. {supported}"


def detect(facts: dict[str, Any], allowed: tuple[str, ...] | list[str] = TARGET_NAMES) -> Target:
    """The target of `facts` among `allowed` (a bundle's); ValueError with the one-line reason."""
    forced = os.environ.get(TARGET_ENV)
    target = get_target(forced) if forced else match(facts)[0]
    if target is None:
        raise ValueError(f"Unsupported device. {match(facts)[1]}")
    if target.name not in allowed:
        raise ValueError(
            f"This device is {target.name}, which this bundle was not built for; rebuild it with "
            f"`edgeship deploy bundle RUN --target {target.name}`. Received: bundle targets="
            f"{','.join(allowed)}"
        )
    return target


def _shell(bundle: str) -> int:
    """Print install.sh's variables for this device; exit 2 with one line when refused."""
    try:
        with open(os.path.join(bundle, "manifest.json"), encoding="utf-8") as handle:
            targets = json.load(handle)["targets"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        print(f"error: manifest.json has no targets ({err}); rebuild the bundle.", file=sys.stderr)
        return 2
    facts = probe()
    try:
        target = detect(facts, list(targets))
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    entry = targets[target.name]
    machine = str(facts["machine"]).lower()
    fits = machine == target.wheel_machine or (target.bits == 32 and machine in ARMV7_MACHINES)
    values = {
        "TARGET": target.name,
        "RUNTIME": target.runtime,
        "REQUIREMENTS": entry["requirements"],
        "SYSTEM_SITE": "1" if target.system_site else "",
        "SYSTEM_PACKAGES": " ".join(target.system_packages),
        "WHEEL_MACHINE": target.wheel_machine,
        "OFFLINE": "1" if entry.get("wheels") and fits else "",
        "HAS_WHEELS": "1" if entry.get("wheels") else "",
    }
    for key, value in values.items():
        print(f"{key}='{value}'")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`--json [--root DIR]` or `--shell --bundle DIR`."""
    args = list(sys.argv[1:] if argv is None else argv)
    root = None
    if "--root" in args:
        root = args[args.index("--root") + 1]
    if "--shell" in args and "--bundle" in args:
        return _shell(args[args.index("--bundle") + 1])
    facts = probe(root)
    target, note = match(facts)
    record = {"facts": facts, "target": target.name if target else None, "note": note}
    if target:
        record["target_info"] = asdict(target)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())

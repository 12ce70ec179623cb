"""`host_info`: the machine, CPU, Python and library versions a bench ran on."""

from __future__ import annotations

import contextlib
import os
import platform
from pathlib import Path
from typing import Any

import numpy as np


def host_info(backend: str | None) -> dict[str, Any]:
    """Machine, CPU, Python and library versions of this host."""
    import importlib.metadata as md

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"numpy": np.__version__}
    for dist in ("edgeship", "tensorflow", "keras", "ai-edge-litert", "tflite-runtime"):
        with contextlib.suppress(md.PackageNotFoundError):
            versions[dist] = md.version(dist)
    return {
        "machine": platform.machine(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "system": platform.platform(),
        "python": platform.python_version(),
        "tflite_backend": backend,
        "versions": versions,
    }

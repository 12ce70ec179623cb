"""Peak memory of this process, with the standard library only (no psutil on the device)."""

from __future__ import annotations

import sys


def peak_rss_mb() -> float:
    """This process's peak RSS in MiB: `VmHWM` where /proc has it, else `ru_maxrss`.

    `ru_maxrss` survives `exec` on Linux: a process started from a big parent (a benchmark
    with TensorFlow loaded, an SSH session's shell) would report the parent's peak. `VmHWM`
    belongs to the new address space. Returns 0.0 where neither exists.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 3)
    except (OSError, ValueError):
        pass
    try:
        import resource
    except ImportError:  # Windows
        return 0.0
    scale = 1.0 if sys.platform == "darwin" else 1024.0  # bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 1048576.0, 3)

"""`python -m edge_runtime doctor`: is this device ready to run (and to benchmark) a model?

Each check has a `status` (ok / warn / fail / skip), a `detail` and, when not ok, a one-line
`fix`. Nothing needs root. The device's files are read under `root` (default `/`; the
`--root DIR` option or `EDGESHIP_ROOT`, for a fake `/proc` + `/sys` tree): the device tree's
model, `/etc/os-release`, `/proc/meminfo`, `/proc/cpuinfo`, `/sys/.../cpufreq`, the thermal
zone, the firmware's `get_throttled`; `vcgencmd` is looked for on PATH (under `root`, in its
`usr/bin`). The interpreter itself (machine, bits, Python, glibc, the runtime) is this process's.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import asdict
from pathlib import Path
from typing import Any

from edge_runtime.device import targets as _targets
from edge_runtime.device.check import Check, find_tool

# get_throttled bits (Raspberry Pi firmware): now (0-3) and since boot (16-19).
THROTTLE_BITS = {
    0: "under-voltage now",
    1: "ARM frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}
POWER_FIX = (
    "use the official power supply (Pi 4: 5.1 V 3 A, Pi 5: 5 V 5 A) and a short cable; "
    "cool the board (heatsink or fan)"
)
WARN_CELSIUS = 70.0  # the firmware throttles at 80 (85 on a Pi 5)
LOW_MEMORY_MB = 100
LOW_DISK_MB = 500


def _read(root: Path, rel: str) -> str | None:
    try:
        return (root / rel).read_text(errors="replace").strip("\0\n ")
    except OSError:
        return None


def _int(text: str | None, base: int = 10) -> int | None:
    try:
        return int(text.strip(), base) if text is not None else None
    except ValueError:
        return None


def decode_throttled(value: int) -> list[str]:
    """The names of the bits set in a `get_throttled` value."""
    return [name for bit, name in THROTTLE_BITS.items() if value >> bit & 1]


def read_throttled(root: Path) -> tuple[int | None, str]:
    """(the get_throttled value, where it came from), or (None, why it is unknown)."""
    tool = find_tool(root, "vcgencmd")
    if tool:
        try:
            proc = subprocess.run(
                [tool, "get_throttled"], capture_output=True, text=True, timeout=10, check=False
            )
            value = _int(proc.stdout.strip().partition("=")[2], 16)
            if proc.returncode == 0 and value is not None:
                return value, "vcgencmd get_throttled"
        except (OSError, subprocess.TimeoutExpired):
            pass
    rel = "sys/devices/platform/soc/soc:firmware/get_throttled"
    value = _int(_read(root, rel), 16)
    if value is not None:
        return value, f"/{rel}"
    return None, "no vcgencmd on PATH and no get_throttled in sysfs"


def temperature_c(root: Path) -> float | None:
    """The SoC temperature (thermal_zone0, or vcgencmd measure_temp's sysfs twin), in °C."""
    millis = _int(_read(root, "sys/class/thermal/thermal_zone0/temp"))
    return None if millis is None else round(millis / 1000.0, 1)


def pi_state(root: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Temperature and throttle flags now: what `bench` records before and after each model."""
    base = Path(root or os.environ.get(_targets.ROOT_ENV) or "/")
    value, source = read_throttled(base)
    cur = _int(_read(base, "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq"))
    return {
        "temperature_c": temperature_c(base),
        "throttled": None if value is None else hex(value),
        "throttled_flags": [] if value is None else decode_throttled(value),
        "throttled_source": source,
        "cpu_mhz": None if cur is None else round(cur / 1000),
    }


def _meminfo(root: Path) -> dict[str, int]:
    out = {}
    for line in (_read(root, "proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        value = _int(rest.strip().split(" ")[0]) if rest.strip() else None
        if value is not None:
            out[key.strip()] = value  # kB
    return out


def _cpu_count(root: Path) -> int | None:
    text = _read(root, "proc/cpuinfo")
    if text:
        count = sum(1 for ln in text.splitlines() if ln.split(":")[0].strip() == "processor")
        if count:
            return count
    return os.cpu_count()


def _runtime_checks(target: _targets.Target | None, model: str | None) -> list[Check]:
    """The backend, NumPy (and its ABI against the backend), Pillow, XNNPACK."""
    checks = []
    try:
        import numpy as np

        numpy_version = np.__version__
        checks.append(Check("numpy", "ok", f"NumPy {numpy_version}"))
    except ImportError as err:
        numpy_version = None
        fix = (
            "sudo apt install python3-numpy (and a venv with --system-site-packages)"
            if target and target.system_site
            else "reinstall the bundle (./install.sh) or pip install numpy"
        )
        checks.append(Check("numpy", "fail", f"NumPy does not import ({err})", fix))
    try:
        import PIL

        checks.append(Check("pillow", "ok", f"Pillow {PIL.__version__}"))
    except ImportError as err:
        checks.append(
            Check("pillow", "fail", f"Pillow does not import ({err})", "pip install pillow")
        )

    backend = None
    if numpy_version is None:
        checks.append(Check("runtime", "skip", "needs NumPy"))
    else:
        from edge_runtime.backends import load_backend
        from edge_runtime.errors import BackendError

        wanted = target.runtime if target else None
        try:
            backend = load_backend(wanted)
            checks.append(Check("runtime", "ok", f"{backend.name} {backend.version}"))
        except BackendError as err:
            fix = (
                "pip install 'numpy<2' in this venv (tflite-runtime 2.14 is built for NumPy 1.x)"
                if "NumPy" in str(err)
                else f"run the bundle's ./install.sh (it installs {wanted or 'ai-edge-litert'})"
            )
            checks.append(Check("runtime", "fail", str(err).split(". Received")[0], fix))
    checks.append(_numpy_abi(numpy_version, backend))
    checks.append(_xnnpack(backend, model))
    return checks


def _numpy_abi(numpy_version: str | None, backend: Any) -> Check:
    """The tflite-runtime + NumPy 2 trap: it imports, then fails creating an interpreter."""
    if numpy_version is None:
        return Check("numpy_abi", "skip", "NumPy does not import")
    from edge_runtime.backends import _version, installed_backends

    legacy = int(numpy_version.split(".")[0]) >= 2 and "tflite_runtime" in installed_backends()
    if legacy:
        what = f"tflite-runtime {_version('tflite_runtime')} is built against NumPy 1.x"
        if backend is None or backend.name == "tflite_runtime":
            return Check(
                "numpy_abi",
                "fail",
                f"{what}; NumPy {numpy_version} is installed: creating an interpreter fails",
                "pip install 'numpy<2' (bookworm-armhf: Debian's python3-numpy 1.24 in a venv "
                "with --system-site-packages, as install.sh makes)",
            )
        return Check(
            "numpy_abi",
            "warn",
            f"{what} and cannot run beside NumPy {numpy_version}; {backend.name} is used first",
            "pip uninstall tflite-runtime (or never pass --backend tflite_runtime)",
        )
    if backend is None:
        return Check("numpy_abi", "skip", "no runtime to check against")
    return Check("numpy_abi", "ok", f"{backend.name} {backend.version} with NumPy {numpy_version}")


def _xnnpack(backend: Any, model: str | None) -> Check:
    """Load `model` and look for the runtime's "Created ... XNNPACK delegate" line."""
    if backend is None:
        return Check("xnnpack", "skip", "no runtime")
    if not model:
        return Check("xnnpack", "skip", "pass a model (doctor MODEL) to check the delegate")
    import tempfile

    try:
        saved = os.dup(2)
    except OSError:
        return Check("xnnpack", "skip", "no stderr to read the runtime's log from")
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            interpreter = backend.make_interpreter(Path(model).read_bytes())
            interpreter.allocate_tensors()
            error = None
        except Exception as err:  # noqa: BLE001 - any load failure is the check's answer
            error = err
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        capture.seek(0)
        log = capture.read().decode("utf-8", "replace")
    if error is not None:
        return Check("xnnpack", "fail", f"the model does not load: {error}", "rebuild the bundle")
    if "XNNPACK" in log:
        return Check("xnnpack", "ok", "XNNPACK delegate applied to the model")
    fix = (
        "for XNNPACK's faster kernels, flash Raspberry Pi OS (64-bit): ai-edge-litert applies it"
        if backend.name == "tflite_runtime"
        else f"install the bundle's pinned {backend.name} (./install.sh)"
    )
    return Check(
        "xnnpack",
        "warn",
        f"{backend.name} {backend.version} applied no XNNPACK delegate (its builtin kernels run)",
        fix,
    )


def run_doctor(
    root: str | os.PathLike[str] | None = None,
    install_dir: str | os.PathLike[str] | None = None,
    model: str | None = None,
) -> dict[str, Any]:
    """`{"device": {...}, "checks": [{"name", "status", "detail", "fix"}, ...]}`."""
    base = Path(root or os.environ.get(_targets.ROOT_ENV) or "/")
    facts = _targets.probe(str(base))
    target, note = _targets.match(facts)
    checks: list[Check] = []

    board = facts.get("board")
    if board and "Raspberry Pi" in board:
        checks.append(Check("board", "ok", board))
    else:
        checks.append(
            Check(
                "board",
                "warn",
                board or "no device tree model: not a Raspberry Pi",
                "fine for a trial; device figures are a Raspberry Pi's only on one",
            )
        )
    os_line = f"{facts.get('os_name') or 'unknown OS'}, {facts['bits']}-bit userland"
    if target is None:
        checks.append(Check("os", "fail", f"{os_line}: unsupported", note.split(" Received:")[0]))
    elif note and "PC" not in note:
        checks.append(
            Check(
                "os",
                "warn",
                f"{os_line}: target {target.name} ({note})",
                f"flash {target.image} for the tested combination",
            )
        )
    else:
        checks.append(
            Check("os", "ok", f"{os_line}: target {target.name}" + (f" ({note})" * bool(note)))
        )
    py = facts["python"]
    py_ok = target is not None and py.startswith(target.python + ".")
    checks.append(
        Check(
            "python",
            "ok" if py_ok else "fail",
            f"{facts.get('python_implementation')} {py}",
            None if py_ok else "use the OS's python3 (3.13 on Trixie, 3.11 on Bookworm)",
        )
    )
    kernel = os.uname().machine
    checks.append(
        Check(
            "machine", "ok", f"{facts['machine']} ({facts['bits']}-bit userland, kernel {kernel})"
        )
    )
    glibc = facts.get("glibc")
    need = (2, 34) if target and target.bits == 32 else (2, 27)  # the wheels' manylinux tags
    have = tuple(int(p) for p in glibc.split(".")[:2]) if glibc else None
    if have is None:
        checks.append(Check("glibc", "warn", "not glibc", "use Raspberry Pi OS (glibc)"))
    else:
        good = have >= need
        checks.append(
            Check(
                "glibc",
                "ok" if good else "fail",
                f"glibc {glibc} (the runtime's wheels need >= {need[0]}.{need[1]})",
                None if good else "upgrade the OS (Bookworm has 2.36, Trixie 2.41)",
            )
        )
    checks.extend(_runtime_checks(target, model))

    cpus = _cpu_count(base)
    checks.append(Check("cpus", "ok", f"{cpus} CPUs"))
    cpufreq = "sys/devices/system/cpu/cpu0/cpufreq"
    governor = _read(base, f"{cpufreq}/scaling_governor")
    if governor is None:
        checks.append(Check("governor", "skip", "no cpufreq in sysfs"))
    elif governor == "performance":
        checks.append(Check("governor", "ok", governor))
    else:
        checks.append(
            Check(
                "governor",
                "warn",
                f"{governor}: the clock follows the load, so the first runs of a bench are slower",
                "for steady figures: echo performance | sudo tee "
                "/sys/devices/system/cpu/cpu*/cpufreq/scaling_governor",
            )
        )
    cur = _int(_read(base, f"{cpufreq}/scaling_cur_freq"))
    top = _int(_read(base, f"{cpufreq}/cpuinfo_max_freq"))
    if cur is None or top is None:
        checks.append(Check("clock", "skip", "no cpufreq in sysfs"))
    else:
        checks.append(Check("clock", "ok", f"{cur // 1000} MHz now, {top // 1000} MHz max"))

    temp = temperature_c(base)
    if temp is None:
        checks.append(Check("temperature", "skip", "no thermal zone in sysfs"))
    elif temp >= WARN_CELSIUS:
        checks.append(
            Check("temperature", "warn", f"{temp:.1f} °C (throttling starts at 80 °C)", POWER_FIX)
        )
    else:
        checks.append(Check("temperature", "ok", f"{temp:.1f} °C"))

    value, source = read_throttled(base)
    if value is None:
        checks.append(Check("throttling", "skip", source))
    else:
        flags = decode_throttled(value)
        now = [f for f in flags if f.endswith(" now")]
        status = "fail" if now else "warn" if flags else "ok"
        detail = f"{hex(value)} ({source})" + (f": {', '.join(flags)}" if flags else ": none")
        checks.append(Check("throttling", status, detail, POWER_FIX if flags else None))

    mem = _meminfo(base)
    if "MemTotal" not in mem:
        checks.append(Check("memory", "skip", "no /proc/meminfo"))
    else:
        avail = mem.get("MemAvailable", mem.get("MemFree", 0)) // 1024
        swap = (
            f", swap {mem.get('SwapFree', 0) // 1024} of {mem.get('SwapTotal', 0) // 1024} MB free"
        )
        detail = f"{avail} of {mem['MemTotal'] // 1024} MB available{swap}"
        low = avail < LOW_MEMORY_MB
        checks.append(
            Check(
                "memory",
                "warn" if low else "ok",
                detail,
                "close other programs before benchmarking" if low else None,
            )
        )

    folder = Path(install_dir or os.getcwd())
    try:
        free = shutil.disk_usage(folder).free // (1 << 20)
    except OSError as err:
        checks.append(Check("disk", "skip", f"cannot stat {folder} ({err.strerror})"))
    else:
        low = free < LOW_DISK_MB
        checks.append(
            Check(
                "disk",
                "warn" if low else "ok",
                f"{free} MB free at {folder}",
                "free space (a venv takes ~150 MB): sudo apt clean" if low else None,
            )
        )

    from edge_runtime.device.camera_check import camera_check

    checks.append(camera_check(base))
    runtime = next((c for c in checks if c.name == "runtime"), None)
    device = {
        "board": board,
        "os": facts.get("os_name"),
        "os_codename": facts.get("os_codename"),
        "machine": facts["machine"],
        "bits": facts["bits"],
        "kernel_machine": kernel,
        "python": py,
        "glibc": glibc,
        "target": target.name if target else None,
        "runtime": runtime.detail if runtime and runtime.status == "ok" else None,
        "cpus": cpus,
    }
    return {"device": device, "checks": [asdict(c) for c in checks]}


def doctor_text(report: dict[str, Any]) -> str:
    """The human report: one line per check, the fix indented below it."""
    d = report["device"]
    lines = [f"{d['board'] or 'unknown board'} · {d['os']} · target {d['target'] or 'none'}"]
    for c in report["checks"]:
        lines.append(f"{c['status']:>4}  {c['name']:<12} {c['detail']}")
        if c["fix"]:
            lines.append(f"{'':18}fix: {c['fix']}")
    return "\n".join(lines)


def exit_code(report: dict[str, Any]) -> int:
    """0 unless a check failed (1)."""
    return 1 if any(c["status"] == "fail" for c in report["checks"]) else 0


def doctor_json(report: dict[str, Any]) -> str:
    """One JSON line."""
    return json.dumps(report, ensure_ascii=False)


__all__ = ["Check", "decode_throttled", "doctor_text", "pi_state", "run_doctor"]

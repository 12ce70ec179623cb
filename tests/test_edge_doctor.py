"""`python -m edge_runtime doctor` against fake /proc, /sys and /etc trees (`--root DIR`).

The trees are the environment: a throttled, under-volted Pi 4 (vcgencmd present), a cool
Pi 5 (sysfs get_throttled), a machine with no device tree and no vcgencmd. The interpreter and
the runtime are this venv's, for real; the 32-bit OS case runs in the emulated bookworm-armhf
userland (tests/test_deploy_targets_emulated.py).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.device.doctor import decode_throttled, pi_state

BOOKWORM = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\nVERSION_CODENAME=bookworm\n'
MEMINFO = "MemTotal: 3884000 kB\nMemFree: 2000000 kB\nMemAvailable: 3100000 kB\n"
MEMINFO += "SwapTotal: 204796 kB\nSwapFree: 204796 kB\n"


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return root


def cpufreq(governor: str, cur_khz: int, max_khz: int) -> dict[str, str]:
    base = "sys/devices/system/cpu/cpu0/cpufreq"
    return {
        f"{base}/scaling_governor": governor + "\n",
        f"{base}/scaling_cur_freq": f"{cur_khz}\n",
        f"{base}/cpuinfo_max_freq": f"{max_khz}\n",
    }


def cpuinfo(n: int) -> str:
    return "".join(f"processor\t: {i}\nBogoMIPS\t: 108.00\n\n" for i in range(n))


@pytest.fixture
def pi4_throttled(tmp_path) -> Path:
    """A Pi 4 on a weak supply, hot: vcgencmd reports 0x50005."""
    root = write_tree(
        tmp_path / "pi4",
        {
            "proc/device-tree/model": b"Raspberry Pi 4 Model B Rev 1.4\0",
            "etc/os-release": BOOKWORM,
            "proc/cpuinfo": cpuinfo(4),
            "proc/meminfo": MEMINFO,
            "sys/class/thermal/thermal_zone0/temp": "82300\n",
            **cpufreq("ondemand", 600000, 1800000),
            "usr/bin/vcgencmd": '#!/bin/sh\n[ "$1" = get_throttled ] && echo throttled=0x50005\n',
        },
    )
    (root / "usr/bin/vcgencmd").chmod(0o755)
    return root


@pytest.fixture
def pi5_cool(tmp_path) -> Path:
    return write_tree(
        tmp_path / "pi5",
        {
            "sys/firmware/devicetree/base/model": b"Raspberry Pi 5 Model B Rev 1.0\0",
            "etc/os-release": BOOKWORM,
            "proc/cpuinfo": cpuinfo(4),
            "proc/meminfo": MEMINFO,
            "sys/class/thermal/thermal_zone0/temp": "41500\n",
            **cpufreq("performance", 2400000, 2400000),
            "sys/devices/platform/soc/soc:firmware/get_throttled": "0\n",
        },
    )


@pytest.fixture
def no_vcgencmd(tmp_path) -> Path:
    """A generic Linux box: no device tree, no firmware, no vcgencmd, no thermal zone."""
    return write_tree(
        tmp_path / "box",
        {"etc/os-release": BOOKWORM, "proc/cpuinfo": cpuinfo(2), "proc/meminfo": MEMINFO},
    )


def doctor(root: Path, *extra: str) -> tuple[int, dict]:
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "doctor", "--json", "--root", str(root), *extra],
        capture_output=True,
        text=True,
    )
    assert proc.stderr.strip() == "" or "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    return proc.returncode, report


def by_name(report: dict) -> dict[str, dict]:
    checks = {c["name"]: c for c in report["checks"]}
    for c in report["checks"]:
        assert set(c) == {"name", "status", "detail", "fix"}
        assert c["status"] in {"ok", "warn", "fail", "skip"}
        assert (c["fix"] is not None) == (c["status"] in {"warn", "fail"}), c
    return checks


def test_throttled_under_volted_pi4_fails(pi4_throttled):
    code, report = doctor(pi4_throttled)
    assert code == 1, "a check failed: exit 1"
    checks = by_name(report)
    assert report["device"]["board"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert report["device"]["cpus"] == 4
    throttling = checks["throttling"]
    assert throttling["status"] == "fail" and "0x50005" in throttling["detail"]
    assert "vcgencmd get_throttled" in throttling["detail"]
    for flag in ("under-voltage now", "throttled now", "under-voltage since boot"):
        assert flag in throttling["detail"], flag
    assert "frequency capped" not in throttling["detail"]
    assert "power supply" in throttling["fix"]
    assert checks["temperature"]["status"] == "warn" and "82.3" in checks["temperature"]["detail"]
    assert checks["governor"]["status"] == "warn" and "performance" in checks["governor"]["fix"]
    assert checks["clock"]["detail"] == "600 MHz now, 1800 MHz max"
    assert checks["board"]["status"] == "ok"


def test_cool_pi5_is_healthy(pi5_cool, edge_models):
    code, report = doctor(pi5_cool, str(edge_models["mlp_int8"]))
    checks = by_name(report)
    assert code == 0, [c for c in report["checks"] if c["status"] == "fail"]
    assert checks["board"] == {
        "name": "board",
        "status": "ok",
        "detail": "Raspberry Pi 5 Model B Rev 1.0",
        "fix": None,
    }
    assert checks["throttling"]["status"] == "ok"
    assert "soc:firmware/get_throttled" in checks["throttling"]["detail"]
    assert checks["temperature"] == {
        "name": "temperature",
        "status": "ok",
        "detail": "41.5 °C",
        "fix": None,
    }
    assert checks["governor"]["status"] == "ok" and checks["clock"]["detail"].startswith("2400")
    assert checks["memory"]["detail"].startswith("3027 of 3792 MB available, swap 199 of 199")
    assert checks["runtime"]["status"] == "ok" and checks["numpy_abi"]["status"] == "ok"
    assert checks["xnnpack"]["status"] == "ok", checks["xnnpack"]


def test_machine_without_vcgencmd_skips_throttling(no_vcgencmd):
    code, report = doctor(no_vcgencmd)
    checks = by_name(report)
    assert code == 0
    assert (
        checks["throttling"]["status"] == "skip" and "no vcgencmd" in checks["throttling"]["detail"]
    )
    assert checks["temperature"]["status"] == "skip" and checks["governor"]["status"] == "skip"
    assert checks["board"]["status"] == "warn" and "not a Raspberry Pi" in checks["board"]["detail"]
    assert checks["xnnpack"]["status"] == "skip", "no model given"
    assert report["device"]["board"] is None and report["device"]["cpus"] == 2


def test_text_report_names_each_fix(pi4_throttled):
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "doctor", "--root", str(pi4_throttled)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Raspberry Pi 4 Model B Rev 1.4")
    fail = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["fail", "throttling"])
    assert lines[fail + 1].strip().startswith("fix: use the official power supply")


@pytest.mark.parametrize(
    ("value", "flags"),
    [
        (0x0, []),
        (
            0x50005,
            [
                "under-voltage now",
                "throttled now",
                "under-voltage since boot",
                "throttled since boot",
            ],
        ),
        (0x80008, ["soft temperature limit now", "soft temperature limit since boot"]),
        (0x20000, ["frequency capped since boot"]),
    ],
)
def test_decode_throttled(value, flags):
    assert decode_throttled(value) == flags


def test_pi_state_reads_temperature_and_flags(pi4_throttled):
    state = pi_state(pi4_throttled)
    assert state["temperature_c"] == 82.3 and state["throttled"] == "0x50005"
    assert "under-voltage now" in state["throttled_flags"] and state["cpu_mhz"] == 600


def test_tflite_runtime_beside_numpy_2_is_named(tflite_env, no_vcgencmd, tmp_path):
    """tflite-runtime 2.14 linked in beside this venv's NumPy 2 (and ai-edge-litert): the trap
    is reported with its fix, though litert (used first) still runs."""
    import os

    import numpy as np

    from tests.support.procs import REPO

    site = next((tflite_env.root / "venv" / "lib").glob("python3*/site-packages"))
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for entry in ("tflite_runtime", "tflite_runtime-2.14.0.dist-info"):
        (mixed / entry).symlink_to(site / entry)
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "doctor", "--json", "--root", str(no_vcgencmd)],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(mixed), str(REPO)])},
    )
    checks = by_name(json.loads(proc.stdout))
    abi = checks["numpy_abi"]
    assert abi["status"] == "warn" and f"NumPy {np.__version__}" in abi["detail"]
    assert "tflite-runtime 2.14.0 is built against NumPy 1.x" in abi["detail"]
    assert "pip uninstall tflite-runtime" in abi["fix"]
    assert checks["runtime"]["status"] == "ok" and proc.returncode == 0

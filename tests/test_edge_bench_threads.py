"""`python -m edge_runtime bench --threads 1,2,4`: one measurement per thread count, each with
the Pi's temperature and throttle flags before and after it, and a run that throttled says so.

The Pi is a fake /sys tree (`EDGESHIP_ROOT`) whose `usr/bin/vcgencmd` answers like the
firmware: 0x0 at first, then 0x40004 (throttled now, and since boot) after its first call, as a
Pi that heats up during the run would. The benchmark itself is real.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

HEATING_VCGENCMD = """#!/bin/sh
state="$(dirname "$0")/calls"
n=$(cat "$state" 2>/dev/null || echo 0)
echo $((n + 1)) > "$state"
if [ "$n" -ge 1 ]; then echo throttled=0x40004; else echo throttled=0x0; fi
"""


def pi_tree(root: Path, vcgencmd: str | None, temp: str = "61200\n") -> Path:
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text(temp)
    if vcgencmd:
        (root / "usr/bin").mkdir(parents=True)
        (root / "usr/bin/vcgencmd").write_text(vcgencmd)
        (root / "usr/bin/vcgencmd").chmod(0o755)
    return root


def bench(model: Path, root: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "EDGESHIP_ROOT": str(root)}
    argv = [
        sys.executable,
        "-m",
        "edge_runtime",
        "bench",
        str(model),
        "--runs",
        "20",
        "--warmup",
        "2",
        *extra,
    ]
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def test_each_thread_count_with_the_pis_state(edge_models, tmp_path):
    root = pi_tree(tmp_path / "pi", "#!/bin/sh\necho throttled=0x0\n")
    proc = bench(edge_models["mlp_int8"], root, "--threads", "1,2,4", "--json")
    assert proc.returncode == 0, proc.stderr
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["threads"] for r in runs] == [1, 2, 4]
    for r in runs:
        assert r["latency_us"]["p50"] > 0 and r["runs"] == 20
        assert r["device_before"]["temperature_c"] == 61.2
        assert r["device_after"]["throttled"] == "0x0" and r["throttled"] is False


def test_a_run_that_throttled_says_so(edge_models, tmp_path):
    root = pi_tree(tmp_path / "pi", HEATING_VCGENCMD)
    proc = bench(edge_models["mlp_int8"], root, "--threads", "2")
    assert proc.returncode == 0, proc.stderr
    assert "temperature 61.2 -> 61.2 °C" in proc.stdout
    assert "THROTTLED during this run (throttled now, throttled since boot)" in proc.stdout

    (root / "usr/bin/calls").unlink()
    proc = bench(edge_models["mlp_int8"], root, "--threads", "2", "--json")
    (run,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert run["device_before"]["throttled"] == "0x0"
    assert run["device_after"]["throttled_flags"] == ["throttled now", "throttled since boot"]
    assert run["throttled"] is True


def test_no_way_to_tell_is_none_not_false(edge_models, tmp_path):
    proc = bench(edge_models["mlp_int8"], pi_tree(tmp_path / "box", None), "--json")
    (run,) = [json.loads(line) for line in proc.stdout.splitlines()]
    assert run["threads"] is None and run["throttled"] is None
    assert run["device_after"]["throttled_source"].startswith("no vcgencmd")


@pytest.mark.parametrize("bad", ["0", "1,x", ",", "-2"])
def test_bad_thread_counts_one_line_exit_2(edge_models, tmp_path, bad):
    proc = bench(edge_models["mlp_int8"], tmp_path, "--threads", bad)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("error: --threads takes counts >= 1")
    assert len(proc.stderr.strip().splitlines()) == 1


THREADS_PROBE = """
import os, sys
import numpy as np
from edge_runtime.classifier import EdgeClassifier
clf = EdgeClassifier.load(sys.argv[1], num_threads=int(sys.argv[2]))
clf.predict_proba(np.zeros((2, 32, 32, 3), np.uint8))
print(len(os.listdir("/proc/self/task")))
"""


def test_num_threads_reaches_the_interpreter(edge_models):
    """`num_threads` (what `bench --threads` and `serve --threads` pass) starts that many
    threads in the interpreter (XNNPACK's pool: N - 1 workers beside the caller), counted in
    /proc/self/task of a fresh process, not taken from what edgeship echoes back."""
    counts = {}
    for n in (1, 4):
        proc = subprocess.run(
            [sys.executable, "-c", THREADS_PROBE, str(edge_models["cnn_uint8"]), str(n)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, proc.stderr
        counts[n] = int(proc.stdout.split()[-1])
    assert counts[4] - counts[1] == 3, counts

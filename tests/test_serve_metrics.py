"""`edge_runtime.metrics`: the Prometheus text, and the board's gauges read as a Pi gives them."""

from __future__ import annotations

import os
import stat

from edge_runtime.metrics import ServeMetrics, cpu_temperature_c, throttled_bits


def test_exposition_counts_and_histogram():
    m = ServeMetrics(["model_int8"])
    m.prediction("model_int8", 'Ankle "boot"', "http", 0.0003)
    m.prediction("model_int8", 'Ankle "boot"', "http", 0.004)
    m.prediction("model_int8", "Bag", "watch", 7.0)
    m.error("too_large")
    text = m.render(temperature_c=None, throttled=None)
    lines = text.splitlines()
    quoted = 'label="Ankle \\"boot\\""'  # escaped as the format wants
    assert f'edgeship_predictions_total{{model="model_int8",{quoted},source="http"}} 2' in lines
    assert 'edgeship_predictions_total{model="model_int8",label="Bag",source="watch"} 1' in lines
    assert 'edgeship_errors_total{kind="too_large"} 1' in lines
    buckets = [ln for ln in lines if ln.startswith("edgeship_predict_latency_seconds_bucket")]
    counts = [int(ln.rsplit(" ", 1)[1]) for ln in buckets]
    assert counts == sorted(counts) and counts[-1] == 3  # cumulative, +Inf holds all
    assert 'edgeship_predict_latency_seconds_bucket{model="model_int8",le="0.0005"} 1' in lines
    assert 'edgeship_predict_latency_seconds_bucket{model="model_int8",le="2.5"} 2' in lines
    assert 'edgeship_predict_latency_seconds_count{model="model_int8"} 3' in lines
    assert not any("temperature" in ln or "throttled" in ln for ln in lines)  # unknown here
    assert m.snapshot()["predictions"] == 3 and m.snapshot()["errors"] == 1


def test_board_gauges_when_known(tmp_path, monkeypatch):
    zone = tmp_path / "temp"
    zone.write_text("48312\n")  # what /sys/class/thermal/thermal_zone0/temp holds on a Pi
    assert cpu_temperature_c(zone) == 48.312
    assert cpu_temperature_c(tmp_path / "missing") is None
    # A `vcgencmd` on PATH printing what the Pi's does after an under-voltage (bits 0 and 16).
    tool = tmp_path / "bin" / "vcgencmd"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\n[ \"$1\" = get_throttled ] && echo throttled=0x50005\n")
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tool.parent}{os.pathsep}{os.environ['PATH']}")
    assert throttled_bits() == 0x50005
    text = ServeMetrics(["m"]).render(temperature_c=48.312, throttled=0x50005)
    assert "edgeship_cpu_temperature_celsius 48.312" in text.splitlines()
    assert "edgeship_throttled_bits 327685" in text.splitlines()
    assert "edgeship_throttled_now 1" in text.splitlines()

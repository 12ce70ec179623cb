"""`edge_runtime.serve.metrics`: the Prometheus text, and the board's gauges read as a Pi gives
them."""

from __future__ import annotations

import os

from edge_runtime.serve.metrics import ServeMetrics
from tests.support.serving import start_server


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


def test_stage_seconds_land_in_the_bucket_of_their_value():
    """A 2 ms decode is counted under le="0.0025", a 30 us read under le="0.0001"."""
    m = ServeMetrics(["m"])
    m.stages("m", {"read": 0.00003, "decode": 0.002})
    m.stages("m", {"read": 0.00003, "decode": 0.002})
    lines = m.render(temperature_c=None, throttled=None).splitlines()
    for stage, below, at in (("read", None, "0.0001"), ("decode", "0.001", "0.0025")):
        bucket = f'edgeship_stage_seconds_bucket{{model="m",stage="{stage}",le='
        if below is not None:
            assert f'{bucket}"{below}"}} 0' in lines
        assert f'{bucket}"{at}"}} 2' in lines
        assert f'edgeship_stage_seconds_count{{model="m",stage="{stage}"}} 2' in lines
    assert 'edgeship_stage_seconds_sum{model="m",stage="decode"} 0.004000' in lines


def test_board_gauges_from_a_pi_like_root(edge_models, tmp_path):
    """A real server whose doctor reads a Pi's sysfs (EDGESHIP_ROOT): /metrics has the gauges
    (a machine that exposes neither gets none: see the test above)."""
    root = tmp_path / "root"
    zone = root / "sys/class/thermal/thermal_zone0/temp"
    zone.parent.mkdir(parents=True)
    zone.write_text("48312\n")  # millidegrees, as a Pi's kernel writes it
    firmware = root / "sys/devices/platform/soc/soc:firmware/get_throttled"
    firmware.parent.mkdir(parents=True)
    firmware.write_text("50005\n")  # under-voltage now and since boot (bits 0, 2, 16, 18)
    served = start_server(
        [edge_models["cnn_uint8"]], tmp_path, env={**os.environ, "EDGESHIP_ROOT": str(root)}
    )
    try:
        lines = served.metrics().splitlines()
    finally:
        assert served.stop() == 0
    assert "edgeship_cpu_temperature_celsius 48.300" in lines
    assert "edgeship_throttled_bits 327685" in lines
    assert "edgeship_throttled_now 1" in lines

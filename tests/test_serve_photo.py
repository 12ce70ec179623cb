"""`serve` and photos: memory per request bounded by the model, not the photo (VmHWM of a real
server process), the decoded budget's 413, and the stage histograms in /metrics."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from tests.support.serving import start_server

GROWTH_LIMIT_MB = 64


def _png(img: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG", **kw)
    return buf.getvalue()


def palette_with_alpha(size=(6300, 6300)) -> bytes:
    """A 39.7 MP palette PNG with a transparent index: ~5 KB; converted whole it was RGBA."""
    img = Image.new("P", size, 0)
    img.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
    img.paste(1, (0, 0, size[0] // 2, size[1]))
    return _png(img, transparency=0)


def gray16(size) -> bytes:
    """A 16-bit grayscale PNG (I;16): its float64 copy was 8 bytes a pixel."""
    arr = np.zeros(size[::-1], np.uint16)
    arr[:, : size[0] // 3] = 50000
    return _png(Image.fromarray(arr))


def photo_jpeg(size=(4032, 3024)) -> bytes:
    """A 12 MP photo-like JPEG (smooth: a few MB, like a phone's)."""
    y, x = np.mgrid[0:96, 0:128].astype(np.float32)
    small = np.dstack([128 + 100 * np.sin(x / 9), 128 + 90 * np.cos(y / 7), x + y]).clip(0, 255)
    img = Image.fromarray(small.astype(np.uint8)).resize(size, Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def vm_hwm_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


@pytest.fixture(scope="module")
def photo_server(edge_models, tmp_path_factory):
    served = start_server(
        [edge_models["cnn_uint8"], edge_models["mlp_int8"], "--max-upload-mb", "12"],
        tmp_path_factory.mktemp("serve_photo"),
    )
    yield served
    assert served.stop() == 0, served.log.read_text()


def test_peak_memory_per_request_is_bounded_by_the_model_not_the_photo(photo_server):
    """Each accepted image raises the server's peak RSS by <= 64 MB, whatever its mode and bit
    depth; what cannot be shrunk cheaply is refused with 413 (one JSON line), not decoded."""
    small = _png(Image.new("RGB", (64, 64), (90, 120, 30)))
    for model in ("cnn_uint8", "mlp_int8"):  # warm both models and the decoders
        assert photo_server.predict(small, f"?model={model}")[0] == 200
    cases = [
        ("palette+alpha 6300x6300", palette_with_alpha(), 200),
        ("16-bit 4000x4000", gray16((4000, 4000)), 200),
        ("12 MP JPEG", photo_jpeg(), 200),
        ("16-bit 6300x6300", gray16((6300, 6300)), 413),  # 76 MiB decoded > 48 MiB
    ]
    baseline = vm_hwm_mb(photo_server.proc.pid)
    for model in ("cnn_uint8", "mlp_int8"):
        for name, data, want in cases:
            before = vm_hwm_mb(photo_server.proc.pid)
            status, head, body = photo_server.request(
                "POST", f"/v1/predict?model={model}", data, {"Content-Type": "image/png"}
            )
            assert status == want, (name, body)
            assert body.count(b"\n") <= 1 and json.loads(body)
            if want == 413:
                assert b"--max-decoded-mb" not in body and b"budget of 48 MiB" in body
            growth = vm_hwm_mb(photo_server.proc.pid) - before
            assert growth <= GROWTH_LIMIT_MB, f"{name} on {model}: +{growth:.0f} MB"
    # the peak only rises: this bounds every request, whichever came first
    growth = vm_hwm_mb(photo_server.proc.pid) - baseline
    assert growth <= GROWTH_LIMIT_MB, f"all requests together: +{growth:.0f} MB"


def stage_histogram(text: str, model: str, stage: str) -> tuple[list[float], list[int]]:
    """The `le` bounds and cumulative counts of one stage's histogram in /metrics."""
    found = re.findall(
        rf'^edgeship_stage_seconds_bucket{{model="{model}",stage="{stage}",le="([^"]+)"}} (\d+)$',
        text,
        re.M,
    )
    assert found and found[-1][0] == "+Inf", (stage, found)
    return [float(le) for le, _ in found], [int(n) for _, n in found]


def test_metrics_show_each_stage_per_model(photo_server):
    data = photo_jpeg((1600, 1200))
    for _ in range(3):
        assert photo_server.predict(data, "?model=mlp_int8", "image/jpeg")[0] == 200
    text = photo_server.metrics()
    counts = {}
    for stage in ("read", "decode", "preprocess", "invoke", "postprocess"):
        pattern = rf'^edgeship_stage_seconds_count{{model="mlp_int8",stage="{stage}"}} (\d+)$'
        found = re.search(pattern, text, re.M)
        assert found, stage
        counts[stage] = int(found.group(1))
        total = re.search(
            rf'^edgeship_stage_seconds_sum{{model="mlp_int8",stage="{stage}"}} (\S+)$', text, re.M
        )
        assert float(total.group(1)) > 0, stage
        # seconds in seconds' buckets: the mean lies between the first non-empty bucket's
        # lower edge and the last non-empty one's upper edge (a 2 ms decode counted as 2 s
        # would sit in le="2.5" with a mean of 0.002)
        bounds, cumulative = stage_histogram(text, "mlp_int8", stage)
        mean = float(total.group(1)) / counts[stage]
        filled = [i for i, n in enumerate(cumulative) if n > (cumulative[i - 1] if i else 0)]
        lower = bounds[filled[0] - 1] if filled[0] else 0.0
        assert lower < mean <= bounds[filled[-1]], (stage, mean, lower, bounds[filled[-1]])
    assert len(set(counts.values())) == 1 and counts["decode"] >= 3
    assert "# TYPE edgeship_stage_seconds histogram" in text


def test_full_decode_decodes_the_whole_photo(edge_models, tmp_path):
    """`serve --full-decode` decodes a JPEG in full: under the same decoded budget, a 3 MP
    photo (12 MiB as RGBX) is refused, where decoding to the model's size takes 0.2 MiB."""
    data = photo_jpeg((2048, 1536))
    for flags, want in ((["--full-decode"], 413), ([], 200)):
        served = start_server([edge_models["mlp_int8"], "--max-decoded-mb", "8", *flags], tmp_path)
        try:
            status, body = served.predict(data, "", "image/jpeg")
        finally:
            assert served.stop() == 0
        assert status == want, (flags, body)

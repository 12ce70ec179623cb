"""`python -m edge_runtime bench MODEL --image PHOTO`: where a photo's time goes, per stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from tests.support.procs import REPO

STAGES = ["read", "decode", "preprocess", "invoke", "postprocess", "total"]


def _run(args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=300,
    )


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    """A 3 MP photo-like JPEG, shown upright by its EXIF orientation."""
    y, x = np.mgrid[0:60, 0:80].astype(np.float32)
    small = np.dstack([128 + 100 * np.sin(x / 7), 128 + 90 * np.cos(y / 5), 3 * (x + y)])
    img = Image.fromarray(small.clip(0, 255).astype(np.uint8)).resize((2048, 1536))
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path_factory.mktemp("photo") / "photo.jpg"
    img.save(path, quality=90, exif=exif.tobytes())
    return path


def test_bench_image_json_reports_every_stage_and_they_add_up(edge_models, no_tf_env, photo):
    model = edge_models["cnn_uint8"]
    proc = _run(
        ["bench", model, "--image", photo, "--runs", "15", "--warmup", "1", "--json"], env=no_tf_env
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert list(data["stages_us"]) == STAGES and data["runs"] == 15
    assert data["image_size"] == [2048, 1536]
    for stage, row in data["stages_us"].items():
        assert 0 < row["p50"] <= row["p99"], stage
    stages = sum(data["stages_us"][s]["mean"] for s in STAGES[:-1])
    total = data["stages_us"]["total"]["mean"]
    # the total is timed apart, around the whole call: the stages fill it, within timer noise
    assert stages <= total and total - stages < max(0.05 * total, 200.0), (stages, total)
    want = json.loads(_run(["predict", model, photo, "--json"]).stdout)["label"]
    assert data["label"] == want


def test_bench_image_text_and_errors(edge_models, photo, tmp_path):
    model = edge_models["mlp_int8"]
    proc = _run(["bench", model, "--image", photo, "--runs", "3", "--warmup", "0"])
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "(2048x1536)" in lines[0]
    assert [line.split()[0] for line in lines[2:]] == STAGES
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a photo")
    for args, needle in (
        ([bad], "not an image Pillow can read"),
        ([photo, "--threads", "1,2"], "one thread count"),
    ):
        proc = _run(["bench", model, "--image", *args, "--runs", "2"])
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.count("\n") == 1 and needle in proc.stderr, proc.stderr


DELAY_S = 0.05  # what a stage is made slower by, on purpose


def _slowed(fn):
    def slow(*args, **kwargs):
        time.sleep(DELAY_S)
        return fn(*args, **kwargs)

    return slow


@pytest.mark.parametrize(
    ("stage", "method"),
    [("preprocess", "_image"), ("invoke", "_invoke"), ("postprocess", "_probabilities")],
)
def test_a_stage_made_slow_shows_under_its_own_name(edge_models, stage, method):
    """The classifier's step behind one stage sleeps DELAY_S: that stage's time holds it."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.image.stages import classify_photo

    clf = EdgeClassifier.load(edge_models["mlp_int8"])
    setattr(clf, method, _slowed(getattr(clf, method)))
    _, seconds = classify_photo(clf, _jpeg((64, 48)))
    assert seconds[stage] >= DELAY_S, seconds


class _SlowPath:
    """A photo's path that takes DELAY_S to resolve each time it is opened (as on a slow
    network share)."""

    def __init__(self, path) -> None:
        self.path = path

    def __fspath__(self) -> str:
        time.sleep(DELAY_S)
        return os.fspath(self.path)


def test_a_slow_read_shows_under_read_in_bench_image(edge_models, tmp_path):
    """`bench --image` on a photo slow to open: the read stage holds the wait, and the stages
    still add up to the total."""
    from edge_runtime.image.stages import photo_bench

    photo = tmp_path / "photo.jpg"
    photo.write_bytes(_jpeg((64, 48)))
    result = photo_bench(edge_models["mlp_int8"], _SlowPath(photo), runs=3, warmup=0)
    stages = result.stages_us
    assert stages["read"]["p50"] >= DELAY_S * 1e6, stages
    assert stages["total"]["mean"] >= sum(stages[s]["mean"] for s in STAGES[:-1]), stages
    assert result.image_size == [64, 48]


def _jpeg(size) -> bytes:
    import io

    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    img = Image.fromarray(np.dstack([x * 4 % 256, y * 5 % 256, (x + y) % 256]).astype(np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()

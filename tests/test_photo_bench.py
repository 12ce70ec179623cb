"""`python -m edge_runtime bench MODEL --image PHOTO`: where a photo's time goes, per stage."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tests.support.procs import REPO

STAGES = ["read", "decode", "preprocess", "invoke", "postprocess", "total"]


def _run(args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *map(str, args)],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
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
    proc = _run(["bench", model, "--image", photo, "--runs", "15", "--warmup", "1", "--json"],
                env=no_tf_env)
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

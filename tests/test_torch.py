"""PyTorch models through `edgeship convert` (litert-torch), bench and deploy (issue 24).

Real torch, real litert-torch, the real quantization engine: a small CNN trained in the
session (`torch_run`, converted without TensorFlow), a MobileNetV3-small-style network at
224x224x3 with ImageNet's mean/std, the `FILE.py:FUNCTION` form, and each refused form.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.support.procs import REPO

pytest.importorskip("torch")
pytest.importorskip("litert_torch")

runner = CliRunner()
MODES = ("float32", "dynamic", "float16", "int8", "int16x8")


def cli(*args):
    from edgeship.cli import app

    return runner.invoke(app, [str(a) for a in args])


def run_without_tf(env, *args, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "-m", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def test_convert_bench_deploy_without_tensorflow(torch_run, tf_not_installed_env, tmp_path):
    """Every mode, checked against PyTorch's own outputs; bench's "torch" row; a bundle; all
    in processes where TensorFlow and Keras are not installed."""
    from edge_runtime.metadata.block import read_metadata

    blocked = subprocess.run(
        [sys.executable, "-c", "import tensorflow"],
        capture_output=True,
        text=True,
        env=tf_not_installed_env,
    )
    assert blocked.returncode == 1 and "No module named 'tensorflow'" in blocked.stderr
    run = torch_run["run"]
    sha = hashlib.sha256(torch_run["pt2"].read_bytes()).hexdigest()
    checks = {}
    for mode in MODES:
        meta = read_metadata(run / f"model_{mode}.tflite", sidecar=False)
        assert meta["source_model"]["framework"] == "torch"
        assert meta["source_model"]["sha256"] == sha and meta["source_model"]["function"] is None
        assert meta["input"]["scale"] == pytest.approx(1 / 255) and meta["input"]["shape"] == [
            28,
            28,
            1,
        ]
        checks[mode] = meta["quantization"]["check"]
    print({m: (c["agreement"], c["max_abs_diff"]) for m, c in checks.items()})
    assert checks["float32"]["agreement"] == 1.0 and checks["float32"]["max_abs_diff"] < 1e-4
    assert min(checks[m]["agreement"] for m in ("dynamic", "float16")) >= 0.98
    assert min(checks[m]["agreement"] for m in ("int8", "int16x8")) >= 0.9

    bench = tmp_path / "bench"
    run_without_tf(
        tf_not_installed_env,
        "edgeship",
        "bench",
        run,
        "--test-data",
        torch_run["test_npz"],
        "--runs",
        "10",
        "--warmup",
        "2",
        "--batch",
        "8",
        "--threads",
        "1",
        "--no-plots",
        "--out",
        bench,
    )
    report = json.loads((bench / "report.json").read_text())
    rows = {m["name"]: m for m in report["models"]}
    assert list(rows) == ["torch", *MODES], report["failed"]
    torch_row = rows["torch"]
    assert torch_row["format"] == "torch" and torch_row["agreement"] == 1.0
    assert torch_row["latency_us"]["p50"] > 0 and torch_row["peak_rss_mb"] > 0
    assert torch_row["path"] == str(torch_run["pt2"])
    assert rows["float32"]["agreement"] == 1.0
    assert rows["float32"]["accuracy"] == torch_row["accuracy"] > 0.5

    bundle = tmp_path / "torch-bundle.tar.gz"
    run_without_tf(
        tf_not_installed_env,
        "edgeship",
        "deploy",
        "bundle",
        run,
        "--models",
        "int8,float32",
        "--out",
        bundle,
    )
    assert bundle.stat().st_size > 0


def test_mobilenet_style_with_imagenet_normalization(tmp_path):
    """224x224x3 RGB with --input-mean/--input-std: float32 and int8 against PyTorch on 200
    generated images the calibration never saw, through edge_runtime from uint8 pixels."""
    from edge_runtime import EdgeClassifier
    from edge_runtime.metadata.block import read_metadata
    from edgeship.convert.torch_source import load_torch_module, torch_probabilities
    from tests.support.torch_models import (
        IMAGENET_MEAN,
        IMAGENET_STD,
        generated_images,
        mobilenet_v3_style,
        save_pt2,
    )

    pt2 = save_pt2(mobilenet_v3_style(), (3, 224, 224), tmp_path / "mobilenet.pt2")
    np.save(tmp_path / "calib.npy", generated_images(50, 224, seed=1))
    result = cli(
        "convert",
        pt2,
        "--quantize",
        "float32,int8",
        "--calibration-data",
        tmp_path / "calib.npy",
        "--calibration-samples",
        "50",
        "--verify-samples",
        "50",
        "--input-mean",
        ",".join(map(str, IMAGENET_MEAN)),
        "--input-std",
        ",".join(map(str, IMAGENET_STD)),
        "--out",
        tmp_path / "run",
    )
    assert result.exit_code == 0, result.output
    images = generated_images(200, 224, seed=2)
    module, shape = load_torch_module(pt2)
    assert shape == (224, 224, 3)
    mean, std = np.asarray(IMAGENET_MEAN, np.float32), np.asarray(IMAGENET_STD, np.float32)
    reference = torch_probabilities(module, (images / np.float32(255) - mean) / std)
    agreement = {}
    for mode in ("float32", "int8"):
        path = tmp_path / "run" / f"model_{mode}.tflite"
        meta = read_metadata(path, sidecar=False)
        assert meta["input"]["mean"] == pytest.approx(list(IMAGENET_MEAN))
        assert meta["input"]["std"] == pytest.approx(list(IMAGENET_STD))
        clf = EdgeClassifier.load(path)
        # the standard metadata MediaPipe reads: NormalizationOptions on 0-255 pixels
        assert clf.standard.mean == pytest.approx([255 * m for m in IMAGENET_MEAN], rel=1e-5)
        assert clf.standard.std == pytest.approx([255 * s for s in IMAGENET_STD], rel=1e-5)
        assert clf.scaling_source == "edgeship metadata"
        probs = clf.predict_proba(images)
        agreement[mode] = float(np.mean(probs.argmax(1) == reference.argmax(1)))
        if mode == "float32":
            assert np.abs(probs - reference).max() < 1e-4
    print(f"agreement with PyTorch on 200 generated images: {agreement}")
    # Random weights leave small margins between the 10 logits: int8 flips 16-20 % of them
    # (84 % with 100 calibration images in studies.torch_speed, 80 % with 50 here).
    assert agreement["float32"] == 1.0 and agreement["int8"] >= 0.75


NET_PY = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.conv(x)))
        return self.fc(y.mean((2, 3)))


def make():
    model = Net()
    model.load_state_dict(torch.load(__file__.replace("net.py", "weights.pt")))
    return model.eval(), (torch.zeros(1, 3, 16, 12),)


class Branchy(nn.Module):
    def forward(self, x):
        if x.mean() > 0.5:
            return x.flatten(1)[:, :5]
        return -x.flatten(1)[:, :5]


def branchy():
    return Branchy(), (torch.zeros(1, 3, 16, 12),)


class Svd(nn.Module):
    def forward(self, x):
        return torch.linalg.svdvals(x[:, 0, :5, :5]) * 1.0


def svd():
    return Svd(), (torch.zeros(1, 3, 16, 12),)
"""


@pytest.fixture(scope="module")
def net_py(tmp_path_factory) -> Path:
    """net.py (an architecture, a factory that loads a state_dict, two unconvertible models)
    beside weights.pt (the state_dict) and ts.pt (TorchScript)."""
    import torch

    root = tmp_path_factory.mktemp("net_py")
    (root / "net.py").write_text(NET_PY)
    namespace: dict = {}
    exec(compile(NET_PY, str(root / "net.py"), "exec"), namespace)
    torch.manual_seed(3)
    model = namespace["Net"]().eval()
    torch.save(model.state_dict(), root / "weights.pt")
    torch.jit.save(torch.jit.trace(model, torch.zeros(1, 3, 16, 12)), root / "ts.pt")
    return root / "net.py"


def test_factory_form_with_a_state_dict(net_py, tmp_path):
    from edge_runtime import EdgeClassifier
    from edge_runtime.metadata.block import read_metadata

    result = cli(
        "convert", f"{net_py}:make", "--quantize", "float32,dynamic", "--out", tmp_path / "run"
    )
    assert result.exit_code == 0, result.output
    path = tmp_path / "run/model_float32.tflite"
    meta = read_metadata(path, sidecar=False)
    assert meta["source_model"]["function"] == "make"
    assert meta["source_model"]["path"] == str(net_py.resolve())
    assert meta["quantization"]["check"]["agreement"] == 1.0
    assert EdgeClassifier.load(path).input_shape == (16, 12, 3)
    assert meta["source_model"]["logits"] is True  # a Linear ends it: the runtime's softmax


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ("weights.pt", "holds a state_dict"),
        ("ts.pt", "holds TorchScript"),
        ("net.py", "Name the function"),
    ],
)
def test_weights_and_torchscript_are_refused_with_the_export_snippet(net_py, tmp_path, spec, says):
    out = tmp_path / "run"
    result = cli("convert", net_py.parent / spec, "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and says in lines[0], result.stderr
    assert "FILE.pt2" in lines[0] and "FILE.py:FUNCTION" in lines[0]
    assert [ln.strip() for ln in lines[1:]] == [
        "model.eval(); example = (torch.zeros(1, 3, H, W),)",
        "program = torch.export.export(model, example)",
        "torch.export.save(program, 'model.pt2')",
    ]
    assert sum(ln.startswith("error:") for ln in lines) == 1 and "Traceback" not in result.output
    assert not out.exists()


@pytest.mark.parametrize(
    ("func", "says"),
    [
        ("branchy", "torch.export cannot trace the model"),
        ("svd", "litert-torch cannot convert the model"),
    ],
)
def test_untraceable_or_unconvertible_models_fail_in_one_line(net_py, tmp_path, func, says):
    out = tmp_path / "run"
    result = cli("convert", f"{net_py}:{func}", "--quantize", "float32", "--out", out)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {says}"), result.stderr
    # torch's or the converter's own reason, not only ours
    reason = (
        "Could not guard on data-dependent expression"
        if func == "branchy"
        else "Lowering not found: aten._linalg_svd"
    )
    assert reason in lines[0], lines[0]
    assert not out.exists()


def test_deploy_mobile_names_images_as_edge_runtime_in_mediapipe(torch_run, tmp_path):
    """The phone graph (RGB pixels in, the scaling and a softmax inside) of a PyTorch run:
    MediaPipe's ImageClassifier names the test images as edge_runtime does, and the phone
    model agrees with the run's own float32 model."""
    mp = pytest.importorskip("mediapipe")
    from PIL import Image

    from edge_runtime import EdgeClassifier
    from edgeship.deploy.mobile.models import as_rgb, write_mobile_models
    from edgeship.train.datasets import FASHION_MNIST_CLASSES
    from tests.test_mediapipe import classify, edge_predict

    [phone] = write_mobile_models(torch_run["run"], tmp_path / "mobile", ("float32",))
    x = np.load(torch_run["test_npz"])["x"][:100]
    pngs = []
    for i, rgb in enumerate(as_rgb(x, light=False)):
        pngs.append(tmp_path / f"{i}.png")
        Image.fromarray(rgb).save(pngs[-1])
    theirs, ours = classify(mp, phone, pngs), edge_predict(phone, pngs)
    assert theirs == ours
    assert all(name == FASHION_MNIST_CLASSES[i] for name, i in theirs)
    source = EdgeClassifier.load(torch_run["run"] / "model_float32.tflite").predict_proba(x)
    assert [i for _, i in ours] == list(source.argmax(1))
    assert phone.parent.joinpath("README.txt").is_file()

"""Shared pytest fixtures. Shared file: add fixtures, don't rewrite others'."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from tests.support.procs import REPO

# CI (`.ci/run`) sets this: a test that would skip (no sshd, no qemu-user, no dataset, no
# tmpfs) fails instead, so a green run means every test ran.
REQUIRE_ALL = os.environ.get("EDGESHIP_REQUIRE_ALL") == "1"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"skipped, but EDGESHIP_REQUIRE_ALL=1 requires every test: {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector):
    """A whole module skipped at import (`pytest.skip(..., allow_module_level=True)`,
    `pytest.importorskip`) fails under EDGESHIP_REQUIRE_ALL=1 too: a collection error."""
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_ALL and report.skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = (
            f"{collector.nodeid} skipped at import, but EDGESHIP_REQUIRE_ALL=1 requires every "
            f"test: {reason}"
        )


# --- a machine with only `edgeship[edge]`: importing tensorflow or keras fails -------------

_BLOCKER = '''
import sys

class _NoTensorFlow:
    """Make `import tensorflow` / `import keras` fail, as on the device."""

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras", "tf_keras", "tensorflow_core"):
            raise ModuleNotFoundError(f"blocked for the test: {name}", name=name)
        return None

sys.meta_path.insert(0, _NoTensorFlow())
'''


def _site_env(tmp_path_factory, name: str, sitecustomize: str) -> dict[str, str]:
    """os.environ with a fresh folder holding `sitecustomize` first on PYTHONPATH, then REPO."""
    site = tmp_path_factory.mktemp(name)
    (site / "sitecustomize.py").write_text(sitecustomize)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(REPO)])
    return env


@pytest.fixture(scope="session")
def no_tf_env(tmp_path_factory):
    """Environment for a subprocess in which importing tensorflow or keras raises."""
    return _site_env(tmp_path_factory, "no_tf_site", _BLOCKER)


# --- edge_runtime: tiny real .tflite models (session scope, built once) -------------------

EDGE_CLASS_NAMES = [f"class_{i}" for i in range(10)]


def _edge_metadata(shape, color_mode, quant):
    return {
        "schema_version": 1,
        "model": "custom",
        "class_names": EDGE_CLASS_NAMES,
        "input": {
            "shape": list(shape),
            "dtype": "float32",
            "scale": 1.0 / 255.0,
            "offset": 0.0,
            "color_mode": color_mode,
            "background": "dark",
        },
        "quantization": quant,
    }


def _synthetic(n, shape, seed):
    """Images whose class is their mean brightness decile: learnable in one short epoch."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, size=n)
    base = (y[:, None, None, None] * 25 + 10).astype(np.float32)
    x = np.clip(base + rng.normal(0, 20, size=(n, *shape)), 0, 255).astype(np.uint8)
    return x, y


def _convert(model, export_dir: Path, shape, mode: str, calib: np.ndarray) -> bytes:
    import tensorflow as tf

    model.export(
        str(export_dir),
        verbose=False,
        input_signature=[tf.TensorSpec([None, *shape], tf.float32)],
    )
    conv = tf.lite.TFLiteConverter.from_saved_model(str(export_dir))
    if mode != "float32":
        io_type = {"int8": tf.int8, "uint8": tf.uint8}[mode]
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([c[None]] for c in calib)
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = io_type
        conv.inference_output_type = io_type
    return conv.convert()


@pytest.fixture(scope="session")
def edge_models(tmp_path_factory) -> dict[str, Path]:
    """Tiny converted models: {"mlp_float32", "mlp_int8", "cnn_float32", "cnn_uint8"} -> path.

    The MLP takes 28x28x1 (Fashion-MNIST-like), the CNN 32x32x3. MLP files carry the
    `edgeship` metadata (10 class names, scale 1/255, dark background); CNN files carry none.
    `int8`/`uint8` models have fully quantized input and output tensors.
    """
    import keras

    from edge_runtime.files import atomic_write_bytes
    from edge_runtime.metadata.block import embed_metadata

    out = tmp_path_factory.mktemp("edge_models")
    keras.utils.set_random_seed(0)
    specs = {
        "mlp": (
            (28, 28, 1),
            "grayscale",
            lambda: [
                keras.layers.Flatten(),
                keras.layers.Dense(16, activation="relu"),
                keras.layers.Dense(10, activation="softmax"),
            ],
        ),
        "cnn": (
            (32, 32, 3),
            "rgb",
            lambda: [
                keras.layers.Conv2D(4, 3, strides=2, activation="relu"),
                keras.layers.GlobalAveragePooling2D(),
                keras.layers.Dense(10, activation="softmax"),
            ],
        ),
    }
    paths: dict[str, Path] = {}
    for arch, (shape, color_mode, layers) in specs.items():
        x, y = _synthetic(300, shape, seed=1)
        xf = x.astype(np.float32) / 255.0
        model = keras.Sequential([keras.Input(shape), *layers()])
        # Adam(0.01) killed every ReLU of the MLP: one answer for any image, so a test of its
        # predictions could not tell one input (or one preprocessing) from another.
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(xf, y, epochs=3, batch_size=32, verbose=0)
        spread = np.ptp(model.predict(xf[:50], verbose=0), axis=0).max()
        assert spread > 0.01, f"the {arch} fixture model answers the same for every image"
        for mode in ("float32", "int8" if arch == "mlp" else "uint8"):
            data = _convert(model, out / f"{arch}_{mode}_export", shape, mode, xf[:100])
            if arch == "mlp":
                quant = {"mode": mode, "int8_io": mode != "float32"}
                data = embed_metadata(data, _edge_metadata(shape, color_mode, quant))
            paths[f"{arch}_{mode}"] = atomic_write_bytes(out / f"{arch}_{mode}.tflite", data)
    return paths


# --- foreign environments: emulated Pi userlands, tflite-runtime venv (tests/support) ------
# Built once and cached under ${EDGESHIP_CACHE:-~/.cache/edgeship}; prepare them ahead with
# `python -m tests.support.pi build TARGET`, `python -m tests.support.arm64 build` and
# `python -m tests.support.tflite_env build`.
# A host that lacks the tool (no qemu-user, no apt, no wheel for this platform) skips;
# a failed download or build fails the test, loudly.


@pytest.fixture(scope="session")
def arm64_python():
    """The emulated Raspberry Pi OS Bookworm CPython 3.11 (arm64, qemu-user 10) with litert 2.3."""
    from tests.support import EnvironmentUnavailable
    from tests.support.arm64 import ensure_arm64_python

    try:
        return ensure_arm64_python()
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated arm64 Python unavailable: {exc}")


@pytest.fixture(scope="session")
def tflite_env():
    """A venv with tflite-runtime 2.14 and numpy<2; edgeship goes on its PYTHONPATH."""
    from tests.support import EnvironmentUnavailable
    from tests.support.tflite_env import ensure_tflite_env

    try:
        return ensure_tflite_env()
    except EnvironmentUnavailable as exc:
        pytest.skip(f"tflite-runtime venv unavailable: {exc}")


# --- deploy: a run folder with the tiny MLP as model_int8 / model_float32, and its bundle ---


@pytest.fixture(scope="session")
def deploy_run(edge_models, tmp_path_factory) -> Path:
    """A run folder holding `model_int8.tflite` and `model_float32.tflite` (the tiny MLP)."""
    import shutil

    run = tmp_path_factory.mktemp("deploy_run")
    for mode in ("int8", "float32"):
        shutil.copyfile(edge_models[f"mlp_{mode}"], run / f"model_{mode}.tflite")
    return run


@pytest.fixture(scope="session")
def deploy_bundle(deploy_run, tmp_path_factory) -> Path:
    """`edgeship deploy bundle` of `deploy_run` (no wheels): tiny-bundle.tar.gz."""
    from edgeship.deploy.pi.bundle import build_bundle

    return build_bundle(deploy_run, tmp_path_factory.mktemp("bundle") / "tiny-bundle.tar.gz").path


# --- Fashion-MNIST runs of both architectures (deploy mobile, MediaPipe, peers) ------------


@pytest.fixture(scope="session")
def fashion_runs(tmp_path_factory) -> dict[str, Path]:
    """{"mlp", "cnn"} -> a run folder: trained 1 epoch on 2000 Fashion-MNIST images, converted
    to `model_int8.tflite` and `model_float32.tflite` (200 calibration, 200 check samples)."""
    from edgeship.convert.run import convert_run
    from edgeship.train.datasets import load_dataset
    from edgeship.train.errors import DatasetError
    from edgeship.train.training import TrainConfig, train

    try:
        data = load_dataset("fashion-mnist")
    except DatasetError as err:  # an offline machine without the files; any other error fails
        pytest.skip(f"Fashion-MNIST not available: {err}")
    root = tmp_path_factory.mktemp("fashion_runs")
    runs = {}
    for arch in ("mlp", "cnn"):
        run = root / arch
        train(TrainConfig(model=arch, epochs=1, limit=2000, seed=1), run, data=data)
        convert_run(run, modes="int8,float32", calibration_samples=200, verify_samples=200)
        runs[arch] = run
    return runs


@pytest.fixture(scope="session")
def mobile_models(fashion_runs, tmp_path_factory) -> dict[str, Path]:
    """`deploy mobile` of `fashion_runs`: {"mlp_int8", "mlp_float32", "cnn_int8", ...} -> path."""
    from edgeship.deploy.mobile.models import write_mobile_models

    out = tmp_path_factory.mktemp("mobile")
    paths = {}
    for arch, run in fashion_runs.items():
        for path in write_mobile_models(run, out / arch, ("int8", "float32")):
            paths[f"{arch}_{path.stem.removeprefix('model_')}"] = path
    return paths


# --- PyTorch (issue 24): a machine without TensorFlow, and one trained PyTorch run ---------

# TensorFlow and Keras absent as on a machine that never installed them: `import` fails and
# `importlib.util.find_spec` answers None (torch's dynamo asks it; a finder that raises instead,
# as _BLOCKER's does, breaks `import torch._dynamo`).
_NOT_INSTALLED = """
import importlib.machinery
import sys

_BLOCKED = ("tensorflow", "keras", "tf_keras", "tensorflow_core")
_find = importlib.machinery.PathFinder.find_spec.__func__


def _find_spec(cls, name, path=None, target=None):
    if name.split(".")[0] in _BLOCKED:
        return None
    return _find(cls, name, path, target)


importlib.machinery.PathFinder.find_spec = classmethod(_find_spec)
"""


@pytest.fixture(scope="session")
def tf_not_installed_env(tmp_path_factory):
    """Environment for a subprocess in which TensorFlow and Keras look not installed."""
    return _site_env(tmp_path_factory, "tf_not_installed_site", _NOT_INSTALLED)


@pytest.fixture(scope="session")
def torch_run(tmp_path_factory, tf_not_installed_env) -> dict[str, Path]:
    """A small CNN (BatchNorm, a residual add) trained for seconds on 1,000 Fashion-MNIST
    images, saved as `cnn.pt2` (dynamic batch), and `edgeship convert` of it into every mode
    (200 calibration/check images from `calib.npy`) in a subprocess without TensorFlow.
    {"root", "pt2", "run", "test_npz", "calib"} -> path; "convert_stdout" -> the table."""
    import subprocess
    import sys

    pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgeship.train.datasets import FASHION_MNIST_CLASSES, load_dataset
    from edgeship.train.errors import DatasetError
    from tests.support.torch_models import save_pt2, train_small_cnn

    try:
        data = load_dataset("fashion-mnist")
    except DatasetError as err:
        pytest.skip(f"Fashion-MNIST not available: {err}")
    root = tmp_path_factory.mktemp("torch_run")
    model = train_small_cnn(data.x_train[:1000], data.y_train[:1000], epochs=2)
    pt2 = save_pt2(model, (1, 28, 28), root / "cnn.pt2")
    np.save(root / "calib.npy", data.x_train[2000:2200])
    np.savez(root / "test.npz", x=data.x_test[:300], y=data.y_test[:300])
    run = root / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgeship",
            "convert",
            str(pt2),
            "--out",
            str(run),
            "--calibration-data",
            str(root / "calib.npy"),
            "--calibration-samples",
            "200",
            "--verify-samples",
            "200",
            "--input-scale",
            str(1 / 255),
            "--class-names",
            ",".join(FASHION_MNIST_CLASSES),
        ],
        capture_output=True,
        text=True,
        env=tf_not_installed_env,
        cwd=REPO,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {
        "root": root,
        "pt2": pt2,
        "run": run,
        "test_npz": root / "test.npz",
        "calib": root / "calib.npy",
        "convert_stdout": proc.stdout,
    }


# --- ai-edge-quantizer models (issue 25): the wide collapsing model, every mode by recipe ---


@pytest.fixture(scope="session")
def wide_collapsing(tmp_path_factory):
    """tests.support.collapsing's model with 256-unit layers (its weights outweigh the
    flatbuffer's own bytes): a `CollapsingModels`."""
    from tests.support.collapsing import build

    return build(tmp_path_factory.mktemp("wide"), widths=(256, 256))


@pytest.fixture(scope="session")
def quantizer_models(wide_collapsing, tmp_path_factory) -> dict[str, Path]:
    """{"float32", "dynamic", "float16", "int8", "int16x8"} -> `--engine quantizer` models
    (input in [0, 1], `wide_collapsing.x`): int8 is the collapsing model rescued by the
    default hybrid `--fallback` (agreement 0.98), the others the healthy model, plain."""
    from edgeship.convert import MODES, convert_model

    out = tmp_path_factory.mktemp("quantizer_models")
    common = dict(engine="quantizer", calibration_data=wide_collapsing.calibration,
                  verify_samples=300)  # fmt: skip
    plain = convert_model(
        wide_collapsing.healthy,
        out / "plain",
        modes=[m for m in MODES if m != "int8"],
        **common,
    )
    rescued = convert_model(
        wide_collapsing.collapsing, out / "rescued", modes="int8", fallback=True,
        min_agreement=0.98, **common,
    )  # fmt: skip
    for report in (plain, rescued):
        report.raise_for_failures()
    return {r.mode: r.path for r in (*plain.results, *rescued.results)}

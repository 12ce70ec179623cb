"""Helpers the cross-environment tests share: test images, raw outputs, predict JSON lines."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support.procs import REPO

RAW_INVOKE = Path(__file__).with_name("raw_invoke.py")


def write_images(
    folder: Path, shape: tuple[int, int, int], count: int = 4, seed: int = 7
) -> list[Path]:
    """Write `count` PNGs of `shape` (H, W, C; C 1 or 3): one per brightness level, noisy."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        level = 10 + 25 * ((3 * i) % 10)
        pixels = np.clip(level + rng.normal(0, 20, size=shape), 0, 255).astype(np.uint8)
        image = Image.fromarray(pixels[..., 0] if shape[2] == 1 else pixels)
        path = folder / f"img_{i}.png"
        image.save(path)
        paths.append(path)
    return paths


def model_inputs(model: Path, count: int = 4, seed: int = 3) -> np.ndarray:
    """Random inputs in the model's own input dtype and shape (batch of `count`)."""
    from ai_edge_litert.interpreter import Interpreter

    (detail,) = Interpreter(model_path=str(model)).get_input_details()
    shape = (count, *detail["shape"][1:])
    rng = np.random.default_rng(seed)
    if np.issubdtype(detail["dtype"], np.integer):
        info = np.iinfo(detail["dtype"])
        return rng.integers(info.min, info.max + 1, size=shape).astype(detail["dtype"])
    return rng.random(shape, dtype=np.float32)


def raw_outputs(proc: subprocess.CompletedProcess) -> np.ndarray:
    """The outputs `raw_invoke.py` printed, after checking it succeeded."""
    assert proc.returncode == 0, f"raw_invoke failed (exit {proc.returncode}):\n{proc.stderr}"
    return np.asarray(json.loads(proc.stdout.strip().splitlines()[-1])["outputs"])


def desktop_raw(model: Path, inputs: Path) -> np.ndarray:
    """Outputs of the desktop's ai-edge-litert on the same script."""
    argv = [sys.executable, str(RAW_INVOKE), "ai_edge_litert", str(model), str(inputs)]
    return raw_outputs(subprocess.run(argv, capture_output=True, text=True, check=False))


def predict_lines(proc: subprocess.CompletedProcess) -> list[dict]:
    """The JSON objects `python -m edge_runtime predict --json` printed, one per image."""
    assert proc.returncode == 0, (
        f"edge_runtime predict failed (exit {proc.returncode}):\n{proc.stderr}"
    )
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def desktop_predict(args: list[str], cwd: Path) -> list[dict]:
    """`python -m edge_runtime ARGS` with the desktop venv's interpreter."""
    argv = [sys.executable, "-m", "edge_runtime", *args]
    return predict_lines(subprocess.run(argv, capture_output=True, text=True, cwd=cwd, check=False))


def assert_same_predictions(got: list[dict], want: list[dict], atol: float = 1e-6) -> None:
    """Same images, classes and labels; confidences (top-1 and top-k) within `atol`.

    The CLI rounds confidences to 6 decimals, so two values 1e-7 apart can print 1e-6 apart:
    the tolerance allows that one unit in the last printed place, no more.
    """
    atol += 1e-12
    assert [g["image"] for g in got] == [w["image"] for w in want]
    for g, w in zip(got, want, strict=True):
        where = f"image {w['image']}"
        assert (g["index"], g["label"]) == (w["index"], w["label"]), where
        assert abs(g["confidence"] - w["confidence"]) <= atol, where
        assert [k["index"] for k in g["top_k"]] == [k["index"] for k in w["top_k"]], where
        for gk, wk in zip(g["top_k"], w["top_k"], strict=True):
            assert abs(gk["confidence"] - wk["confidence"]) <= atol, where


def assert_raw_outputs_match_desktop(
    env, model: Path, backend: str, tmp_path: Path, exact: bool
) -> None:
    """`raw_invoke.py BACKEND` in `env` (arm64 / tflite venv) gives the desktop's raw outputs.

    Four seeded inputs, ten classes; `exact` for integer models, else within 1e-6.
    """
    inputs = tmp_path / "inputs.npy"
    np.save(inputs, model_inputs(model))
    got = raw_outputs(env.run([RAW_INVOKE, backend, model, inputs]))
    desktop = desktop_raw(model, inputs)
    assert got.shape == desktop.shape == (4, 10)
    if exact:
        np.testing.assert_array_equal(got, desktop)
    else:
        np.testing.assert_allclose(got, desktop, rtol=0, atol=1e-6)


def assert_predict_matches_desktop(
    env,
    model: Path,
    shape: tuple[int, int, int],
    tmp_path: Path,
    env_args: tuple[str, ...] = (),
    desktop_args: tuple[str, ...] = (),
    atol: float = 1e-6,
) -> None:
    """`python -m edge_runtime predict --json` in `env` answers as the desktop does (4 images):
    the same classes, confidences within `atol`."""
    images = write_images(tmp_path / "images", shape, count=4)
    args = ["predict", "--json", "--top-k", "3", str(model), *map(str, images)]
    proc = env.run(["-m", "edge_runtime", *args, *env_args], cwd=tmp_path, extra_paths=[REPO])
    got = predict_lines(proc)
    want = desktop_predict([*args, *desktop_args], cwd=tmp_path)
    assert len(got) == len(images)
    assert_same_predictions(got, want, atol)

"""`python -m edge_runtime` and `edgeship predict`: output formats, the no-TensorFlow promise,
and bad input giving exit 2 with one line."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_runtime.cli import main as edge_main
from tests.support.procs import one_error_line

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    d = tmp_path_factory.mktemp("pictures")
    rng = np.random.default_rng(11)
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(d / "a.png")
    Image.fromarray(rng.integers(0, 256, (64, 40, 3), dtype=np.uint8)).save(d / "b.jpg")
    Image.new("RGBA", (30, 30), (255, 255, 255, 0)).save(d / "c.png")
    return [d / "a.png", d / "b.jpg", d / "c.png"]


def _run(args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=120,
    )


def test_blocker_blocks(no_tf_env):
    proc = subprocess.run(
        [sys.executable, "-c", "import tensorflow"], capture_output=True, text=True, env=no_tf_env
    )
    assert proc.returncode != 0 and "blocked for the test" in proc.stderr


def test_predict_json_and_info_without_tensorflow(edge_models, pictures, no_tf_env):
    model = edge_models["mlp_int8"]
    proc = _run(["predict", model, *pictures, "--json", "--top-k", "2"], env=no_tf_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 3
    records = [json.loads(line) for line in lines]
    from edge_runtime.classifier import EdgeClassifier

    # without TensorFlow: the same answers as the library gives in this process
    want = EdgeClassifier.load(model).predict(pictures)
    for record, picture, w in zip(records, pictures, want, strict=True):
        assert record["index"] == w.index
        assert record["confidence"] == pytest.approx(w.confidence, abs=1e-4)
        assert set(record) == {"image", "index", "label", "confidence", "top_k"}
        assert record["image"] == str(picture)
        assert record["label"] == f"class_{record['index']}"
        assert len(record["top_k"]) == 2
        assert set(record["top_k"][0]) == {"index", "label", "confidence"}
        assert record["top_k"][0]["index"] == record["index"]
        assert 0.0 <= record["confidence"] <= 1.0

    proc = _run(["info", model, "--json"], env=no_tf_env)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["backend"] == "ai_edge_litert"
    assert info["input"]["dtype"] == "int8" and info["input"]["quantization"]["scale"] > 0
    assert info["metadata"]["class_names"][0] == "class_0"

    proc = _run(["info", model], env=no_tf_env)
    assert proc.returncode == 0 and "backend:  ai_edge_litert" in proc.stdout


def test_predict_matches_api(edge_models, pictures):
    from edge_runtime.classifier import EdgeClassifier

    model = edge_models["mlp_float32"]
    clf = EdgeClassifier.load(model)
    want = [p.index for p in clf.predict(pictures)]
    proc = _run(["predict", model, *pictures, "--json"])
    assert proc.returncode == 0, proc.stderr
    assert [json.loads(line)["index"] for line in proc.stdout.splitlines()] == want


def test_predict_full_decode_decodes_in_full(edge_models, tmp_path, capsys):
    """`predict --full-decode` answers what the model says of the fully decoded photo, not of
    the photo decoded at the model's size (which differs, a little, on a textured 3 MP JPEG)."""
    from edge_runtime.classifier import EdgeClassifier
    from edge_runtime.image.preprocess import load_and_preprocess

    rng = np.random.default_rng(5)
    y, x = np.mgrid[0:1536, 0:2048]
    texture = 128 + 60 * np.sin(x / 3.1) * np.cos(y / 2.3) + rng.normal(0, 25, (1536, 2048))
    arr = np.dstack([texture, texture[::-1], 255 - texture]).clip(0, 255).astype(np.uint8)
    photo = tmp_path / "photo.jpg"
    Image.fromarray(arr).save(photo, quality=95)
    model = edge_models["cnn_float32"]
    clf = EdgeClassifier.load(model)

    def confidences(pixels) -> list[float]:
        return [round(float(p), 6) for p in clf.predict(pixels)[0].probabilities]

    full = confidences(load_and_preprocess(photo, (32, 32, 3), invert="no", to_size=False))
    to_size = confidences(load_and_preprocess(photo, (32, 32, 3), invert="no"))
    assert full != to_size, "the photo must tell the two decodes apart"
    for flags, want in ((["--full-decode"], full), ([], to_size)):
        assert (
            edge_main(["predict", str(model), str(photo), "--json", "--top-k", "10", *flags]) == 0
        )
        record = json.loads(capsys.readouterr().out)
        got = sorted(record["top_k"], key=lambda e: e["index"])
        assert [e["confidence"] for e in got] == want, flags


def test_bench_json(edge_models, no_tf_env):
    proc = _run(
        ["bench", edge_models["mlp_int8"], "--runs", "20", "--warmup", "2", "--json"],
        env=no_tf_env,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    for key in (
        "load_ms",
        "latency_us",
        "throughput_ips",
        "peak_rss_mb",
        "backend",
        "backend_version",
        "machine",
        "python",
        "runs",
        "warmup",
        "threads",
        "batch",
    ):
        assert key in data
    assert set(data["latency_us"]) == {"p50", "p90", "p99", "mean", "min", "max"}
    assert data["latency_us"]["min"] <= data["latency_us"]["p50"] <= data["latency_us"]["max"]
    assert data["runs"] == 20 and data["peak_rss_mb"] > 0
    # the values, not only the keys: what was asked and what this machine is
    import platform
    from importlib.metadata import version

    assert (data["warmup"], data["threads"], data["batch"]) == (2, None, 1)
    assert data["backend"] == "ai_edge_litert"
    assert data["backend_version"] == version("ai-edge-litert")
    assert data["machine"] == platform.machine()
    assert data["python"] == platform.python_version()
    assert data["numpy"] == version("numpy")
    assert data["model"] == str(edge_models["mlp_int8"])
    assert 0 < data["load_ms"] < 60_000 and 0 < data["peak_rss_mb"] < 4096


def test_bench_batch_in_process(edge_models, capsys):
    argv = ["bench", str(edge_models["cnn_uint8"]), "--runs", "3", "--warmup", "0", "--batch", "4"]
    assert edge_main(argv) == 0
    assert "(batch 4)" in capsys.readouterr().out
    assert edge_main([*argv, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["batch"] == 4 and data["runs"] == 3
    # 4 images per timed call: images/s is 4 / the mean call time
    mean_s = data["latency_us"]["mean"] / 1e6
    assert data["throughput_ips"] == pytest.approx(4 / mean_s, rel=0.01, abs=0.1)


def _huge_png(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (Pillow reads the size before decoding)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory, edge_models):
    d = tmp_path_factory.mktemp("bad")
    data = edge_models["mlp_float32"].read_bytes()
    (d / "empty.tflite").write_bytes(b"")
    (d / "trunc.tflite").write_bytes(data[: len(data) // 2])
    (d / "text.tflite").write_text("hello, not a model\n" * 4)
    (d / "notes.png").write_text("not an image")
    (d / "empty.png").write_bytes(b"")
    _huge_png(d / "huge.png", 100_000, 100_000)
    return d


@pytest.mark.parametrize(
    "which, message",
    [
        ("model:empty.tflite", "empty"),
        ("model:trunc.tflite", "truncated"),
        ("model:text.tflite", "not a TensorFlow Lite model"),
        ("model:missing.tflite", "not found"),
        ("image:notes.png", "not an image"),
        ("image:empty.png", "empty"),
        ("image:missing.png", "not found"),
        ("image:huge.png", "too large"),
    ],
)
def test_bad_input_exit_2_one_line(edge_models, pictures, bad_inputs, which, message):
    kind, name = which.split(":")
    model = bad_inputs / name if kind == "model" else edge_models["mlp_float32"]
    image = bad_inputs / name if kind == "image" else pictures[0]
    proc = _run(["predict", model, image])
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ") and message in lines[0] and "Received:" in lines[0]


def test_bad_backend_and_info_exit_2(edge_models, bad_inputs, capsys):
    assert edge_main(["info", str(edge_models["mlp_int8"]), "--backend", "onnx"]) == 2
    assert edge_main(["info", str(bad_inputs / "trunc.tflite")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("error: ") for line in err)


def test_edgeship_predict_same_output(edge_models, pictures):
    from edgeship.cli import app

    model = edge_models["mlp_int8"]
    runner = CliRunner()
    result = runner.invoke(app, ["predict", str(model), *map(str, pictures), "--json"])
    assert result.exit_code == 0, result.output
    proc = _run(["predict", model, *pictures, "--json"])
    assert result.stdout.strip() == proc.stdout.strip()

    text = runner.invoke(app, ["predict", str(model), str(pictures[0]), "--top-k", "1"])
    assert text.exit_code == 0 and text.stdout.startswith(f"{pictures[0]}: class_")

    bad = runner.invoke(app, ["predict", str(model), str(REPO / "nope.png")])
    assert bad.exit_code == 2
    assert "error: Image file not found" in bad.stderr


@pytest.mark.parametrize(
    "option, message",
    [
        (["--threads", "0"], "num_threads must be an integer >= 1"),
        (["--threads", "-3"], "num_threads must be an integer >= 1"),
        (["--invert", "maybe"], "invert must be one of auto, yes, no"),
    ],
)
def test_bad_threads_and_invert_one_line_exit_2(edge_models, pictures, option, message):
    from edgeship.cli import app

    model = edge_models["mlp_int8"]
    result = CliRunner().invoke(app, ["predict", str(model), str(pictures[0]), *option])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr.strip().splitlines() == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: {message}") and "Received:" in result.stderr
    if option[0] == "--threads":  # argparse's choices already guard --invert here
        proc = _run(["predict", model, pictures[0], *option])
        assert proc.returncode == 2 and proc.stdout == ""
        assert proc.stderr.startswith(f"error: {message}") and proc.stderr.count("\n") == 1


def test_bad_options_raise_edgeship_errors_from_the_library(edge_models):
    from edge_runtime import EdgeRuntimeError, OptionError
    from edge_runtime.classifier import EdgeClassifier

    model = edge_models["mlp_int8"]
    for kwargs in (
        {"num_threads": 0},
        {"num_threads": "2"},
        {"invert": "maybe"},
        {"batch_size": 0},
        {"max_pixels": -1},
    ):
        with pytest.raises(OptionError, match="Received: "):
            EdgeClassifier.load(model, **kwargs)
    clf = EdgeClassifier.load(model, num_threads=1, invert=True)
    assert clf.invert == "yes" and clf.num_threads == 1
    with pytest.raises(EdgeRuntimeError, match="invert must be one of"):
        clf.predict(Image.new("L", (28, 28)), invert="sideways")


@pytest.mark.parametrize("command", ["predict", "info", "edgeship-predict"])
def test_closed_stdout_pipe_exits_quietly(edge_models, pictures, command):
    """`... | head -1`: the reader is gone before we write; no BrokenPipeError traceback."""
    model = str(edge_models["mlp_int8"])
    images = [str(p) for p in pictures] * 50
    if command == "edgeship-predict":
        argv = [
            sys.executable,
            "-c",
            "from edgeship.cli import main; main()",
            "predict",
            model,
            *images,
        ]
    elif command == "predict":
        argv = [sys.executable, "-m", "edge_runtime", "predict", model, *images, "--json"]
    else:
        argv = [sys.executable, "-m", "edge_runtime", "info", model, "--json"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    proc.stdout.close()  # like `head` exiting before the first line arrives
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert stderr == ""


@pytest.mark.parametrize(
    "size, pillow_says", [((10_000, 10_000), None), ((100_000, 100_000), "178956970")]
)
def test_huge_image_one_error_line_no_pillow_warning(edge_models, tmp_path, size, pillow_says):
    """100 MP is past Pillow's warning (~89 MP) and our 40 MP limit; 10 GP past its error.
    Both: one `error:` line, no DecompressionBombWarning, nothing decoded (header-only PNGs)."""
    image = tmp_path / "huge.png"
    _huge_png(image, *size)
    proc = _run(["predict", edge_models["mlp_int8"], image])
    assert proc.returncode == 2 and proc.stdout == ""
    assert "DecompressionBombWarning" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: The image is too large") and "40000000" in lines[0]
    assert f"{size[0]}x{size[1]}" in lines[0] if pillow_says is None else pillow_says in lines[0]


def test_load_image_rejects_a_bomb_from_its_header_without_warning(tmp_path):
    import warnings

    from edge_runtime.errors import ImageError
    from edge_runtime.image.preprocess import load_image

    image = tmp_path / "huge.png"
    _huge_png(image, 10_000, 10_000)
    filters = list(warnings.filters)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (bomb, unclosed file) fails the test
        with pytest.raises(ImageError, match="too large"):
            load_image(image)
        with pytest.raises(ImageError, match="too large"):
            load_image(image.read_bytes())
        small = tmp_path / "small.png"
        Image.new("L", (30, 20)).save(small)
        assert load_image(small).size == (30, 20)
    assert warnings.filters == filters


@pytest.mark.parametrize(
    "args, command, message",
    [
        (["bench", "{model}", "--runs", "abc"], "bench", "argument --runs: invalid int value"),
        (["predict", "{model}"], "predict", "the following arguments are required: images"),
        (
            ["predict", "{model}", "x.png", "--invert", "maybe"],
            "predict",
            "argument --invert: invalid choice",
        ),
        ([], "", "the following arguments are required: command"),
    ],
)
def test_usage_errors_one_line_exit_2(edge_models, args, command, message):
    proc = _run([a.format(model=edge_models["mlp_int8"]) for a in args])
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    prog = " ".join(["python -m edge_runtime", command]).strip()
    assert lines[0].startswith(f"error: {message}")
    assert lines[0].endswith(f". See '{prog} --help'.")


@pytest.mark.parametrize(
    ("module", "args", "fragment"),
    [
        ("edge_runtime", ["doctor", "--root", "{d}/nonexistent"], "--root must name an existing"),
        ("edge_runtime", ["doctor", "--dir", "{d}/nonexistent"], "--dir must name an existing"),
        ("edge_runtime", ["bench", "{model}", "--threads", "0,abc"], "--threads takes counts"),
        (
            "edge_runtime",
            ["predict", "{model}", "x.png", "--labels", "{d}/missing.txt"],
            "Labels file not found",
        ),
        (
            "edge_runtime",
            ["predict", "{model}", "x.png", "--labels", "{d}/empty.txt"],
            "The labels file is empty",
        ),
        (
            "edge_runtime",
            ["info", "{model}", "--labels", "{d}/two.txt"],
            "2 class names for a model with 10 outputs",
        ),
        (
            "edgeship",
            ["predict", "{model}", "x.png", "--labels", "{d}/two.txt"],
            "2 class names for a model with 10 outputs",
        ),
        ("edgeship", ["label", "{d}/not.tflite", "--labels", "{d}/two.txt"], "truncated"),
        ("edgeship", ["label", "{d}/missing.tflite", "--labels", "{d}/two.txt"], "not found"),
        (
            "edgeship",
            ["label", "{model}", "--labels", "{d}/two.txt"],
            "2 class names for a model with 10 outputs",
        ),
        ("edgeship", ["label", "{model}", "--labels", "{d}/empty.txt"], "labels file is empty"),
        (
            "edgeship",
            ["label", "{model}", "--labels", "{d}/ten.txt", "--input-scale", "0"],
            "input_scale must not be 0",
        ),
    ],
)
def test_bad_new_options_one_line_exit_2(edge_models, tmp_path, module, args, fragment):
    """--labels, --threads 1,2,4, doctor's folders and `edgeship label` (issues 9 and 12)."""
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "ten.txt").write_text("".join(f"c{i}\n" for i in range(10)))
    (tmp_path / "not.tflite").write_text("hi\n")
    before = edge_models["mlp_int8"].read_bytes()
    values = {"d": tmp_path, "model": edge_models["mlp_int8"]}
    line = one_error_line(module, [a.format(**values) for a in args])
    assert line.startswith("error: ") and fragment in line, line
    assert edge_models["mlp_int8"].read_bytes() == before  # `label` changed nothing


def test_help_still_prints_full_usage():
    proc = _run(["predict", "--help"])
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.startswith("usage: python -m edge_runtime predict")
    assert "--invert" in proc.stdout and "--top-k" in proc.stdout

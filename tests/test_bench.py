"""`edgeship bench` end to end: a tiny run trained and converted here, real interpreters."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edgeship.cli import app
from tests.support.procs import one_error_line

runner = CliRunner()
LIMIT = 300
MODES = ("float32", "dynamic", "int8")
MODEL_KEYS = {
    "name",
    "format",
    "quantization",
    "size_bytes",
    "accuracy",
    "agreement",
    "latency_us",
    "throughput_ips",
    "load_ms",
    "peak_rss_mb",
    "per_class_accuracy",
    "confusion_matrix",
    "prob_diff_mean",
    "prob_diff_max",
    "latency_method",
    "baseline_rss_mb",
    "model_rss_mb",
}
FAST = ["--runs", "5", "--warmup", "1", "--batch", "16", "--predict-runs", "2"]

pytestmark = pytest.mark.slow


def cli(*args):
    return runner.invoke(app, [str(a) for a in args])


def _device_bench(model, *extra):
    """`python -m edge_runtime bench MODEL --json` (5 runs), as the device runs it."""
    return subprocess.run(
        [sys.executable, "-m", "edge_runtime", "bench", str(model), "--json"]
        + ["--runs", "5", "--warmup", "1", *extra],
        capture_output=True,
        text=True,
        check=True,
    )


def _bench_int8_with_device(run, device, out):
    """`edgeship bench RUN` of the int8 model alone (50 images, fast) with `--device`."""
    return cli(
        "bench", run, "--limit", 50, "--only", "int8", "--no-memory", "--no-plots", *FAST,
        "--device", device, "--out", out,
    )  # fmt: skip


def assert_one_line_error(result, code, *fragments):
    assert result.exit_code == code, result.output
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("error: "), result.stderr
    assert sum(line.startswith("error: ") for line in lines) == 1
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """`edgeship train --limit 500 --epochs 1`, then `edgeship convert` in three modes."""
    run = tmp_path_factory.mktemp("bench") / "run"
    result = cli("train", "--limit", 500, "--epochs", 1, "--out", run)
    assert result.exit_code == 0, result.output
    result = cli("convert", run / "model.keras", "--quantize", ",".join(MODES), "--out", run)
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def bench(tiny_run):
    """One full bench (memory probes and plots included) of the tiny run."""
    out = tiny_run / "bench"
    result = cli(
        "bench",
        tiny_run,
        "--limit",
        LIMIT,
        "--runs",
        30,
        "--warmup",
        3,
        "--batch",
        32,
        "--predict-runs",
        3,
        "--out",
        out,
    )
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text()), result


@pytest.fixture(scope="module")
def test_set():
    from edgeship.train.datasets import load_dataset

    data = load_dataset("fashion-mnist")
    return data.x_test[:LIMIT], data.y_test[:LIMIT]


def test_every_file_and_key(bench):
    out, report, result = bench
    for name in ("report.json", "report.md", "report.csv"):
        assert (out / name).stat().st_size > 0
    assert [m["name"] for m in report["models"]] == ["keras", *MODES]
    for m in report["models"]:
        assert set(m) >= MODEL_KEYS, MODEL_KEYS - set(m)
        assert set(m["latency_us"]) >= {"p50", "p90", "p99", "mean"}
        assert 0 < m["latency_us"]["p50"] <= m["latency_us"]["p99"]
        assert m["size_bytes"] > 0 and m["throughput_ips"] > 0 and m["load_ms"] > 0
        assert m["peak_rss_mb"] > m["baseline_rss_mb"] > 0
        assert np.asarray(m["confusion_matrix"]).sum() == LIMIT
    keras, int8 = report["models"][0], report["models"][-1]
    assert keras["format"] == "keras" and int8["format"] == "tflite"
    assert keras["latency_model_predict_us"]["p50"] > 0
    assert "tf.function" in keras["latency_method"]
    assert int8["quantization"] == "int8"
    # TensorFlow's footprint stays in the Keras probe, not in the TFLite ones.
    assert int8["peak_rss_mb"] < keras["peak_rss_mb"]
    assert {"machine", "cpu", "python", "versions"} <= set(report["host"])
    assert report["dataset"]["name"] == "fashion-mnist" and report["dataset"]["images"] == LIMIT
    assert report["timer"]["median_ns"] > 0
    assert report["failed"] == [] and report["budgets"]["passed"] is True
    assert "int8" in result.stderr and "report:" in result.stderr
    md = (out / "report.md").read_text()
    for plot in report["plots"]:
        assert f"]({plot})" in md
    assert "## Host" in md and "timer overhead" in md
    rows = list(csv.DictReader((out / "report.csv").open()))
    assert [r["name"] for r in rows] == ["keras", *MODES]
    assert float(rows[-1]["accuracy"]) == pytest.approx(int8["accuracy"])


def test_accuracy_and_agreement_match_real_predictions(bench, tiny_run, test_set):
    import keras

    from edge_runtime.classifier import EdgeClassifier

    _, report, _ = bench
    x, y = test_set
    by_name = {m["name"]: m for m in report["models"]}
    model = keras.models.load_model(tiny_run / "model.keras")
    keras_pred = model.predict(x.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)
    assert by_name["keras"]["accuracy"] == pytest.approx((keras_pred == y).mean(), abs=1e-6)
    for mode in MODES:
        clf = EdgeClassifier.load(tiny_run / f"model_{mode}.tflite")
        pred = clf.predict_proba(x).argmax(axis=1)
        assert by_name[mode]["accuracy"] == pytest.approx((pred == y).mean(), abs=1e-6)
        assert by_name[mode]["agreement"] == pytest.approx((pred == keras_pred).mean(), abs=1e-6)
        per_class = [(pred[y == c] == c).mean() for c in range(10)]
        assert by_name[mode]["per_class_accuracy"] == pytest.approx(per_class, abs=1e-6)


def test_flipped_images_counted_listed_and_shown(bench, tiny_run, test_set):
    """Each variant's `flipped`: the images whose top-1 differs from Keras's, recomputed here."""
    import keras

    from edge_runtime.classifier import EdgeClassifier

    out, report, _ = bench
    x, _ = test_set
    model = keras.models.load_model(tiny_run / "model.keras")
    keras_pred = model.predict(x.astype(np.float32) / 255.0, verbose=0).argmax(axis=1)
    by_name = {m["name"]: m for m in report["models"]}
    assert by_name["keras"]["flipped"]["count"] == 0
    md = (out / "report.md").read_text()
    assert "## Flipped images" in md
    for mode in MODES:
        pred = EdgeClassifier.load(tiny_run / f"model_{mode}.tflite").predict_proba(x).argmax(1)
        flipped = by_name[mode]["flipped"]
        assert flipped["indices"] == np.flatnonzero(pred != keras_pred).tolist()
        assert flipped["count"] == round((1 - by_name[mode]["agreement"]) * LIMIT)
        gallery = out / f"flipped_{mode}.png"
        assert gallery.exists() == (flipped["count"] > 0)
        assert f"| {mode} | {flipped['count']} |" in md
    assert by_name["int8"]["flipped"]["count"] > 0  # 1 epoch on 500 images: int8 flips some
    with Image.open(out / "flipped_int8.png") as img:
        assert img.format == "PNG" and img.width >= 400


def test_plots_are_valid_pngs(bench):
    out, report, _ = bench
    expected = {
        "accuracy_vs_latency.png",
        "latency_distributions.png",
        "sizes.png",
        "confusion_keras.png",
        "confusion_int8.png",
        "predictions_int8.png",
        "probabilities_int8.png",
    }
    flips = {
        f"flipped_{m['name']}.png"
        for m in report["models"]
        if m.get("flipped", {}) and m["flipped"]["count"]
    }
    assert set(report["plots"]) == expected | flips
    for name in expected | flips:
        with Image.open(out / name) as img:
            img.verify()
        with Image.open(out / name) as img:
            assert img.format == "PNG" and img.width >= 400 and img.height >= 200


def test_budgets_met_exit_0_and_missed_exit_1(tiny_run, tmp_path):
    common = [
        "bench",
        tiny_run,
        "--limit",
        100,
        "--only",
        "int8",
        "--no-memory",
        "--no-plots",
        *FAST,
    ]
    met = cli(
        *common,
        "--min-accuracy",
        0.0,
        "--max-accuracy-drop",
        1.0,
        "--max-latency-us",
        1e9,
        "--out",
        tmp_path / "met",
    )
    assert met.exit_code == 0, met.output
    report = json.loads((tmp_path / "met" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["keras", "int8"]
    assert len(report["budgets"]["checks"]) == 3 and report["budgets"]["passed"]

    missed = cli(
        *common, "--min-accuracy", 0.999, "--max-latency-us", 0.001, "--out", tmp_path / "missed"
    )
    assert_one_line_error(missed, 1, "budget not met", "int8", "min_accuracy", "max_latency_us")
    report = json.loads((tmp_path / "missed" / "report.json").read_text())
    assert report["budgets"]["passed"] is False  # the report is still written

    # A drop budget of 0: int8 must be at least as accurate as Keras on these 100 images.
    drop = cli(*common, "--max-accuracy-drop", "0", "--out", tmp_path / "drop")
    keras, int8 = json.loads((tmp_path / "drop" / "report.json").read_text())["models"]
    assert drop.exit_code == (1 if int8["accuracy"] < keras["accuracy"] else 0), drop.output


def test_device_results_sit_beside_the_desktop(tiny_run, tmp_path):
    proc = _device_bench(tiny_run / "model_int8.tflite")
    device = tmp_path / "device.json"
    device.write_text(proc.stdout)
    result = _bench_int8_with_device(tiny_run, device, tmp_path / "b")
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    int8 = report["models"][1]
    assert int8["device"]["latency_us"]["p50"] == json.loads(proc.stdout)["latency_us"]["p50"]
    assert "device p50 µs" in (tmp_path / "b" / "report.md").read_text()


def test_corrupt_model_among_good_ones(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(tiny_run / "model.json", run)
    shutil.copy(tiny_run / "model_int8.tflite", run)
    good = (tiny_run / "model_float32.tflite").read_bytes()
    (run / "model_float16.tflite").write_bytes(good[: len(good) // 3])  # truncated
    result = cli("bench", run, "--limit", 50, *FAST, "--no-memory", "--out", run / "bench")
    assert_one_line_error(result, 2, "model_float16.tflite", "could not be measured")
    report = json.loads((run / "bench" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["int8"]
    assert report["models"][0]["agreement"] is None  # no model.keras in this run
    assert [f["name"] for f in report["failed"]] == ["float16"]
    assert (run / "bench" / "predictions_int8.png").is_file()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--limit", "0"], 2, "--limit must be at least 1"),
        (["--min-accuracy", "abc"], 2, "--min-accuracy must be a number"),
        (["--max-latency-us", "fast"], 2, "--max-latency-us must be a number"),
        (["--runs", "1.5"], 2, "--runs must be an integer"),
        (["--min-accuracy", "87"], 2, "fraction in [0, 1]"),
        (["--only", "int4"], 2, "--only names models that are not in the run"),
    ],
)
def test_bad_options_one_line_exit_2(tiny_run, tmp_path, args, code, fragment):
    out = tmp_path / "out"
    result = cli("bench", tiny_run, *args, "--out", out)
    assert_one_line_error(result, code, fragment)
    assert not out.exists()


def test_run_dir_without_models(tmp_path):
    (tmp_path / "notes.txt").write_text("nothing here")
    result = cli("bench", tmp_path, "--out", tmp_path / "bench")
    assert_one_line_error(result, 2, "No models to benchmark", str(tmp_path))
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1  # nothing else
    result = cli("bench", tmp_path / "missing", "--out", tmp_path / "bench")
    assert_one_line_error(result, 2, "does not exist")
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "bench").exists()


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--test-data", "{d}/missing"], "--test-data is not found"),
        (["--test-data", "{d}/empty_dir"], "holds no images in class subfolders"),
        (["--test-data", "{d}/arrays.npz"], "must hold arrays `x` (images) and `y`"),
        (["--test-data", "{d}/text.npz"], "Cannot read the .npz test data"),
        (["--keras", "{d}/missing.keras"], "--keras names no Keras model file"),
        (["--labels", "{d}/two.txt"], "2 class names for a model with 10 outputs"),
        (["--labels", "{d}/empty.txt"], "The labels file is empty"),
        (["--threads", "0"], "--threads must be at least 1"),
        (["--threads", "abc"], "--threads must be an integer"),
    ],
)
def test_bad_new_options_one_line_exit_2(deploy_run, tmp_path, args, fragment):
    """`--test-data`, `--keras`, `--labels` (issue 12) in a real process: exactly one stderr
    line (no progress bar's blank line before it), exit 2, no report folder."""
    (tmp_path / "empty_dir").mkdir()
    np.savez(tmp_path / "arrays.npz", y=np.zeros(3, np.int64))
    (tmp_path / "text.npz").write_text("not a zip\n")
    (tmp_path / "two.txt").write_text("a\nb\n")
    (tmp_path / "empty.txt").write_text("")
    out = tmp_path / "bench"
    argv = ["bench", deploy_run, *(a.format(d=tmp_path) for a in args), "--out", out]
    line = one_error_line("edgeship", argv)
    assert line.startswith("error: ") and fragment in line, line
    assert not out.exists()


def test_bad_device_file_one_line_exit_2(tiny_run, tmp_path):
    device = tmp_path / "device.json"
    device.write_text("{not json")
    result = cli("bench", tiny_run, "--device", device, "--out", tmp_path / "b")
    assert_one_line_error(result, 2, "--device file", str(device))
    assert not (tmp_path / "b").exists()


def test_library_call_reports_progress_and_returns_the_report(tiny_run, tmp_path):
    from edgeship import bench

    seen = []
    options = bench.BenchOptions(
        limit=50,
        runs=3,
        warmup=1,
        batch=8,
        predict_runs=1,
        only=("float32",),
        memory=False,
        plots=False,
    )
    report = bench.run_bench(
        tiny_run,
        tmp_path / "b",
        options,
        progress=lambda text, done, total: seen.append((done, total)),
    )
    assert report == json.loads((tmp_path / "b" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["keras", "float32"]
    assert seen[0][0] == 0 and seen[-1][0] == seen[-1][1] - 1 and len(seen) == seen[-1][1]
    bench.raise_for_outcome(report)  # nothing failed, no budget: no error
    with pytest.raises(bench.BenchError):
        bench.BenchOptions(limit=0)


def test_stale_tflite_is_a_failed_model(tiny_run, tmp_path):
    """A .tflite converted from an earlier model.keras: named, not measured, exit 2."""
    from edge_runtime.metadata.block import embed_metadata, read_metadata

    run = tmp_path / "run"
    run.mkdir()
    for name in ("model.json", "model.keras", "model_int8.tflite"):
        shutil.copy(tiny_run / name, run)
    old = read_metadata(tiny_run / "model_float32.tflite")
    old.update(model="cnn", metrics={"test_accuracy": 0.5, "test_loss": 1.5})  # another training
    stale = embed_metadata((tiny_run / "model_float32.tflite").read_bytes(), old)
    (run / "model_float32.tflite").write_bytes(stale)
    result = cli(
        "bench", run, "--limit", 50, *FAST, "--no-memory", "--no-plots", "--out", run / "bench"
    )
    assert_one_line_error(
        result,
        2,
        "model_float32.tflite",
        "another model.keras",
        f"edgeship convert {run}/model.keras --out {run}",
    )
    report = json.loads((run / "bench" / "report.json").read_text())
    assert [m["name"] for m in report["models"]] == ["keras", "int8"]
    assert [f["name"] for f in report["failed"]] == ["float32"]


def test_device_results_show_target_and_thread_counts(tiny_run, tmp_path):
    """`deploy push --bench` results with `bench --threads 1,2` entries: both shown."""
    proc = _device_bench(tiny_run / "model_int8.tflite", "--threads", "1,2")
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["threads"] for r in runs] == [1, 2]
    device = tmp_path / "device.json"
    device.write_text(json.dumps({"target": "bookworm-arm64", "models": runs}))
    result = _bench_int8_with_device(tiny_run, device, tmp_path / "b")
    assert result.exit_code == 0, result.output
    assert "device results: target bookworm-arm64, threads 1, 2" in result.output
    int8 = json.loads((tmp_path / "b" / "report.json").read_text())["models"][1]
    assert [r["threads"] for r in int8["device"]["by_threads"]] == [1, 2]
    assert [r["p50"] for r in int8["device"]["by_threads"]] == [
        r["latency_us"]["p50"] for r in runs
    ]
    assert "(1/2 threads)" in (tmp_path / "b" / "report.md").read_text()


@pytest.fixture(scope="module")
def keras_labelled(tiny_run, tmp_path_factory):
    """100 test images labelled with Keras's own answers (Keras accuracy 1.0 on them), some of
    which int8 answers otherwise; their Keras probabilities; the .npz that holds them."""
    import keras

    from edge_runtime.classifier import EdgeClassifier
    from edgeship.train.datasets import load_dataset

    x = load_dataset("fashion-mnist").x_test[:2000]
    probs = keras.models.load_model(tiny_run / "model.keras").predict(
        x.astype(np.float32) / 255.0, verbose=0
    )
    answers = probs.argmax(axis=1)
    int8 = EdgeClassifier.load(tiny_run / "model_int8.tflite").predict_proba(x).argmax(axis=1)
    flips = np.flatnonzero(int8 != answers)
    assert len(flips) >= 3, "the tiny int8 model should flip a few of 2000 images"
    pick = np.sort(np.concatenate([flips[:3], np.setdiff1d(np.arange(len(x)), flips[:3])[:97]]))
    npz = tmp_path_factory.mktemp("keras_labelled") / "keras_labelled.npz"
    np.savez(npz, x=x[pick], y=answers[pick])
    return npz, x[pick], probs[pick], int((int8[pick] != answers[pick]).sum())


def test_accuracy_drop_budget_fails_when_int8_is_less_accurate(keras_labelled, tiny_run, tmp_path):
    """Keras is right on every image (they are labelled with its answers) and int8 is not:
    `--max-accuracy-drop 0` must exit 1 naming the budget; a budget above the drop passes."""
    npz, _, _, flipped = keras_labelled
    common = [
        "bench",
        tiny_run,
        "--test-data",
        npz,
        "--only",
        "int8",
        "--no-memory",
        "--no-plots",
        *FAST,
    ]
    drop = flipped / 100
    missed = cli(*common, "--max-accuracy-drop", 0, "--out", tmp_path / "missed")
    assert_one_line_error(missed, 1, "budget not met", "max_accuracy_drop")
    keras, int8 = json.loads((tmp_path / "missed" / "report.json").read_text())["models"]
    assert keras["accuracy"] == 1.0 and int8["accuracy"] == pytest.approx(1 - drop)
    met = cli(*common, "--max-accuracy-drop", drop + 0.005, "--out", tmp_path / "met")
    assert met.exit_code == 0, met.output
    under = cli(*common, "--max-accuracy-drop", drop - 0.005, "--out", tmp_path / "under")
    assert_one_line_error(under, 1, "max_accuracy_drop")


def test_prob_diff_is_the_difference_to_keras_recomputed(keras_labelled, tiny_run, tmp_path):
    """`prob_diff_mean`/`prob_diff_max`: |p_tflite - p_keras| over every image and class,
    recomputed from Keras's `predict` and each model's own probabilities."""
    from edge_runtime.classifier import EdgeClassifier

    npz, x, keras_probs, _ = keras_labelled
    result = cli(
        "bench",
        tiny_run,
        "--test-data",
        npz,
        "--only",
        "float32,int8",
        "--no-memory",
        "--no-plots",
        *FAST,
        "--out",
        tmp_path / "b",
    )
    assert result.exit_code == 0, result.output
    by_name = {
        m["name"]: m for m in json.loads((tmp_path / "b" / "report.json").read_text())["models"]
    }
    for mode in ("float32", "int8"):
        probs = EdgeClassifier.load(tiny_run / f"model_{mode}.tflite").predict_proba(x)
        diff = np.abs(probs.astype(np.float64) - keras_probs.astype(np.float64))
        assert by_name[mode]["prob_diff_mean"] == pytest.approx(diff.mean(), abs=2e-6)
        assert by_name[mode]["prob_diff_max"] == pytest.approx(diff.max(), abs=2e-5)
    assert by_name["int8"]["prob_diff_max"] > 10 * by_name["float32"]["prob_diff_max"]
    size = (tiny_run / "model_int8.tflite").stat().st_size
    assert by_name["int8"]["size_bytes"] == size

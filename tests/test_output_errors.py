"""An output place that cannot be written: one `error:` line and exit 2, never a traceback.

Root ignores permission bits, so the unwritable places here are real ones: a path under a
regular file (fails for everybody) and, where this machine lets us mount, a read-only tmpfs
and a full tmpfs. Each stage must find out before its long work, and leave no temp files.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edge_runtime.errors import EdgeshipError, OutputError
from edge_runtime.files import atomic_write_bytes, check_output_dir
from edgeship.cli import app

runner = CliRunner()


def _mount_tmpfs(directory: Path, options: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(directory)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def read_only_dir(tmp_path):
    """A read-only tmpfs: writes fail with EROFS, for root too."""
    directory = tmp_path / "ro"
    _mount_tmpfs(directory, "size=64k,ro")
    try:
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=False)


@pytest.fixture
def full_dir(tmp_path):
    """A 64 KiB tmpfs filled to the last byte: writes fail with ENOSPC."""
    directory = tmp_path / "full"
    _mount_tmpfs(directory, "size=64k")
    try:
        with open(directory / "filler", "wb", buffering=0) as fh:
            try:
                while True:
                    fh.write(b"\0" * 4096)
            except OSError:
                pass
        yield directory
    finally:
        subprocess.run(["umount", str(directory)], check=False)


@pytest.fixture
def under_a_file(tmp_path) -> Path:
    """`afile/sub`: a folder that cannot exist because its parent is a regular file."""
    (tmp_path / "afile").write_text("not a folder\n")
    return tmp_path / "afile" / "sub"


def assert_output_failure(result, path: Path, reason: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"error: Cannot write {path}"), lines[0]
    assert reason in lines[0] and "Choose another --out or free space" in lines[0], lines[0]
    assert f"Received: path={path}" in lines[0]
    assert "Traceback" not in result.output


def test_output_error_is_an_edgeship_error():
    assert issubclass(OutputError, EdgeshipError) and OutputError.exit_code == 2


def test_atomic_write_under_a_file(under_a_file):
    with pytest.raises(OutputError, match="Not a directory"):
        atomic_write_bytes(under_a_file / "x.bin", b"data")
    with pytest.raises(OutputError, match="Not a directory"):
        check_output_dir(under_a_file)


def test_atomic_write_on_a_read_only_mount(read_only_dir):
    with pytest.raises(OutputError, match="Read-only file system") as caught:
        atomic_write_bytes(read_only_dir / "x.bin", b"data")
    assert str(read_only_dir / "x.bin") in str(caught.value)
    with pytest.raises(OutputError, match="Read-only file system"):
        check_output_dir(read_only_dir / "new", keep=False)
    assert list(read_only_dir.iterdir()) == []


def test_atomic_write_on_a_full_disk_removes_the_temp_file(full_dir):
    with pytest.raises(OutputError, match="No space left on device"):
        atomic_write_bytes(full_dir / "big.bin", b"\1" * 256 * 1024)
    assert sorted(p.name for p in full_dir.iterdir()) == ["filler"]  # no .big.*.tmp.bin left
    with pytest.raises(OutputError, match="No space left on device"):
        check_output_dir(full_dir)
    assert sorted(p.name for p in full_dir.iterdir()) == ["filler"]


def test_check_output_dir_keep_false_leaves_nothing(tmp_path):
    assert check_output_dir(tmp_path / "a" / "b", keep=False) == tmp_path / "a" / "b"
    assert list(tmp_path.iterdir()) == []
    check_output_dir(tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and list((tmp_path / "kept").iterdir()) == []


def test_train_checks_out_before_loading_data(tmp_path, under_a_file):
    # A missing --data-dir would fail the data loading: --out must fail first.
    missing = tmp_path / "no-such-data"
    result = runner.invoke(
        app, ["train", "--out", str(under_a_file), "--data-dir", str(missing), "--limit", "10"]
    )
    assert_output_failure(result, under_a_file, "Not a directory")


def test_train_on_a_full_disk_fails_before_training(tmp_path, full_dir):
    missing = tmp_path / "no-such-data"
    result = runner.invoke(
        app, ["train", "--out", str(full_dir / "run"), "--data-dir", str(missing)]
    )
    # The folder itself fits in a full tmpfs (no data blocks); the probe file does not.
    assert_output_failure(result, full_dir / "run", "No space left on device")


def test_train_on_a_read_only_mount(tmp_path, read_only_dir):
    result = runner.invoke(
        app, ["train", "--out", str(read_only_dir), "--data-dir", str(tmp_path / "none")]
    )
    assert_output_failure(result, read_only_dir, "Read-only file system")


def test_bench_checks_out_before_measuring_and_leaves_nothing(tmp_path, under_a_file):
    run = tmp_path / "run"
    run.mkdir()  # an empty run directory: the measurements would fail, the --out check first
    result = runner.invoke(app, ["bench", str(run), "--out", str(under_a_file)])
    assert_output_failure(result, under_a_file, "Not a directory")
    result = runner.invoke(app, ["bench", str(run)])
    assert result.exit_code == 2 and "No models to benchmark" in result.stderr
    assert list(run.iterdir()) == []  # the check's RUN/bench was removed again


def test_convert_to_an_unwritable_out(tmp_path, under_a_file):
    import keras

    layers = [keras.layers.Flatten(), keras.layers.Dense(2, activation="softmax")]
    model = keras.Sequential([keras.Input((4, 4, 1)), *layers])
    model.save(tmp_path / "m.keras")
    calib = tmp_path / "calib"
    from PIL import Image

    for name in ("a", "b"):
        (calib / name).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (4, 4), 40 * i).save(calib / name / f"{i}.png")
    result = runner.invoke(
        app,
        [
            "convert",
            str(tmp_path / "m.keras"),
            "--out",
            str(under_a_file),
            "--quantize",
            "float32",
            "--calibration-data",
            str(calib),
        ],
    )
    assert_output_failure(result, under_a_file, "Not a directory")


def test_label_on_a_read_only_mount_leaves_the_model(tmp_path, edge_models):
    """`edgeship label` writes in place: a read-only model is one line naming that, unchanged."""
    from tests.support.procs import one_error_line

    folder = tmp_path / "ro"
    _mount_tmpfs(folder, "size=1m")
    try:
        model = folder / "m.tflite"
        model.write_bytes(edge_models["mlp_int8"].read_bytes())
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        labels = tmp_path / "labels.txt"
        labels.write_text("".join(f"c{i}\n" for i in range(10)))
        line = one_error_line("edgeship", ["label", model, "--labels", labels])
        assert line.startswith(f"error: Cannot write {model}: Read-only file system"), line
        assert "changed in place" in line and "--out" not in line
        assert model.read_bytes() == edge_models["mlp_int8"].read_bytes()
        assert [p.name for p in folder.iterdir()] == ["m.tflite"]
    finally:
        subprocess.run(["umount", str(folder)], check=False)

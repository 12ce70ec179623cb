"""`edgeship tune`: real Optuna studies of real (tiny) trainings, measured by the device-side
bench on this machine and on a real sshd on loopback; the chosen model re-measured, bundled
and run in an emulated Pi; resume after Ctrl-C; two workers on SQLite and on a PostgreSQL
server the test starts itself.

Most searches run in this process through the CLI (Typer's runner: TensorFlow is imported
once); a subprocess is used where a process is what is tested (Ctrl-C, a second worker, the
one-line error of a real CLI process)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.support.procs import REPO, one_error_line

pytestmark = pytest.mark.slow

# A space of the cheapest trials (1 epoch of a small MLP on 450 images in batches of 16, no
# calibration):
# width 96 makes models over the size budget (>= 37 KiB dynamic at 20x20, ~150 KiB float16 at
# 28x28), width 8 models under it (< 13 KiB).
SPACE = """families: [mlp]
mlp: {width: [8, 96]}
resolution: [28, 20]
quantization: [float16, dynamic]
epochs: [1, 1]
batch_size: 16
"""
SIZE_KB, LATENCY_MS, RAM_MB, MIN_ACC = 30, 5.0, 1000, 0.15
LIMIT = "500"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def tune_args(out: Path, space: Path, *extra: str) -> list[str]:
    """`edgeship tune`'s arguments in these tests."""
    return [
        "tune",
        "--out",
        str(out),
        "--limit",
        LIMIT,
        "--space",
        str(space),
        "--seed",
        "0",
        *extra,
    ]


def tune_cmd(out: Path, space: Path, *extra: str) -> list[str]:
    """The `edgeship tune` command line (a subprocess: a real CLI process)."""
    return [sys.executable, "-m", "edgeship", *tune_args(out, space, *extra)]


def tune_here(out: Path, space: Path, *extra: str):
    """Run `edgeship tune` in this process (the CLI's own error handling and exit codes)."""
    from edgeship.cli import app

    return CliRunner().invoke(app, tune_args(out, space, *extra))


def _diag(result) -> str:
    return f"{result.output[-3000:]}\n{result.exception!r}"


def rows(out: Path) -> list[dict[str, str]]:
    """TUNE/trials.csv."""
    with (out / "trials.csv").open() as f:
        return list(csv.DictReader(f))


def stored_trials(storage: str, study: str = "edgeship-tune") -> list:
    """The study's trials as Optuna stores them (read back independently of tune's code)."""
    import optuna

    return optuna.load_study(study_name=study, storage=storage).get_trials()


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "space.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def study(tmp_path_factory, space_file) -> Path:
    """One small search (6 trials) with a size budget that excludes the wide models."""
    out = tmp_path_factory.mktemp("tune") / "T"
    result = tune_here(
        out,
        space_file,
        "--trials",
        "6",
        "--max-size-kb",
        str(SIZE_KB),
        "--max-latency-ms",
        str(LATENCY_MS),
        "--max-ram-mb",
        str(RAM_MB),
        "--min-accuracy",
        str(MIN_ACC),
    )
    assert result.exit_code == 0, _diag(result)
    assert "best: trial" in result.stdout
    return out


def test_the_budget_excludes_trials_by_their_measured_figures(study):
    table = rows(study)
    assert len(table) == 6 and {r["state"] for r in table} == {"complete"}
    for r in table:
        fits = (
            float(r["size_kb"]) <= SIZE_KB
            and float(r["p50_us"]) <= LATENCY_MS * 1000
            and float(r["peak_rss_mb"]) <= RAM_MB
            and float(r["accuracy"]) >= MIN_ACC
        )
        assert r["feasible"] == str(fits).lower(), r
        assert float(r["p99_us"]) >= float(r["p50_us"]) > 0
    assert {r["feasible"] for r in table} == {"true", "false"}, table
    assert all("size_kb +" in r["violations"] for r in table if r["width"] == "96")
    assert (study / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (study / "report.md").read_text()
    assert "## Pareto front" in report and "## Chosen" in report


def test_the_chosen_model_remeasured_meets_every_budget(study):
    from edge_runtime import EdgeClassifier
    from edgeship.train import load_dataset

    meta = json.loads((study / "best" / "model.json").read_text())
    tflite = study / "best" / meta["tune"]["model_file"]
    chosen = next(r for r in rows(study) if int(r["trial"]) == meta["tune"]["trial"])
    assert chosen["feasible"] == "true"
    best_val = max(float(r["accuracy"]) for r in rows(study) if r["feasible"] == "true")
    assert float(chosen["accuracy"]) == best_val
    # an independent measurement: a fresh device-side bench process, the file's own size
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime", "bench", str(tflite), "--json"],
        capture_output=True,
        text=True,
        env=_env(),
        check=True,
    )
    bench = json.loads(proc.stdout.strip().splitlines()[-1])
    assert bench["latency_us"]["p50"] <= LATENCY_MS * 1000
    assert bench["peak_rss_mb"] <= RAM_MB
    assert tflite.stat().st_size / 1024 <= SIZE_KB
    assert meta["tune"]["validation_accuracy"] >= MIN_ACC
    # the test accuracy written once after the search is the file's on the test set
    data = load_dataset("fashion-mnist")
    clf = EdgeClassifier.load(tflite, batch_size=1000)
    hits = sum(
        int(
            (
                clf.predict_proba(data.x_test[i : i + 1000]).argmax(1) == data.y_test[i : i + 1000]
            ).sum()
        )
        for i in range(0, 10000, 1000)
    )
    assert meta["tune"]["test_accuracy"] == pytest.approx(hits / 10000, abs=1e-6)
    assert "validation_accuracy" in meta["metrics"] and "test_accuracy" not in meta["metrics"]


@pytest.mark.emulated
def test_best_bundles_and_predicts_in_an_emulated_pi(study, tmp_path):
    from edgeship.deploy.pi.bundle import build_bundle
    from tests.support import EnvironmentUnavailable
    from tests.support.pi import ensure_pi_python, site_from_wheels

    target = "bookworm-arm64"
    try:
        py = ensure_pi_python(target)
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated {target} userland unavailable: {exc}")
    meta = json.loads((study / "best" / "model.json").read_text())
    mode = meta["tune"]["model_file"].removeprefix("model_").removesuffix(".tflite")
    info = build_bundle(
        study / "best", tmp_path / "b.tar.gz", models=[mode], with_wheels=True, targets=target
    )
    with tarfile.open(info.path, "r:gz") as tar:
        tar.extractall(tmp_path / "pi", filter="data")
    root = tmp_path / "pi" / info.top
    wheels = sorted((root / "wheels" / target).glob("*.whl"))
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["models"][0]  # its sample image and the desktop's answer to it
    py = py.with_site(site_from_wheels(wheels))
    proc = py.run(
        ["-m", "edge_runtime", "predict", entry["file"], entry["sample"], "--json"],
        cwd=root,
        extra_paths=[root],
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (answer["index"], answer["label"]) == (entry["index"], entry["label"])
    assert answer["confidence"] == pytest.approx(entry["confidence"], abs=1e-5)


def test_a_bad_space_file_is_one_error_line(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("families: [mlp, transformer]\n")
    # a real CLI process: exit 2, one line on stderr, no traceback
    line = one_error_line("edgeship", ["tune", "--out", tmp_path / "T", "--space", bad])
    assert "families" in line and "transformer" in line
    bad.write_text("families: [mlp\n")
    result = tune_here(tmp_path / "T", bad)
    assert result.exit_code == 2, _diag(result)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and "not valid YAML" in line
    assert not (tmp_path / "T").exists()


def test_a_malformed_device_is_one_error_line(tmp_path, space_file):
    result = tune_here(tmp_path / "T", space_file, "--device", "a b@c")
    assert result.exit_code == 2, _diag(result)
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --device must be local or USER@HOST")
    assert not (tmp_path / "T").exists()


def test_no_feasible_trial_exits_1_with_the_closest_misses(space_file, tmp_path):
    out = tmp_path / "T"
    result = tune_here(out, space_file, "--trials", "1", "--max-size-kb", "0.5")
    assert result.exit_code == 1, _diag(result)
    err = result.stderr.strip().splitlines()[-1]
    assert err.startswith("error: No trial met every budget") and "missed size_kb +" in err
    (row,) = rows(out)  # the outputs are written all the same
    assert row["feasible"] == "false" and float(row["size_kb"]) > 0.5
    assert "## No trial met every budget" in (out / "report.md").read_text()
    assert not (out / "best").exists()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    import platform

    from edgeship.deploy.pi.wheels import download_wheels
    from tests._sshd import Sshd, SshdUnavailable
    from tests.test_deploy_push import _remote_python_version, host_target

    wheels = download_wheels(host_target(), platform.machine(), _remote_python_version())
    env = {"PIP_FIND_LINKS": str(wheels[0].parent), "PIP_NO_INDEX": "1"}
    try:
        server = Sshd(tmp_path_factory.mktemp("sshd"), setenv=env).start()
    except SshdUnavailable as exc:
        pytest.skip(f"no sshd: {exc}")
    yield server
    server.stop()


@pytest.mark.ssh
def test_device_over_ssh_measures_on_the_device(sshd, space_file, tmp_path):
    out, remote = tmp_path / "T", tmp_path / "device" / "tune"
    result = tune_here(
        out,
        space_file,
        "--trials",
        "2",
        "--device",
        f"{sshd.target}:{sshd.port}",
        "--identity",
        str(sshd.client_key),
        "--known-hosts",
        str(sshd.known_hosts),
        "--remote-dir",
        str(remote),
    )
    assert result.exit_code == 0, _diag(result)
    table = rows(out)
    assert len(table) == 2 and all(float(r["p50_us"]) > 0 for r in table)
    # both candidates went up in one upload and were benched by the bundle on the device
    results = json.loads((out / "trials" / "device-bench.json").read_text())
    benched = {Path(m["file"]).name: m["latency_us"]["p50"] for m in results["models"]}
    assert len(benched) == 2 and results["host"].endswith(f":{sshd.port}")
    assert sorted(float(r["p50_us"]) for r in table) == sorted(benched.values())
    assert len(list((remote / "releases").iterdir())) == 1


def test_an_unreachable_device_fails_trials_then_stops(space_file, tmp_path):
    from tests._sshd import free_port

    out = tmp_path / "T"
    result = tune_here(
        out,
        space_file,
        "--trials",
        "3",
        "--device",
        f"nobody@127.0.0.1:{free_port()}",
        "--per-upload",
        "1",
        "--max-failures",
        "1",
    )
    assert result.exit_code == 1, _diag(result)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Stopped: the device failed 1 trials in a row")
    trials = stored_trials(f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in trials] == ["FAIL"]  # stopped: no second trial of the 3
    assert trials[0].user_attrs["error"].startswith("device: ")
    assert [r["error"][:8] for r in rows(out)] == ["device: "]


def _wait_for(storage: str, proc: subprocess.Popen, ok, timeout: float) -> None:
    """Poll the study until ok(trials) holds; the process must still run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            trials = stored_trials(storage)
        except Exception:  # the study is not created yet
            trials = []
        if ok(trials):
            return
        time.sleep(0.2)
    raise AssertionError("the worker started no trial in time")


def _assert_one_study(trials: list, n: int) -> set[str]:
    """Every trial recorded once and complete; return the workers that ran them."""
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(n)), numbers
    assert {t.state.name for t in trials} == {"COMPLETE"}
    return {t.user_attrs["worker"] for t in trials}


def test_two_sqlite_workers_then_ctrl_c_and_the_same_command_resumes(space_file, tmp_path):
    """Worker A (a CLI process, --trials 3) and worker B (this process, --trials 1) share
    A's SQLite study at once; A gets Ctrl-C in the middle of its first trial, finishes it,
    exits 130; A's same command then resumes the study to 3 trials."""
    from edgeship.tune import TuneOptions, run_search

    out = tmp_path / "T"
    out.mkdir()  # worker B may open A's study.db before A has started
    storage = f"sqlite:///{(out / 'study.db').resolve()}"
    cmd = tune_cmd(out, space_file, "--trials", "3")
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=REPO
    )
    errors: list[BaseException] = []

    def worker_b() -> None:
        try:
            run_search(
                TuneOptions(
                    out=tmp_path / "B",
                    trials=1,
                    storage=storage,
                    seed=1,
                    limit=int(LIMIT),
                    space_file=space_file,
                )
            )
        except BaseException as err:  # reported by the test's thread
            errors.append(err)

    b = threading.Thread(target=worker_b)
    b.start()
    try:
        a_pid = f":{proc.pid}"
        _wait_for(
            storage,
            proc,
            lambda ts: any(t.user_attrs.get("worker", "").endswith(a_pid) for t in ts),
            timeout=300,
        )
        proc.send_signal(signal.SIGINT)  # A's trial is running: it finishes, nothing more
        _, err = proc.communicate(timeout=300)
    finally:
        b.join(timeout=300)
        if proc.poll() is None:
            proc.kill()
    assert not errors, errors
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command to resume" in err and "Traceback" not in err
    first = stored_trials(storage)
    workers = _assert_one_study(first, len(first))
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    assert len(first) == 2  # B's one trial and the one A was running at Ctrl-C
    again = tune_here(out, space_file, "--trials", "3")  # A's same command, once more
    assert again.exit_code == 0, _diag(again)
    after = stored_trials(storage)
    _assert_one_study(after, 3)
    assert [(t.params, t.value) for t in after[: len(first)]] == [
        (t.params, t.value) for t in first
    ]
    assert len(rows(out)) == 3


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server (Debian's), run by an unprivileged user in a temp folder."""
    from tests._sshd import free_port

    bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not bins:
        pytest.skip("no PostgreSQL: apt-get install postgresql")
    bindir = bins[-1].parent
    # a folder of its own under /tmp (pytest's are private to root), owned by the server's user
    root = Path(tempfile.mkdtemp(prefix="edgeship-pg-"))
    data = root / "data"
    user = "nobody"
    as_user = ["runuser", "-u", user, "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(root, user)
    port = free_port()

    def pg(*args: str) -> subprocess.CompletedProcess:
        proc = subprocess.run([*as_user, *args], capture_output=True, text=True, cwd=root)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc

    pg(str(bindir / "initdb"), "-D", str(data), "-U", "tune", "-A", "trust", "--no-sync")
    pg(
        str(bindir / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(root / "log"),
        "-o",
        f"-p {port} -k {root} -h 127.0.0.1",
        "-w",
        "start",
    )
    yield f"postgresql://tune@127.0.0.1:{port}/postgres"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
    shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(space_file, tmp_path, postgres):
    """A CLI process (--trials 2) and this process (--trials 1) on one PostgreSQL study."""
    other = subprocess.Popen(
        tune_cmd(
            tmp_path / "w2", space_file, "--trials", "2", "--seed", "2", "--storage", postgres
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=REPO,
    )
    try:
        here = tune_here(
            tmp_path / "w1", space_file, "--trials", "1", "--seed", "1", "--storage", postgres
        )
        _, err = other.communicate(timeout=300)
    finally:
        if other.poll() is None:
            other.kill()
    assert here.exit_code == 0, _diag(here)
    assert other.returncode == 0, err[-2000:]
    trials = stored_trials("postgresql+psycopg://" + postgres.removeprefix("postgresql://"))
    workers = _assert_one_study(trials, 2)
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    # each worker wrote its own outputs from the whole study
    assert len(rows(tmp_path / "w2")) == 2

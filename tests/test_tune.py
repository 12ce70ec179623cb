"""`edgeship tune`: real Optuna studies of real (tiny) trainings, measured by the device-side
bench on this machine and on a real sshd on loopback; the chosen model re-measured, bundled
and run in an emulated Pi; resume after Ctrl-C; two workers on SQLite and on a PostgreSQL
server the test starts itself."""

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
import time
from pathlib import Path

import pytest

from tests.support.procs import REPO, one_error_line

pytestmark = pytest.mark.slow

# A space of cheap trials (2 epochs of a small MLP on 900 images): width 96 makes models over
# the size budget (~76 KiB int8, ~150 KiB float16), width 8 models under it (< 15 KiB).
SPACE = """families: [mlp]
mlp: {width: [8, 96]}
resolution: [28, 20]
quantization: [int8, float16]
epochs: [2, 2]
"""
SIZE_KB, LATENCY_MS, RAM_MB, MIN_ACC = 40, 5.0, 1000, 0.15
LIMIT = "1000"


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}


def tune_cmd(out: Path, space: Path, *extra: str) -> list[str]:
    """The `edgeship tune` command line of these tests (a subprocess: a real CLI process)."""
    return [sys.executable, "-m", "edgeship", "tune", "--out", str(out), "--limit", LIMIT,
            "--space", str(space), "--seed", "0", *extra]


def run_tune(out: Path, space: Path, *extra: str, timeout: float = 900):
    """Run `edgeship tune` to its end."""
    return subprocess.run(tune_cmd(out, space, *extra), capture_output=True, text=True,
                          env=_env(), cwd=REPO, timeout=timeout)


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
    proc = run_tune(out, space_file, "--trials", "6", "--max-size-kb", str(SIZE_KB),
                    "--max-latency-ms", str(LATENCY_MS), "--max-ram-mb", str(RAM_MB),
                    "--min-accuracy", str(MIN_ACC))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "best: trial" in proc.stdout
    return out


def test_the_budget_excludes_trials_by_their_measured_figures(study):
    table = rows(study)
    assert len(table) == 6 and {r["state"] for r in table} == {"complete"}
    for r in table:
        fits = (float(r["size_kb"]) <= SIZE_KB and float(r["p50_us"]) <= LATENCY_MS * 1000
                and float(r["peak_rss_mb"]) <= RAM_MB and float(r["accuracy"]) >= MIN_ACC)
        assert r["feasible"] == str(fits).lower(), r
        assert float(r["p99_us"]) >= float(r["p50_us"]) > 0
    assert {r["feasible"] for r in table} == {"true", "false"}, table
    assert all("size_kb +" in r["violations"] for r in table if r["width"] == "96")
    assert (study / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (study / "report.md").read_text()
    assert "## Pareto front" in report and "## Chosen" in report


def test_the_chosen_model_remeasured_meets_every_budget(study):
    from edge_runtime import EdgeClassifier
    from train import load_dataset

    meta = json.loads((study / "best" / "model.json").read_text())
    tflite = study / "best" / meta["tune"]["model_file"]
    chosen = next(r for r in rows(study) if int(r["trial"]) == meta["tune"]["trial"])
    assert chosen["feasible"] == "true"
    best_val = max(float(r["accuracy"]) for r in rows(study) if r["feasible"] == "true")
    assert float(chosen["accuracy"]) == best_val
    # an independent measurement: a fresh device-side bench process, the file's own size
    proc = subprocess.run([sys.executable, "-m", "edge_runtime", "bench", str(tflite), "--json"],
                          capture_output=True, text=True, env=_env(), check=True)
    bench = json.loads(proc.stdout.strip().splitlines()[-1])
    assert bench["latency_us"]["p50"] <= LATENCY_MS * 1000
    assert bench["peak_rss_mb"] <= RAM_MB
    assert tflite.stat().st_size / 1024 <= SIZE_KB
    assert meta["tune"]["validation_accuracy"] >= MIN_ACC
    # the test accuracy written once after the search is the file's on the test set
    data = load_dataset("fashion-mnist")
    clf = EdgeClassifier.load(tflite, batch_size=1000)
    hits = sum(int((clf.predict_proba(data.x_test[i : i + 1000]).argmax(1)
                    == data.y_test[i : i + 1000]).sum()) for i in range(0, 10000, 1000))
    assert meta["tune"]["test_accuracy"] == pytest.approx(hits / 10000, abs=1e-6)
    assert "validation_accuracy" in meta["metrics"] and "test_accuracy" not in meta["metrics"]


@pytest.mark.emulated
def test_best_bundles_and_predicts_in_an_emulated_pi(study, tmp_path):
    from deploy.bundle import build_bundle
    from tests.support import EnvironmentUnavailable
    from tests.support.pi import ensure_pi_python, site_from_wheels

    target = "bookworm-arm64"
    try:
        py = ensure_pi_python(target)
    except EnvironmentUnavailable as exc:
        pytest.skip(f"emulated {target} userland unavailable: {exc}")
    meta = json.loads((study / "best" / "model.json").read_text())
    mode = meta["tune"]["model_file"].removeprefix("model_").removesuffix(".tflite")
    info = build_bundle(study / "best", tmp_path / "b.tar.gz", models=[mode],
                        with_wheels=True, targets=target)
    with tarfile.open(info.path, "r:gz") as tar:
        tar.extractall(tmp_path / "pi", filter="data")
    root = tmp_path / "pi" / info.top
    wheels = sorted((root / "wheels" / target).glob("*.whl"))
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["models"][0]  # its sample image and the desktop's answer to it
    py = py.with_site(site_from_wheels(wheels))
    proc = py.run(["-m", "edge_runtime", "predict", entry["file"], entry["sample"], "--json"],
                  cwd=root, extra_paths=[root], timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    answer = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (answer["index"], answer["label"]) == (entry["index"], entry["label"])
    assert answer["confidence"] == pytest.approx(entry["confidence"], abs=1e-5)


def test_a_bad_space_file_is_one_error_line(tmp_path):
    bad = tmp_path / "space.yaml"
    bad.write_text("families: [mlp, transformer]\n")
    line = one_error_line("edgeship", ["tune", "--out", tmp_path / "T", "--space", bad])
    assert "families" in line and "transformer" in line
    bad.write_text("families: [mlp\n")
    line = one_error_line("edgeship", ["tune", "--out", tmp_path / "T", "--space", bad])
    assert "not valid YAML" in line
    assert not (tmp_path / "T").exists()


def test_no_feasible_trial_exits_1_with_the_closest_misses(space_file, tmp_path):
    out = tmp_path / "T"
    proc = run_tune(out, space_file, "--trials", "1", "--max-size-kb", "0.5")
    assert proc.returncode == 1, proc.stderr[-2000:]
    err = proc.stderr.strip().splitlines()[-1]
    assert err.startswith("error: No trial met every budget") and "missed size_kb +" in err
    (row,) = rows(out)  # the outputs are written all the same
    assert row["feasible"] == "false" and float(row["size_kb"]) > 0.5
    assert "## No trial met every budget" in (out / "report.md").read_text()
    assert not (out / "best").exists()


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    import platform

    from deploy.wheels import download_wheels
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
    proc = run_tune(out, space_file, "--trials", "2", "--device", f"{sshd.target}:{sshd.port}",
                    "--identity", str(sshd.client_key), "--known-hosts", str(sshd.known_hosts),
                    "--remote-dir", str(remote), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
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
    proc = run_tune(out, space_file, "--trials", "4", "--device", f"nobody@127.0.0.1:{free_port()}",
                    "--per-upload", "1", "--max-failures", "2")
    assert proc.returncode == 1, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: Stopped: the device failed 2 trials in a row")
    trials = stored_trials(f"sqlite:///{out / 'study.db'}")
    assert [t.state.name for t in trials] == ["FAIL", "FAIL"]
    assert all(t.user_attrs["error"].startswith("device: ") for t in trials)
    assert [r["error"][:8] for r in rows(out)] == ["device: "] * 2


def test_a_malformed_device_is_one_error_line(tmp_path):
    line = one_error_line("edgeship", ["tune", "--out", tmp_path / "T", "--device", "a b@c"])
    assert "--device must be local or USER@HOST" in line and not (tmp_path / "T").exists()


def _wait_for_complete(storage: str, n: int, proc: subprocess.Popen, timeout: float) -> None:
    from optuna.trial import TrialState

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        try:
            done = [t for t in stored_trials(storage) if t.state == TrialState.COMPLETE]
        except Exception:  # the study is not created yet
            done = []
        if len(done) >= n:
            return
        time.sleep(0.5)
    raise AssertionError("no trial completed in time")


def test_ctrl_c_stops_after_the_trial_and_the_same_command_resumes(space_file, tmp_path):
    out = tmp_path / "T"
    storage = f"sqlite:///{out / 'study.db'}"
    cmd = tune_cmd(out, space_file, "--trials", "3")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=REPO)
    _wait_for_complete(storage, 1, proc, timeout=240)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err[-2000:]
    assert "run the same command to resume" in err and "Traceback" not in err
    first = stored_trials(storage)
    # the trial running at Ctrl-C finished: one or two, never three, all complete
    assert 1 <= len(first) < 3 and {t.state.name for t in first} == {"COMPLETE"}
    again = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=REPO,
                           timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    after = stored_trials(storage)
    assert len(after) == 3 and {t.state.name for t in after} == {"COMPLETE"}
    assert [(t.params, t.value) for t in after[: len(first)]] == [
        (t.params, t.value) for t in first
    ]


def _two_workers(space_file: Path, tmp_path: Path, storage: str | None) -> list:
    extra = ["--storage", storage] if storage else []
    procs = [subprocess.Popen(tune_cmd(tmp_path / f"w{i}" if storage else tmp_path / "T",
                                       space_file, "--trials", "4", "--seed", str(i), *extra),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=_env(), cwd=REPO) for i in (1, 2)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-2000:]
    trials = stored_trials(storage or f"sqlite:///{tmp_path / 'T' / 'study.db'}")
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers)) and 4 <= len(numbers) <= 5
    assert {t.state.name for t in trials} == {"COMPLETE"}
    workers = {t.user_attrs["worker"] for t in trials}
    assert len(workers) == 2, workers  # both processes ran trials of the one study
    return trials


def test_two_workers_share_one_sqlite_study(space_file, tmp_path):
    _two_workers(space_file, tmp_path, None)


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
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "log"),
       "-o", f"-p {port} -k {root} -h 127.0.0.1", "-w", "start")
    yield f"postgresql+psycopg://tune@127.0.0.1:{port}/postgres"
    pg(str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop")
    shutil.rmtree(root, ignore_errors=True)


def test_two_workers_share_one_postgresql_study(space_file, tmp_path, postgres):
    trials = _two_workers(space_file, tmp_path, postgres)
    # each worker wrote its own outputs from the whole study
    assert len(rows(tmp_path / "w1")) >= len(trials) - 1

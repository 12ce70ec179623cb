"""The systemd user unit of `deploy push --serve`: `systemd-analyze verify` accepts it, and its
ExecStart line, run as written in its WorkingDirectory, serves /healthz and stops with SIGTERM.

This machine runs no systemd: the unit is checked by systemd's own parser, and its command is
run by hand, on a release laid out as on the device (the unpacked bundle, `venv` a link).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import urllib.request
from pathlib import Path

import pytest

from edgeship.deploy.errors import DeployError
from edgeship.deploy.pi.service import ServeSettings, unit_text
from tests._sshd import free_port


def _release(bundle: Path, root: Path) -> Path:
    """`root/releases/r1` (the unpacked bundle, `venv` -> this Python's prefix), current."""
    releases = root / "releases"
    releases.mkdir(parents=True)
    with tarfile.open(bundle, "r:gz") as tar:
        tar.extractall(releases / "unpacked", filter="data")
    (top,) = list((releases / "unpacked").iterdir())
    release = top.rename(releases / "r1")
    (release / "venv").symlink_to(sys.prefix)
    (root / "current").symlink_to("releases/r1")
    return release


def _models(release: Path) -> list[str]:
    manifest = json.loads((release / "manifest.json").read_text())
    return [m["file"] for m in manifest["models"]]


def _verify(unit: Path, runtime: Path) -> subprocess.CompletedProcess:
    exe = shutil.which("systemd-analyze")
    if exe is None:
        pytest.skip("no systemd-analyze: apt-get install systemd")
    return subprocess.run(
        [exe, "--user", "verify", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime)},
        cwd=unit.parent,
    )


def _directive(text: str, key: str) -> str:
    (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{key}=")]
    return line.split("=", 1)[1]


@pytest.mark.parametrize("token", [False, True])
def test_unit_verifies_and_its_execstart_serves_healthz(deploy_bundle, tmp_path, token):
    root = tmp_path / "edgeship"
    release = _release(deploy_bundle, root)
    settings = ServeSettings(port=free_port(), token=token)
    if token:  # as `push --serve-token-file` leaves it: the unit names the file, not the token
        (root / "serve.token").write_text("unit-s3cret\n")
    text = unit_text(str(root), _models(release), settings)
    assert "unit-s3cret" not in text
    unit = tmp_path / "edgeship.service"
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = _verify(unit, runtime)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr
    assert _directive(text, "KillSignal") == "SIGTERM"
    assert _directive(text, "WantedBy") == "default.target"

    argv = shlex.split(_directive(text, "ExecStart"))
    workdir = _directive(text, "WorkingDirectory")
    env = {"PATH": os.environ["PATH"], "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        argv, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        health, deadline = None, time.monotonic() + 60
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{settings.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    health = json.load(r)
            except OSError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else ""
        assert health["status"] == "ok"
        assert health["models"] == [Path(m).stem for m in _models(release)]
        assert Path(health["workdir"]).name == "r1"  # the release `current` pointed at
        assert health["token_required"] is token
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0  # systemd's stop (KillSignal=SIGTERM) is a clean exit


def test_verify_refuses_a_unit_whose_command_is_missing(deploy_bundle, tmp_path):
    """The check has teeth: the same unit without the release's venv is refused."""
    root = tmp_path / "edgeship"
    release = _release(deploy_bundle, root)
    (release / "venv").unlink()
    unit = tmp_path / "edgeship.service"
    unit.write_text(unit_text(str(root), _models(release), ServeSettings()))
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = _verify(unit, runtime)
    assert verified.returncode != 0 and "not executable" in verified.stderr


def test_settings_are_checked():
    with pytest.raises(DeployError, match="--serve-port"):
        ServeSettings(port=0)
    with pytest.raises(DeployError, match="--serve-host"):
        ServeSettings(host="1.2.3.4; rm -rf /")
    assert ServeSettings(host="0.0.0.0").check_host == "127.0.0.1"


# --- a model named with `$`, `\`, quotes, `%` and spaces (systemd's syntax, not sh's) --------

ODD_NAME = 'it\'s $HOME ${USER} \\n "50%" x.tflite'


def _systemd_words(line: str) -> list[str]:
    """ExecStart's words as systemd.service(5) reads them (written here from the man page, not
    from edgeship/deploy/pi/service.py): blanks separate words; "..." and '...' group; a backslash
    escapes the next character (`\\\\`, `\\"`, `\\'`); `$$` is a literal `$` and `%%` a literal `%`.
    A lone `$` (variable expansion) or `%` (specifier) means systemd would rewrite the word:
    refused, since the service would not run what the unit says."""
    words, word, quote, i, started = [], "", None, 0, False
    while i < len(line):
        c = line[i]
        if c in "$%":
            assert line[i + 1 : i + 2] == c, f"systemd expands {line[i : i + 8]!r}: {line!r}"
            word, i, started = word + c, i + 2, True
            continue
        if c == "\\":
            nxt = line[i + 1]
            assert nxt in "\\\"' ", f"an escape systemd reads otherwise: {line[i : i + 2]!r}"
            word, i, started = word + nxt, i + 2, True
            continue
        if quote:
            if c == quote:
                quote = None
            else:
                word += c
        elif c in "\"'":
            quote, started = c, True
        elif c.isspace():
            if started:
                words.append(word)
            word, started = "", False
        else:
            word, started = word + c, True
        i += 1
    assert quote is None, f"unclosed quote: {line!r}"
    if started:
        words.append(word)
    return words


def test_systemd_words_parser_reads_the_man_pages_examples():
    """The parser above, on systemd.service(5)'s own examples and on what it must refuse."""
    assert _systemd_words('/bin/echo "one" two "three four"') == [
        "/bin/echo",
        "one",
        "two",
        "three four",
    ]
    assert _systemd_words(r'"a\"b" c\\d $$X 100%%') == ['a"b', "c\\d", "$X", "100%"]
    for expanded in ("/bin/echo $HOME", "/bin/echo ${USER}", "/bin/echo %h"):
        with pytest.raises(AssertionError, match="systemd expands"):
            _systemd_words(expanded)


def test_a_model_named_with_dollar_backslash_and_space_runs_as_written(deploy_run, tmp_path):
    """The unit for `it's $HOME ${USER} \\n "50%" x.tflite`: verified by systemd, and its
    ExecStart, read by systemd's rules, is the exact argv, which serves that model."""
    from edgeship.deploy.pi.bundle import build_bundle

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(deploy_run / "model_int8.tflite", run / ODD_NAME)
    bundle = build_bundle(run, tmp_path / "odd.tar.gz", models=[ODD_NAME]).path
    root = tmp_path / "edgeship"
    release = _release(bundle, root)
    assert _models(release) == [f"models/{ODD_NAME}"]
    settings = ServeSettings(port=free_port())
    text = unit_text(str(root), _models(release), settings)
    unit = tmp_path / "edgeship.service"
    unit.write_text(text)
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700)
    verified = _verify(unit, runtime)
    assert verified.returncode == 0 and not verified.stderr.strip(), verified.stderr

    argv = _systemd_words(_directive(text, "ExecStart"))
    workdir = _directive(text, "WorkingDirectory")
    assert argv[:4] == [f"{root}/current/venv/bin/python", "-m", "edge_runtime", "serve"]
    assert argv[4] == f"models/{ODD_NAME}"
    proc = subprocess.Popen(
        argv,
        cwd=workdir,
        env={"PATH": os.environ["PATH"]},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        health, deadline = None, time.monotonic() + 60
        while health is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{settings.port}/healthz"
                with urllib.request.urlopen(url, timeout=2) as r:
                    health = json.load(r)
            except OSError:
                time.sleep(0.1)
        assert health is not None, proc.stdout.read().decode() if proc.poll() is not None else ""
        assert health["models"] == [Path(ODD_NAME).stem]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


def test_a_model_name_with_a_control_character_is_refused_at_bundle_time(deploy_run, tmp_path):
    from typer.testing import CliRunner

    from edgeship.cli import app

    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(deploy_run / "model_int8.tflite", run / "two\nlines.tflite")
    out = tmp_path / "b.tar.gz"
    result = CliRunner().invoke(
        app, ["deploy", "bundle", str(run), "--out", str(out), "--models", "two\nlines.tflite"]
    )
    assert result.exit_code == 2, result.output
    errors = [ln for ln in result.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "control character" in errors[0], result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("remote_dir", "model", "what"),
    [
        ("/home/pi/edgeship", "models/a\x1bb.tflite", "An argument"),
        ("/home/pi/edge\tship", "models/a.tflite", "The remote folder"),
    ],
)
def test_the_device_side_unit_refuses_a_control_character(remote_dir, model, what):
    """The unit release.py writes on the device (device_service.py, which
    edgeship/deploy/pi/service.py loads): a control character in a word or the folder is refused,
    never written."""
    with pytest.raises(ValueError, match=f"{what}.*control character"):
        unit_text(remote_dir, [model], ServeSettings())
